"""Configuration of the Point-E image -> point cloud pipeline (CLIP + base40M + upsample).

Defaults are the published full-size models and the authors' image example settings
(``base40M`` + ``upsample``, 1024 + 3072 points, 64 Karras steps, guidance 3 on both stages).
The fields accept the conformance fixture's keys under the same names: the metadata ``config``
keys (``clip_width``, ``width``, ``base_points``, ``karras_steps``...) are fields of
:class:`PointEConfig`, and the reference model configurations (``base_model_config``,
``upsample_model_config``) are read by :class:`PointDiffusionTransformerConfig`.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

# Model space = output units * scale + bias; output units are xyz in [-0.5, 0.5] and RGB in [0, 255].
CHANNEL_SCALES = (2.0, 2.0, 2.0, 0.007843137255, 0.007843137255, 0.007843137255)
CHANNEL_BIASES = (0.0, 0.0, 0.0, -1.0, -1.0, -1.0)


@dataclass
class PointDiffusionTransformerConfig:
    """One point diffusion transformer, in the reference's own configuration keys.

    Attributes:
        name: ``CLIPImageGridPointDiffusionTransformer`` (base) or
            ``CLIPImageGridUpsamplePointDiffusionTransformer`` (upsampler).
        input_channels / output_channels: 6 (xyz RGB) / 12 (epsilon + learned-range variance).
        n_ctx: number of points the model denoises (1024 base, 3072 upsample).
        width / layers / heads: transformer size.
        cond_ctx: number of low-resolution conditioning points (upsampler only).
        channel_scales / channel_biases: low-res points -> model space (upsampler buffers).
        init_scale, cond_drop_prob: training settings kept for completeness (unused at inference).
        time_token_cond: the time embedding is a token (True for all published models) rather
            than added to every point token.
        clip_grid_dim: channels of the CLIP grid (1024 for ViT-L/14); not a reference key.
        attention: ``sdpa`` (fused kernel, fast) or ``reference`` (the reference's operation
            order, bit-identical on CPU); not a reference key.
    """

    name: str = "CLIPImageGridPointDiffusionTransformer"
    input_channels: int = 6
    output_channels: int = 12
    n_ctx: int = 1024
    width: int = 512
    layers: int = 12
    heads: int = 8
    init_scale: float = 0.25
    time_token_cond: bool = True
    cond_drop_prob: float = 0.1
    cond_ctx: int = 1024
    channel_scales: tuple = CHANNEL_SCALES
    channel_biases: tuple = CHANNEL_BIASES
    clip_grid_dim: int = 1024
    attention: str = "sdpa"

    @property
    def is_upsampler(self) -> bool:
        return "Upsample" in self.name

    @classmethod
    def from_dict(cls, values: dict | str, **overrides: Any) -> "PointDiffusionTransformerConfig":
        """Build from the reference configuration dict (or its JSON text); unknown keys raise."""
        if isinstance(values, str):
            values = json.loads(values)
        values = {**dict(values), **overrides}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown Point-E transformer config key(s): {', '.join(unknown)}")
        for key in ("channel_scales", "channel_biases"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


def _pair(value: Any) -> tuple:
    """A per-stage setting: a scalar applies to both stages, a pair is (base, upsample)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"expected one value or one per stage (2), got {value!r}")
        return tuple(value)
    return (value, value)


