"""Configuration of VGGT (Visual Geometry Grounded Transformer, Wang et al., CVPR 2025).

The defaults are the published VGGT-1B (``facebook/VGGT-1B``, ``facebook/VGGT-1B-Commercial``).
The field names are the keys of the conformance fixture's ``config`` metadata, so
``VGGTConfig(**json.loads(metadata["config"]))`` builds the fixture's tiny model.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class VGGTConfig:
    """Sizes of the VGGT architecture.

    Attributes:
        img_size: image size the DINOv2 position embedding was trained for (518 -> 37x37 grid);
            other sizes interpolate it (bicubic, antialiased).
        patch_size: patch side in pixels (14). Input H and W must be multiples of it.
        embed_dim: token width C of the patch embedder and of the alternating-attention trunk.
        depth: number of frame blocks (= number of global blocks) of the trunk.
        num_heads: attention heads of the trunk blocks.
        mlp_ratio: hidden width of every MLP, as a multiple of its input width.
        num_register_tokens: register tokens of DINOv2 and of the trunk (4).
        dino_depth / dino_num_heads: blocks and heads of the DINOv2 patch embedder.
        camera_trunk_depth / camera_num_heads: the camera head's transformer (width 2C).
        camera_iterations: refinement iterations of the camera head (4).
        dpt_features: feature width of the DPT fusion stages.
        dpt_out_channels: widths of the four DPT reassemble stages.
        dpt_intermediate_layer_idx: trunk layers (0-based) the DPT heads read.
        rope_freq: base frequency of the 2D rotary embedding (0 disables RoPE).
        qk_norm: LayerNorm on queries and keys of the trunk blocks.
        init_values: LayerScale initial value (only matters for fresh random models).
        enable_camera / enable_depth / enable_point: which heads exist. Whether the track head
            is built is not a configuration key but ``VGGT(config, with_track_head=...)``.
        track_features: C, width of the track head's feature maps and track features.
        track_iters: refinement iterations of the tracker.
        track_corr_levels: L, levels of the correlation pyramid.
        track_corr_radius: r, the correlation window is (2r+1) x (2r+1) per level.
        track_hidden_size: width of the tracker's update transformer.
        track_depth: time/space layers of the update transformer.
        track_num_heads: attention heads of the update transformer.
        track_num_virtual_tracks: V, virtual tracks of the update transformer.
    """

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    dino_depth: int = 24
    dino_num_heads: int = 16
    camera_trunk_depth: int = 4
    camera_num_heads: int = 16
    camera_iterations: int = 4
    dpt_features: int = 256
    dpt_out_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    dpt_intermediate_layer_idx: tuple[int, ...] = (4, 11, 17, 23)
    rope_freq: float = 100.0
    qk_norm: bool = True
    init_values: float = 0.01
    enable_camera: bool = True
    enable_depth: bool = True
    enable_point: bool = True
    track_features: int = 128
    track_iters: int = 4
    track_corr_levels: int = 7
    track_corr_radius: int = 4
    track_hidden_size: int = 384
    track_depth: int = 6
    track_num_heads: int = 8
    track_num_virtual_tracks: int = 64
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.dpt_out_channels = tuple(int(c) for c in self.dpt_out_channels)
        self.dpt_intermediate_layer_idx = tuple(int(i) for i in self.dpt_intermediate_layer_idx)
        if len(self.dpt_out_channels) != 4 or len(self.dpt_intermediate_layer_idx) != 4:
            raise ValueError("dpt_out_channels and dpt_intermediate_layer_idx need 4 entries each")
        if any(not 0 <= i < self.depth for i in self.dpt_intermediate_layer_idx):
            raise ValueError(f"dpt_intermediate_layer_idx {self.dpt_intermediate_layer_idx} "
                             f"outside the trunk's {self.depth} layers")
        if self.embed_dim % self.num_heads or self.embed_dim % self.dino_num_heads:
            raise ValueError("embed_dim must be divisible by num_heads and dino_num_heads")
        if (2 * self.embed_dim) % self.camera_num_heads:
            raise ValueError("2 * embed_dim must be divisible by camera_num_heads")
        if self.track_features < 4 or self.track_features % 4:
            raise ValueError(f"track_features must be a positive multiple of 4 (flow and position "
                             f"embeddings), got {self.track_features}")
        if self.track_hidden_size % self.track_num_heads:
            raise ValueError("track_hidden_size must be divisible by track_num_heads")
        if min(self.track_iters, self.track_corr_levels, self.track_depth,
               self.track_num_virtual_tracks) < 1 or self.track_corr_radius < 0:
            raise ValueError("track_iters, track_corr_levels, track_depth and "
                             "track_num_virtual_tracks must be >= 1, track_corr_radius >= 0")

    @classmethod
    def from_dict(cls, values: dict) -> "VGGTConfig":
        """Build from a dict; unknown keys are kept in ``extra`` instead of failing."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in values.items() if k in known},
                   extra={k: v for k, v in values.items() if k not in known})

    @classmethod
    def tiny(cls) -> "VGGTConfig":
        """The conformance fixtures' tiny configuration (random weights, tests and demos): the
        ``config`` metadata of ``vggt_track_tiny_reference`` (``vggt_tiny_reference`` lacks the
        ``track_*`` keys)."""
        return cls(img_size=518, patch_size=14, embed_dim=32, depth=4, num_heads=2,
                   num_register_tokens=4, dino_depth=2, dino_num_heads=2, camera_trunk_depth=2,
                   camera_num_heads=4, dpt_features=16, dpt_out_channels=(8, 16, 32, 32),
                   dpt_intermediate_layer_idx=(0, 1, 2, 3), rope_freq=100, track_features=16,
                   track_iters=4, track_corr_levels=4, track_corr_radius=3, track_hidden_size=32,
                   track_depth=2, track_num_heads=8, track_num_virtual_tracks=64)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("extra")
        out["dpt_out_channels"] = list(self.dpt_out_channels)
        out["dpt_intermediate_layer_idx"] = list(self.dpt_intermediate_layer_idx)
        return out
