"""DUSt3R configuration; defaults = the published ``naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt``."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from ..croco.dpt import DPT_PATCH_SIZE
from ..weights import Checkpoint, register

CHECKPOINT = Checkpoint(
    key="dust3r",
    filename="model.safetensors",
    repo_id="naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt",
    size_mb=2285,
    description="DUSt3R ViT-Large/Base-decoder 512 DPT (naver, non-commercial licence)",
    licence="CC BY-NC-SA 4.0",
)
register(CHECKPOINT)


def _mode(value) -> tuple:
    """A ``(mode, vmin, vmax)`` triple with JSON infinities turned into floats."""
    mode, vmin, vmax = value
    return (str(mode), float(vmin), float(vmax))


@dataclass
class DUSt3RConfig:
    """Constructor arguments of the reference ``AsymmetricCroCo3DStereo`` (same names).

    ``patch_embed_cls`` and ``landscape_only`` are accepted for compatibility: this
    implementation always feeds images in their natural layout (``PatchEmbedDust3R``,
    ``landscape_only`` false), which gives exactly the training constructor's outputs for
    landscape images and the inference constructor's for any image.
    ``dpt_feature_dim``, ``dpt_last_dim``, ``dpt_layer_dims`` are fixed in the reference and only
    configurable here (tiny fixtures). ``img_size`` is recorded only: with RoPE no tensor depends
    on it, and any H, W that are multiples of ``patch_size`` run, in either orientation. The DPT
    head needs ``patch_size`` 16 (its upsampling is fixed); the linear head takes any.
    """

    output_mode: str = "pts3d"
    head_type: str = "dpt"
    depth_mode: tuple = ("exp", -math.inf, math.inf)
    conf_mode: tuple = ("exp", 1.0, math.inf)
    freeze: str = "none"
    landscape_only: bool = False
    patch_embed_cls: str = "PatchEmbedDust3R"
    img_size: tuple = (512, 512)
    patch_size: int = 16
    enc_embed_dim: int = 1024
    enc_depth: int = 24
    enc_num_heads: int = 16
    dec_embed_dim: int = 768
    dec_depth: int = 12
    dec_num_heads: int = 12
    mlp_ratio: float = 4.0
    pos_embed: str = "RoPE100"
    dpt_feature_dim: int = 256
    dpt_last_dim: int = 128
    dpt_layer_dims: list = field(default_factory=lambda: [96, 192, 384, 768])

    def __post_init__(self) -> None:
        self.depth_mode = _mode(self.depth_mode)
        self.conf_mode = _mode(self.conf_mode) if self.conf_mode is not None else None
        self.img_size = tuple(self.img_size) if not isinstance(self.img_size, int) else (self.img_size,) * 2
        self.dpt_layer_dims = [int(d) for d in self.dpt_layer_dims]
        if self.output_mode != "pts3d":
            raise ValueError(f"output_mode {self.output_mode!r} is not supported (pts3d only)")
        if self.head_type not in ("dpt", "linear"):
            raise ValueError(f"head_type {self.head_type!r} is not supported (dpt or linear)")
        if self.head_type == "dpt" and self.dec_depth < 4:
            raise ValueError("the DPT head needs dec_depth >= 4")
        if self.head_type == "dpt" and self.patch_size != DPT_PATCH_SIZE:
            raise ValueError(f"the DPT head's upsampling is fixed at {DPT_PATCH_SIZE} pixels per token "
                             f"(patch_size {self.patch_size}: use head_type 'linear')")

    @property
    def dpt_hooks(self) -> list[int]:
        """Token layers read by the DPT heads: ``[0, L*2//4, L*3//4, L]`` (published [0,6,9,12])."""
        d = self.dec_depth
        return [0, d * 2 // 4, d * 3 // 4, d]

    @classmethod
    def from_dict(cls, values: dict | str) -> "DUSt3RConfig":
        """Build from the reference's constructor arguments (a dict or JSON text, ``Infinity`` allowed).

        Unknown keys raise ``ValueError``.
        """
        if isinstance(values, str):
            values = json.loads(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DUSt3R config key(s): {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def tiny(cls) -> "DUSt3RConfig":
        """The tiny configuration of the conformance fixture (384,792 parameters)."""
        return cls(enc_embed_dim=32, enc_depth=4, enc_num_heads=2, dec_embed_dim=24, dec_depth=10,
                   dec_num_heads=2, dpt_feature_dim=16, dpt_last_dim=8, dpt_layer_dims=[8, 12, 16, 24])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
