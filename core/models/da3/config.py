"""Configuration of Depth Anything 3's any-view network (``DepthAnything3Net``).

The defaults are DA3-SMALL (``depth-anything/DA3-SMALL``, the package's ``da3-small.yaml``):
a ViT-S/14 (384 wide, 6 heads, 12 blocks), out layers 5, 7, 9, 11, all-view attention, qk-norm
and RoPE from block 4, DualDPT features 64, out channels 48/96/192/384, camera encoder width 384
(4 blocks, 16 heads), camera decoder width 768. :meth:`DA3Config.base` is DA3-BASE.

The field names are the keys of the conformance fixture's ``config`` metadata, so
``DA3Config.from_dict(json.loads(metadata["config"]))`` builds the fixture's tiny model;
:meth:`DA3Config.from_hub_config` reads a checkpoint's ``config.json``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from core.errors import UserError

# The reference's ViT presets (``DinoV2(name=...)``): width, heads, blocks.
VIT_PRESETS = {"vits": (384, 6, 12), "vitb": (768, 12, 12)}
# Published model names the any-view classes cover, and their ViT.
SUPPORTED_MODELS = {"da3-small": "vits", "da3-base": "vitb"}
REF_VIEW_STRATEGIES = ("first", "middle", "saddle_balanced")


class UnsupportedDA3Model(UserError):
    """A Depth Anything 3 configuration outside the any-view Small/Base family."""


@dataclass
class DA3Config:
    """Sizes of a DA3 any-view network.

    Attributes:
        img_size: image size the DINOv2 position embedding was trained for (518: 37x37 grid).
        patch_size: patch side in pixels (14); inputs must be multiples of it.
        embed_dim: D, the ViT width. Head and camera decoder read 2D (``cat_token``).
        num_heads: ViT attention heads.
        depth: ViT blocks.
        mlp_ratio: hidden width of the MLPs as a multiple of their input width.
        alt_start: first block of the alternating part: token 0 is replaced by a camera token
            there, and odd blocks >= alt_start attend over all views (-1: never).
        qknorm_start / rope_start: first block with qk LayerNorm / 2-D RoPE (-1: none).
        out_layers: the 4 blocks the DualDPT head and the camera decoder read (0-based).
        cat_token: the read tokens are cat(latest per-view output, block output) (2D wide).
        head_features: DualDPT fusion width F.
        head_out_channels: widths of the four reassemble stages.
        cam_enc_trunk_depth / cam_enc_num_heads: the camera encoder's transformer.
        export_feat_layers: blocks whose normalised tokens are returned as ``aux`` features.
        ref_view_strategy: reference-view choice for 3+ views without cameras (``first``,
            ``middle``, ``saddle_balanced``).
        process_res_method: the preprocessing the checkpoint was exported with (only
            ``upper_bound_resize`` is implemented).
        rope_freq: RoPE base frequency (100).
    """

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 384
    num_heads: int = 6
    depth: int = 12
    mlp_ratio: float = 4.0
    alt_start: int = 4
    qknorm_start: int = 4
    rope_start: int = 4
    out_layers: tuple[int, ...] = (5, 7, 9, 11)
    cat_token: bool = True
    head_features: int = 64
    head_out_channels: tuple[int, ...] = (48, 96, 192, 384)
    cam_enc_trunk_depth: int = 4
    cam_enc_num_heads: int = 16
    export_feat_layers: tuple[int, ...] = ()
    ref_view_strategy: str = "saddle_balanced"
    process_res_method: str = "upper_bound_resize"
    rope_freq: float = 100.0
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.out_layers = tuple(int(i) for i in self.out_layers)
        self.head_out_channels = tuple(int(c) for c in self.head_out_channels)
        self.export_feat_layers = tuple(int(i) for i in self.export_feat_layers)
        if len(self.out_layers) != 4 or len(self.head_out_channels) != 4:
            raise ValueError("out_layers and head_out_channels need 4 entries each")
        for name, layers in (("out_layers", self.out_layers),
                             ("export_feat_layers", self.export_feat_layers)):
            if any(not 0 <= i < self.depth for i in layers):
                raise ValueError(f"{name} {layers} outside the ViT's {self.depth} blocks")
        if self.embed_dim % self.num_heads or (self.embed_dim // self.num_heads) % 4:
            raise ValueError("embed_dim / num_heads must be a multiple of 4 (2-D RoPE)")
        if self.embed_dim % self.cam_enc_num_heads:
            raise ValueError("embed_dim must be divisible by cam_enc_num_heads")
        if self.head_features % 4:
            raise ValueError("head_features must be a multiple of 4 (UV embedding)")
        if not self.cat_token:
            raise ValueError("only cat_token=True (the any-view checkpoints) is implemented")
        if self.ref_view_strategy not in REF_VIEW_STRATEGIES:
            raise ValueError(f"ref_view_strategy {self.ref_view_strategy!r} not in "
                             f"{REF_VIEW_STRATEGIES}")
        if self.process_res_method != "upper_bound_resize":
            raise ValueError("only process_res_method 'upper_bound_resize' is implemented")

    @property
    def head_dim_in(self) -> int:
        """Width of the tokens the head and the camera decoder read (2D with ``cat_token``)."""
        return 2 * self.embed_dim

    @classmethod
    def from_dict(cls, values: dict) -> "DA3Config":
        """Build from flat keys (the fixture's metadata); unknown keys go to ``extra``."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in values.items() if k in known},
                   extra={k: v for k, v in values.items() if k not in known})

    @classmethod
    def small(cls) -> "DA3Config":
        """DA3-SMALL (34,299,463 parameters)."""
        return cls()

    @classmethod
    def base(cls) -> "DA3Config":
        """DA3-BASE (135,366,599 parameters)."""
        return cls(embed_dim=768, num_heads=12, depth=12, head_features=128,
                   head_out_channels=(96, 192, 384, 768))

    @classmethod
    def tiny(cls) -> "DA3Config":
        """The conformance fixture's tiny configuration (metadata ``config`` of
        ``da3_tiny_reference.safetensors``; 360,447 parameters)."""
        return cls(embed_dim=32, num_heads=2, depth=10, alt_start=2, qknorm_start=2, rope_start=2,
                   out_layers=(3, 5, 7, 9), head_features=16, head_out_channels=(8, 16, 32, 32),
                   cam_enc_trunk_depth=2, cam_enc_num_heads=4, export_feat_layers=(0, 9))

    @classmethod
    def from_hub_config(cls, config: dict) -> "DA3Config":
        """The configuration a published checkpoint's ``config.json`` describes.

        Accepts the reference's nested form (``net`` with ``name`` / ``out_layers`` /
        ``alt_start`` ..., ``head`` with ``features`` / ``out_channels``, optionally under a
        ``config`` key) or a bare ``model_name`` (``da3-small`` / ``da3-base``).

        Raises:
            UnsupportedDA3Model: metric, mono, nested, Large or Giant models, or any network
                that is not the any-view DinoV2 + DualDPT + camera encoder/decoder.
        """
        nested = config.get("config", config)
        name = str(config.get("model_name", nested.get("model_name", "")) or "").lower()
        if "net" not in nested:
            if name in SUPPORTED_MODELS:
                return cls.small() if name == "da3-small" else cls.base()
            raise UnsupportedDA3Model(
                f"Depth Anything 3 model {name or '(unnamed)'!r} is not supported: ReconBench "
                f"implements the any-view DA3-SMALL and DA3-BASE only")
        net, head = nested["net"], nested.get("head", {})
        vit = str(net.get("name", ""))
        head_cls = str(head.get("__object__", {}).get("name", "DualDPT"))
        if vit not in VIT_PRESETS or head_cls != "DualDPT" or "cam_dec" not in nested:
            raise UnsupportedDA3Model(
                f"Depth Anything 3 network (backbone {vit or '?'}, head {head_cls}) is not "
                f"supported: only the any-view ViT-S/ViT-B models (DA3-SMALL, DA3-BASE) are; "
                f"metric, mono, nested, Large and Giant checkpoints are out of scope")
        width, heads, blocks = VIT_PRESETS[vit]
        cam_enc = nested.get("cam_enc", {})
        return cls(embed_dim=width, num_heads=heads, depth=blocks,
                   alt_start=int(net.get("alt_start", -1)),
                   qknorm_start=int(net.get("qknorm_start", -1)),
                   rope_start=int(net.get("rope_start", -1)),
                   out_layers=tuple(net.get("out_layers", (5, 7, 9, 11))),
                   cat_token=bool(net.get("cat_token", True)),
                   head_features=int(head.get("features", 64)),
                   head_out_channels=tuple(head.get("out_channels", (48, 96, 192, 384))),
                   cam_enc_trunk_depth=int(cam_enc.get("trunk_depth", 4)),
                   cam_enc_num_heads=int(cam_enc.get("num_heads", 16)))

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("extra")
        for key in ("out_layers", "head_out_channels", "export_feat_layers"):
            out[key] = list(out[key])
        return out