@dataclass
class PointEConfig:
    """The whole image -> point cloud pipeline.

    CLIP ViT-L/14 (vision tower): ``clip_*``. Base model: ``width``/``layers``/``heads``,
    ``base_points`` points. Upsampler: ``up_width``/``up_layers``/``up_heads``, adds
    ``up_points`` points conditioned on the base result. Sampler settings are per stage where a
    pair is given (``(base, upsample)``); a scalar applies to both stages.

    ``base_model_config`` / ``upsample_model_config``: optional reference model configurations
    (dicts with the reference keys); when given they override the sizes above.
    ``image_sizes`` is fixture bookkeeping and ignored.
    """

    # CLIP ViT-L/14 vision tower
    clip_image_size: int = 224
    clip_patch_size: int = 14
    clip_width: int = 1024
    clip_layers: int = 24
    clip_heads: int = 16
    clip_proj_dim: int = 768
    clip_intermediate_size: int | None = None  # default 4 * clip_width
    clip_hidden_act: str = "quick_gelu"
    clip_layer_norm_eps: float = 1e-5
    # base40M
    width: int = 512
    layers: int = 12
    heads: int = 8
    # upsample
    up_width: int = 512
    up_layers: int = 12
    up_heads: int = 8
    # points
    base_points: int = 1024
    up_points: int = 3072
    # sampler (published image example)
    karras_steps: Any = 64
    guidance_scale: Any = 3.0
    sigma_min: Any = 1e-3
    sigma_max: Any = (120.0, 160.0)
    s_churn: Any = (3.0, 0.0)
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0
    rho: float = 7.0
    clip_denoised: bool = True
    # diffusion
    timesteps: int = 1024
    base_schedule: str = "cosine"
    upsample_schedule: str = "linear"
    channel_scales: tuple = CHANNEL_SCALES
    channel_biases: tuple = CHANNEL_BIASES
    # attention kernel of the diffusion transformers: "sdpa" (fast) or "reference" (bit-exact)
    attention: str = "sdpa"
    # reference model configurations (override the sizes above when given)
    base_model_config: dict | None = None
    upsample_model_config: dict | None = None
    image_sizes: Any = None

    def __post_init__(self) -> None:
        for key in ("base_model_config", "upsample_model_config"):
            value = getattr(self, key)
            if isinstance(value, str):
                setattr(self, key, json.loads(value))
        if self.clip_width % self.clip_heads:
            raise ValueError("clip_width must be divisible by clip_heads")

    # ------------------------------------------------------------ per-stage values
    def stage(self, index: int) -> dict:
        """Sampler settings of stage ``index`` (0 = base, 1 = upsample)."""
        return {
            "num_points": (self.base_points, self.up_points)[index],
            "karras_steps": int(_pair(self.karras_steps)[index]),
            "guidance_scale": float(_pair(self.guidance_scale)[index]),
            "sigma_min": float(_pair(self.sigma_min)[index]),
            "sigma_max": float(_pair(self.sigma_max)[index]),
            "s_churn": float(_pair(self.s_churn)[index]),
            "s_tmin": float(self.s_tmin),
            "s_tmax": float(self.s_tmax),
            "s_noise": float(self.s_noise),
            "rho": float(self.rho),
            "clip_denoised": bool(self.clip_denoised),
        }

    @property
    def num_points(self) -> int:
        return self.base_points + self.up_points

    # ------------------------------------------------------------ sub-configurations
    def base_transformer_config(self) -> PointDiffusionTransformerConfig:
        if self.base_model_config is not None:
            return PointDiffusionTransformerConfig.from_dict(
                self.base_model_config, clip_grid_dim=self.clip_width, attention=self.attention)
        return PointDiffusionTransformerConfig(
            name="CLIPImageGridPointDiffusionTransformer", n_ctx=self.base_points,
            width=self.width, layers=self.layers, heads=self.heads, clip_grid_dim=self.clip_width,
            attention=self.attention)

    def upsample_transformer_config(self) -> PointDiffusionTransformerConfig:
        if self.upsample_model_config is not None:
            return PointDiffusionTransformerConfig.from_dict(
                self.upsample_model_config, clip_grid_dim=self.clip_width, attention=self.attention)
        return PointDiffusionTransformerConfig(
            name="CLIPImageGridUpsamplePointDiffusionTransformer", n_ctx=self.up_points,
            cond_ctx=self.base_points, width=self.up_width, layers=self.up_layers,
            heads=self.up_heads, channel_scales=tuple(self.channel_scales),
            channel_biases=tuple(self.channel_biases), clip_grid_dim=self.clip_width,
            attention=self.attention)

    def clip_vision_config(self):
        """The transformers ``CLIPVisionConfig`` of the conditioning tower."""
        from transformers import CLIPVisionConfig
        return CLIPVisionConfig(
            hidden_size=self.clip_width,
            intermediate_size=self.clip_intermediate_size or 4 * self.clip_width,
            num_hidden_layers=self.clip_layers, num_attention_heads=self.clip_heads,
            image_size=self.clip_image_size, patch_size=self.clip_patch_size,
            projection_dim=self.clip_proj_dim, num_channels=3, hidden_act=self.clip_hidden_act,
            layer_norm_eps=self.clip_layer_norm_eps)

    # ------------------------------------------------------------ construction
    @classmethod
    def from_fixture_metadata(cls, metadata: dict, **overrides: Any) -> "PointEConfig":
        """Build from a conformance fixture's metadata (``config``, ``base_model_config``,
        ``upsample_model_config``, ``hf_clip_vision_config``; values may be JSON text)."""
        def parse(key):
            value = metadata.get(key)
            return json.loads(value) if isinstance(value, str) else value

        values = dict(parse("config") or {})
        values["base_model_config"] = parse("base_model_config")
        values["upsample_model_config"] = parse("upsample_model_config")
        clip = parse("hf_clip_vision_config") or {}
        if "intermediate_size" in clip:
            values["clip_intermediate_size"] = clip["intermediate_size"]
        if "hidden_act" in clip:
            values["clip_hidden_act"] = clip["hidden_act"]
        if "layer_norm_eps" in clip:
            values["clip_layer_norm_eps"] = clip["layer_norm_eps"]
        sampler = parse("sampler") or {}
        for key in ("sigma_min", "sigma_max", "s_churn", "s_tmin", "s_noise", "rho",
                    "clip_denoised", "guidance_scale", "karras_steps"):
            if key in sampler:
                values[key] = sampler[key]
        if "s_tmax" in sampler:
            values["s_tmax"] = float(sampler["s_tmax"])
        values.update(overrides)
        return cls(**values)

    @classmethod
    def tiny(cls) -> "PointEConfig":
        """The conformance fixture's tiny configuration (random-weight tests and demos)."""
        return cls(clip_width=64, clip_layers=2, clip_heads=4, clip_proj_dim=32,
                   width=64, layers=2, heads=4, up_width=64, up_layers=2, up_heads=4,
                   base_points=64, up_points=128, karras_steps=4, guidance_scale=3.0)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
