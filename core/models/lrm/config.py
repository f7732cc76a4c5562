"""Configuration of OpenLRM v1.1 (single image -> triplane NeRF).

``LRMConfig()`` is the published ``zxhezexin/openlrm-mix-base-1.1`` model; :func:`preset` gives
``small`` / ``base`` / ``large``. The model keys are the checkpoints' ``config.json`` keys
(``camera_embed_dim``, ``transformer_dim``, ``encoder_model_name``...); the inference keys are the
authors' inference configuration (``source_size``, ``render_size``, ``mesh_size``/``grid_size``,
``mesh_thres``...). The conformance fixture's ``config`` metadata is accepted as is
(:meth:`LRMConfig.from_dict`).

The encoder's name only fills in what is not given: ``dinov2_vit{s,b,l}14[_reg]`` implies width,
depth, heads, patch and registers; any size given explicitly wins, and a name outside that table
(``dinov2_tiny14_reg_h``) is fine once the sizes it cannot imply are given.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

# DINOv2 ViT backbones: size letter of the name -> (embed_dim, depth, heads)
_DINOV2_ARCH = {
    "s": (384, 12, 6),
    "b": (768, 12, 12),
    "l": (1024, 24, 16),
}
_ENCODER_SIZES = ("encoder_feat_dim", "encoder_depth", "encoder_heads", "encoder_patch_size",
                  "encoder_num_registers")


def encoder_sizes_from_name(name: str) -> dict:
    """The encoder sizes a DINOv2 model name implies (only those it does imply).

    ``dinov2_vitb14_reg`` -> width 768, depth 12, heads 12, patch 14, 4 registers;
    ``dinov2_tiny14_reg_h`` -> patch 14, 4 registers (no width/depth/heads: ``tiny`` is not a
    published size). Registers: 4 when an underscore-separated part of the name is ``reg``, else 0.
    """
    parts = name.lower().split("_")
    sizes = {"encoder_num_registers": 4 if "reg" in parts[1:] else 0}
    body = parts[1] if len(parts) > 1 and parts[0] == "dinov2" else parts[0]
    match = re.fullmatch(r"(?:vit)?([a-z]+?)(\d+)", body)
    if match is not None:
        size, patch = match.groups()
        sizes["encoder_patch_size"] = int(patch)
        if size in _DINOV2_ARCH:
            sizes.update(zip(("encoder_feat_dim", "encoder_depth", "encoder_heads"), _DINOV2_ARCH[size]))
    return sizes


@dataclass
class LRMConfig:
    """OpenLRM v1.1 configuration (defaults: openlrm-mix-base-1.1).

    Model (checkpoint ``config.json`` keys):
        camera_embed_dim: width of the camera embedding (Linear-SiLU-Linear of 16 numbers).
        rendering_samples_per_ray: coarse + importance samples per ray (half each; >= 8).
        transformer_dim / transformer_layers / transformer_heads: triplane transformer.
        triplane_low_res: side of each plane's token grid (3·low_res² learned query tokens).
        triplane_high_res: recorded only; the planes are ``2·triplane_low_res`` after upsampling.
        triplane_dim: channels of each upsampled plane.
        encoder_type: ``dinov2`` (the only v1.1 encoder).
        encoder_model_name: ``dinov2_vit{s,b,l}14_reg`` or any other name (the fixture's
            ``dinov2_tiny14_reg``); it fills in the encoder sizes left None
            (:func:`encoder_sizes_from_name`) and never overrides a given one.
        encoder_feat_dim: encoder width (the cross-attention key/value width); None = from the name.
        encoder_freeze: training flag of the authors (unused at inference).
        encoder_depth / encoder_heads: blocks and heads of the encoder; None = from the name.
        encoder_img_size: image size the encoder's position embedding was made for (518 =
            37·14, i.e. 1 + 37² entries), interpolated to the input's patch grid.
        encoder_num_registers: register tokens (4 for ``*_reg``; None = from the name).
        encoder_patch_size: ViT patch side; None = from the name (14 for ``dinov2_vit*14*``).

    Inference:
        source_size: side the input picture is resized to (pixels).
        source_cam_dist: distance of the canonical source camera to the origin.
        render_size: side of rendered views (pixels).
        render_views: number of orbit views of the authors' video.
        grid_size: marching-cubes grid side (the authors' ``mesh_size``, 384).
        mesh_thres: iso-level on the activated density.

    Fixture-only keys (recorded settings of the conformance fixture, unused by the model):
        image_hw, density_quantile, density_std, rgb_std, render_orbit_views.
    """

    camera_embed_dim: int = 1024
    rendering_samples_per_ray: int = 96
    transformer_dim: int = 768
    transformer_layers: int = 12
    transformer_heads: int = 12
    triplane_low_res: int = 32
    triplane_high_res: int = 64
    triplane_dim: int = 48
    encoder_type: str = "dinov2"
    encoder_model_name: str = "dinov2_vitb14_reg"
    encoder_feat_dim: int | None = None
    encoder_freeze: bool = False
    encoder_depth: int | None = None
    encoder_heads: int | None = None
    encoder_img_size: int = 518
    encoder_num_registers: int | None = None
    encoder_patch_size: int | None = None

    source_size: int = 336
    source_cam_dist: float = 2.0
    render_size: int = 288
    render_views: int = 160
    grid_size: int = 384
    mesh_thres: float = 3.0

    image_hw: list | None = None
    density_quantile: float | None = None
    density_std: float | None = None
    rgb_std: float | None = None
    render_orbit_views: int | None = None

    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.encoder_type.lower() != "dinov2":
            raise ValueError(f"OpenLRM v1.1 uses a dinov2 encoder, not {self.encoder_type!r}")
        implied = encoder_sizes_from_name(self.encoder_model_name)
        for key in _ENCODER_SIZES:
            if getattr(self, key) is None:
                setattr(self, key, implied.get(key))
        missing = [key for key in _ENCODER_SIZES if getattr(self, key) is None]
        if missing:
            raise ValueError(f"encoder_model_name {self.encoder_model_name!r} does not imply "
                             f"{', '.join(missing)}: give them")
        if self.transformer_dim % self.transformer_heads:
            raise ValueError("transformer_dim must be a multiple of transformer_heads")
        if self.encoder_feat_dim % self.encoder_heads:
            raise ValueError("encoder_feat_dim must be a multiple of encoder_heads")
        if self.rendering_samples_per_ray < 8 or self.rendering_samples_per_ray % 2:
            # half coarse, half importance; the importance pdf weighs the Dc - 3 inner pooled
            # coarse intervals, so Dc >= 4
            raise ValueError("rendering_samples_per_ray must be an even number >= 8 "
                             "(at least 4 coarse samples)")

    # ------------------------------------------------------------------ derived
    @property
    def depth_resolution(self) -> int:
        """Coarse samples per ray."""
        return self.rendering_samples_per_ray // 2

    @property
    def depth_resolution_importance(self) -> int:
        """Importance samples per ray."""
        return self.rendering_samples_per_ray // 2

    @property
    def plane_res(self) -> int:
        """Side of each upsampled plane (2·triplane_low_res)."""
        return 2 * self.triplane_low_res

    def model_dict(self) -> dict:
        """The checkpoint's ``config.json`` keys."""
        keys = ("camera_embed_dim", "rendering_samples_per_ray", "transformer_dim",
                "transformer_layers", "transformer_heads", "triplane_low_res",
                "triplane_high_res", "triplane_dim", "encoder_type", "encoder_model_name",
                "encoder_feat_dim", "encoder_freeze")
        return {k: getattr(self, k) for k in keys}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "LRMConfig":
        """Build from a checkpoint ``config.json`` or the fixture's ``config`` metadata.

        ``mesh_size`` (the authors' inference name) is read as ``grid_size``; unknown keys are
        kept in ``extra`` rather than refused, since checkpoints may carry training-only keys.
        """
        values = dict(values)
        if "mesh_size" in values and "grid_size" not in values:
            values["grid_size"] = values.pop("mesh_size")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        extra = {k: v for k, v in values.items() if k not in known}
        return cls(**{k: v for k, v in values.items() if k in known}, extra=extra)


def preset(variant: str = "base") -> LRMConfig:
    """The published v1.1 sizes (model card): ``small``, ``base`` (default) or ``large``.

    The ``obj-`` and ``mix-`` checkpoints of one size share the architecture.
    """
    if variant == "base":
        return LRMConfig()
    if variant == "small":
        return LRMConfig(transformer_dim=512, transformer_heads=8, triplane_dim=32,
                         encoder_model_name="dinov2_vits14_reg", encoder_feat_dim=384,
                         source_size=224, render_size=192)
    if variant == "large":
        return LRMConfig(rendering_samples_per_ray=128, transformer_dim=1024, transformer_layers=16,
                         transformer_heads=16, triplane_dim=80,
                         encoder_model_name="dinov2_vitb14_reg", encoder_feat_dim=768,
                         source_size=448, render_size=384)
    raise ValueError(f"unknown LRM variant {variant!r}; choose small, base or large")


def tiny_config() -> LRMConfig:
    """The conformance fixture's tiny configuration (152,796 parameters)."""
    return LRMConfig(camera_embed_dim=40, rendering_samples_per_ray=16, transformer_dim=32,
                     transformer_layers=2, transformer_heads=2, triplane_low_res=4,
                     triplane_high_res=8, triplane_dim=8, encoder_model_name="dinov2_tiny14_reg",
                     encoder_feat_dim=32, encoder_depth=2, encoder_heads=2, source_size=56,
                     render_size=16, render_views=2, grid_size=16, mesh_thres=3.0)
