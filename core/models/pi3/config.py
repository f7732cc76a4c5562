"""Configuration of π³ and Pi3X (Wang et al. 2025, "π³: Scalable Permutation-Equivariant Visual
Geometry Learning"; checkpoints ``yyfz233/Pi3`` and ``yyfz233/Pi3X``).

The defaults are the published full-size models. The field names are the keys of the conformance
fixtures' ``config`` metadata (``pi3_tiny_reference`` / ``pi3x_tiny_reference``), so
``Pi3Config.from_dict(json.loads(metadata["config"]), variant=...)`` builds the fixture's tiny model;
keys that describe the fixture's inputs rather than the model (``views``, ``raw_hw``,
``pixel_limit``) land in ``extra``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Variant = Literal["pi3", "pi3x"]
VARIANTS: tuple[str, ...] = ("pi3", "pi3x")


@dataclass
class Pi3Config:
    """Sizes of the π³ family.

    Attributes:
        variant: ``pi3`` (linear point/confidence heads, no scale) or ``pi3x`` (convolutional
            heads, metric scale, optional conditioning on rays/intrinsics, poses and depth).
        img_size, patch_size: the DINOv2 position embedding covers ``img_size / patch_size``
            squared patches (37² for 518 / 14); other input sizes resize it.
        embed_dim: D, width of the encoder and of the decoder (they must be equal).
        enc_depth, enc_heads: DINOv2 blocks and heads (ViT-L: 24, 16).
        enc_registers: DINOv2 register tokens (4); dec_registers: the decoder's (5).
        dec_depth, dec_heads: decoder blocks (even: per-view attention, odd: all-view) and heads.
        head_embed_dim, head_heads, head_depth: width, heads and blocks of each head transformer.
        head_out_dim: output width of the point and confidence head transformers (input of the
            point / confidence heads).
        cam_dim: output width of the camera head transformer (= the camera head's width).
        mlp_ratio: MLP hidden width as a multiple of the block width.
        rope_freq: base of the 2-D rotary embedding (100).
        pose_heads: heads of Pi3X's pose-injection blocks (width ``embed_dim``).
        pose_inject_blocks: number of injection blocks; block k runs after decoder block
            ``pose_inject_first + k * pose_inject_every`` when that block exists.
        conv_upsample: channels of each ×2 upsampling stage of Pi3X's convolutional heads.
        conv_last_channels: hidden channels of the conv heads' output convolutions.
        conv_res_blocks: residual blocks per upsampling stage.
        metric_embed_dim, metric_heads, metric_depth, metric_out_dim: Pi3X's metric-scale
            cross-attention decoder.
        multimodal: Pi3X only: build the conditioning modules (``depth_encoder``, ``depth_emb``,
            ``ray_embed``, ``pose_inject_blk``). Without them the model takes images only and
            loading skips exactly those checkpoint prefixes.
    """

    variant: Variant = "pi3"
    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    enc_depth: int = 24
    enc_heads: int = 16
    enc_registers: int = 4
    dec_depth: int = 36
    dec_heads: int = 16
    dec_registers: int = 5
    head_embed_dim: int = 1024
    head_heads: int = 16
    head_depth: int = 5
    head_out_dim: int = 1024
    cam_dim: int = 512
    mlp_ratio: float = 4.0
    rope_freq: float = 100.0
    pose_heads: int = 16
    pose_inject_blocks: int = 5
    pose_inject_first: int = 1
    pose_inject_every: int = 8
    conv_upsample: tuple[int, ...] = (256, 128, 64)
    conv_last_channels: int = 32
    conv_res_blocks: int = 2
    metric_embed_dim: int = 512
    metric_heads: int = 8
    metric_depth: int = 5
    metric_out_dim: int = 512
    multimodal: bool = True
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.conv_upsample = tuple(int(c) for c in self.conv_upsample)
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown π³ variant {self.variant!r}; use one of {VARIANTS}")
        checks = [("embed_dim", self.embed_dim, "enc_heads", self.enc_heads),
                  ("embed_dim", self.embed_dim, "dec_heads", self.dec_heads),
                  ("head_embed_dim", self.head_embed_dim, "head_heads", self.head_heads)]
        if self.variant == "pi3x":
            checks += [("embed_dim", self.embed_dim, "pose_heads", self.pose_heads),
                       ("metric_embed_dim", self.metric_embed_dim, "metric_heads", self.metric_heads)]
        for width_name, width, heads_name, heads in checks:
            if heads < 1 or width % heads or (width // heads) % 4:
                raise ValueError(f"{width_name} ({width}) / {heads_name} ({heads}) must be a "
                                 "whole head width divisible by 4 (2-D RoPE)")
        if self.variant == "pi3x" and (self.embed_dim // self.pose_heads) % 8:
            raise ValueError("embed_dim / pose_heads must be divisible by 8 (PRoPE splits each head "
                             "into 4-vectors and two rotary quarters)")
        if self.dec_depth < 2 or min(self.enc_depth, self.head_depth) < 1:
            raise ValueError("dec_depth must be >= 2 (the output concatenates the last two blocks); "
                             "enc_depth and head_depth >= 1")
        if self.variant == "pi3x" and (not self.conv_upsample or self.conv_res_blocks < 0):
            raise ValueError("conv_upsample needs at least one stage and conv_res_blocks >= 0")

    @property
    def inject_after(self) -> dict[int, int]:
        """``{decoder block index: injection block index}`` of Pi3X's pose injection."""
        return {self.pose_inject_first + k * self.pose_inject_every: k
                for k in range(self.pose_inject_blocks)
                if self.pose_inject_first + k * self.pose_inject_every < self.dec_depth}

    @classmethod
    def from_dict(cls, values: dict, variant: Variant | None = None) -> "Pi3Config":
        """Build from a dict (e.g. a fixture's ``config``); unknown keys go to ``extra``."""
        values = dict(values)
        if variant is not None:
            values["variant"] = variant
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in values.items() if k in known},
                   extra={k: v for k, v in values.items() if k not in known})

    @classmethod
    def tiny(cls, variant: Variant = "pi3") -> "Pi3Config":
        """The conformance fixtures' tiny configuration (random weights: tests and demos)."""
        common = dict(embed_dim=32, enc_depth=2, enc_heads=2, dec_heads=2, head_embed_dim=32,
                      head_heads=2, head_depth=2, head_out_dim=32, cam_dim=32)
        if variant == "pi3":
            return cls(variant="pi3", dec_depth=4, **common)
        return cls(variant="pi3x", dec_depth=10, pose_heads=2, conv_upsample=(32, 16, 16),
                   conv_last_channels=16, conv_res_blocks=2, metric_embed_dim=16, metric_heads=2,
                   metric_depth=2, metric_out_dim=16, **common)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("extra")
        out["conv_upsample"] = list(self.conv_upsample)
        return out
