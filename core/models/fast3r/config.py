"""Fast3R configuration; defaults = the published ``jedyang97/Fast3R_ViT_Large_512``."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field

from ..croco.dpt import DPT_PATCH_SIZE
from ..weights import Checkpoint, register

CHECKPOINT = Checkpoint(
    key="fast3r",
    filename="model.safetensors",
    repo_id="jedyang97/Fast3R_ViT_Large_512",
    size_mb=2590,
    description="Fast3R ViT-Large 512 (Meta, non-commercial licence)",
    licence="FAIR Noncommercial Research License",
)
register(CHECKPOINT)

ENCODER_DEFAULTS = {
    "encoder_type": "croco", "img_size": 512, "patch_size": 16, "patch_embed_cls": "PatchEmbedDust3R",
    "embed_dim": 1024, "num_heads": 16, "depth": 24, "mlp_ratio": 4, "pos_embed": "RoPE100",
    "attn_implementation": "flash_attention",
}
DECODER_DEFAULTS = {
    "decoder_type": "fast3r", "random_image_idx_embedding": True, "enc_embed_dim": 1024,
    "embed_dim": 1024, "num_heads": 16, "depth": 24, "mlp_ratio": 4.0, "qkv_bias": True, "drop": 0.0,
    "attn_drop": 0.0, "attn_implementation": "flash_attention", "attn_bias_for_inference_enabled": False,
    "max_image_idx": 1000,
}
HEAD_DEFAULTS = {
    "head_type": "dpt", "output_mode": "pts3d", "landscape_only": False,
    "depth_mode": ["exp", -math.inf, math.inf], "conf_mode": ["exp", 1, math.inf], "patch_size": 16,
    "with_local_head": True, "dpt_feature_dim": 256, "dpt_last_dim": 128,
    "dpt_layer_dims": [96, 192, 384, 768],
}


def _merge(defaults: dict, given: dict | None, what: str) -> dict:
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown Fast3R {what} key(s): {', '.join(unknown)}")
    out = copy.deepcopy(defaults)
    out.update(given)
    return out


@dataclass
class Fast3RConfig:
    """The reference ``Fast3R(encoder_args, decoder_args, head_args)`` constructor arguments.

    ``head_args`` also accepts ``dpt_feature_dim``, ``dpt_last_dim``, ``dpt_layer_dims`` (fixed
    in the reference; configurable for the tiny fixture). ``decoder_args.max_image_idx`` is the
    size of the image-index table (1000 in the reference).

    Sizes that describe the same thing twice are filled in from the one given: the decoder's
    ``enc_embed_dim`` from the encoder's ``embed_dim`` and the heads' ``patch_size`` from the
    encoder's, unless given (then they must agree). ``img_size`` is recorded only (RoPE): any
    H, W that are multiples of the patch run, in either orientation, views of different shapes
    together. The DPT heads need patch 16 (their upsampling is fixed).
    """

    encoder_args: dict = field(default_factory=dict)
    decoder_args: dict = field(default_factory=dict)
    head_args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.encoder_args = _merge(ENCODER_DEFAULTS, self.encoder_args, "encoder_args")
        self.decoder_args = _merge({**DECODER_DEFAULTS, "enc_embed_dim": self.encoder_args["embed_dim"]},
                                   self.decoder_args, "decoder_args")
        self.head_args = _merge({**HEAD_DEFAULTS, "patch_size": self.encoder_args["patch_size"]},
                                self.head_args, "head_args")
        if self.encoder_args["encoder_type"] != "croco":
            raise ValueError(f"encoder_type {self.encoder_args['encoder_type']!r} is not supported (croco)")
        if self.decoder_args["decoder_type"] != "fast3r":
            raise ValueError(f"decoder_type {self.decoder_args['decoder_type']!r} is not supported (fast3r)")
        if self.head_args["head_type"] != "dpt" or self.head_args["output_mode"] != "pts3d":
            raise ValueError("only the DPT pts3d heads are supported")
        if self.decoder_args["attn_bias_for_inference_enabled"]:
            raise ValueError("attn_bias_for_inference_enabled is not supported (false as published)")
        if self.decoder_args["enc_embed_dim"] != self.encoder_args["embed_dim"]:
            raise ValueError("decoder_args.enc_embed_dim must equal encoder_args.embed_dim")
        if self.head_args["patch_size"] != self.encoder_args["patch_size"]:
            raise ValueError("head_args.patch_size must equal encoder_args.patch_size")
        if self.head_args["patch_size"] != DPT_PATCH_SIZE:
            raise ValueError(f"the DPT heads' upsampling is fixed at {DPT_PATCH_SIZE} pixels per token, "
                             f"not patch_size {self.head_args['patch_size']}")

    @property
    def dpt_hooks(self) -> list[int]:
        """``[0, d*2//4, d*3//4, d]`` with d the fusion depth (published [0,12,18,24])."""
        d = self.decoder_args["depth"]
        return [0, d * 2 // 4, d * 3 // 4, d]

    @classmethod
    def from_dict(cls, values: dict | str) -> "Fast3RConfig":
        """From ``{"encoder_args":…, "decoder_args":…, "head_args":…}`` (dict or JSON with ``Infinity``)."""
        if isinstance(values, str):
            values = json.loads(values)
        unknown = sorted(set(values) - {"encoder_args", "decoder_args", "head_args"})
        if unknown:
            raise ValueError(f"unknown Fast3R config key(s): {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def tiny(cls) -> "Fast3RConfig":
        """The tiny configuration of the conformance fixture (451,016 parameters)."""
        return cls(encoder_args={"embed_dim": 32, "num_heads": 2, "depth": 2},
                   decoder_args={"enc_embed_dim": 32, "embed_dim": 48, "num_heads": 3, "depth": 10},
                   head_args={"dpt_feature_dim": 16, "dpt_last_dim": 8, "dpt_layer_dims": [8, 12, 16, 24]})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
