"""Configuration of Shap-E (text/image -> latent -> implicit function -> mesh and renders).

The reference's own configuration dicts are read as they are: :class:`LatentDiffusionConfig`
takes ``text300M`` / ``image300M`` (``SplitVectorDiffusion`` around an inner transformer),
:class:`DecoderConfig` takes the ``ChannelsDecoder`` dict (params_proj + NeRSTF renderer).
:class:`ShapEConfig` gathers CLIP, both diffusion models, the decoder and the sampler.
Defaults are the published full-size models and the authors' notebook settings (64 Karras
steps, guidance 15 for text and 3 for images, sigma 1e-3..160, no churn).
:meth:`ShapEConfig.from_fixture_metadata` builds the conformance fixture's configuration (or any
other size of the family) from its metadata.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

# published configurations (the manifests' ``config``; the YAML files are not in the repository)
PUBLISHED_TEXT300M = {
    "name": "SplitVectorDiffusion", "d_latent": 1048576, "latent_ctx": 1024,
    "inner": {"name": "CLIPImagePointDiffusionTransformer", "width": 1024, "layers": 24,
              "heads": 16, "init_scale": 0.25, "cond_drop_prob": 0.1, "pos_emb_init_scale": 0.05,
              "time_token_cond": True, "token_cond": True, "use_pos_emb": True}}
PUBLISHED_IMAGE300M = {
    "name": "SplitVectorDiffusion", "d_latent": 1048576, "latent_ctx": 1024,
    "inner": {"name": "CLIPImageGridPointDiffusionTransformer", "width": 1024, "layers": 24,
              "heads": 16, "init_scale": 0.25, "cond_drop_prob": 0.1, "pos_emb_init_scale": 0.05,
              "time_token_cond": True, "use_pos_emb": True}}
PUBLISHED_DECODER = {
    "name": "ChannelsDecoder", "latent_ctx": 1024, "d_latent": 1024,
    "params_proj": {"name": "channels", "init_scale": 1.0, "learned_scale": 0.0625, "use_ln": True},
    "renderer": {"name": "NeRSTFRenderer", "grid_size": 128, "n_coarse_samples": 64,
                 "n_fine_samples": 128, "separate_shared_samples": True,
                 "nerstf": {"name": "MLPNeRSTFModel", "activation": "swish", "d_hidden": 256,
                            "density_activation": "relu", "init_scale": 0.25,
                            "initial_density_bias": 0.1, "insert_direction_at": 4,
                            "meta_bias": False, "meta_parameters": True, "n_hidden_layers": 6,
                            "n_meta_layers": 4, "posenc_version": "nerf",
                            "separate_coarse_channels": True, "separate_nerf_channels": True,
                            "trainable_meta": False},
                 "void": {"name": "VoidNeRFModel", "background": [0, 0, 0]},
                 "volume": {"name": "BoundingBoxVolume", "bbox_min": [-1.0, -1.0, -1.0],
                            "bbox_max": [1.0, 1.0, 1.0]}}}
PUBLISHED_DIFFUSION = {"schedule": "exp", "timesteps": 1024, "mean_type": "x_start"}

# NeRF positional encoding: 15 octaves of sin/cos over 3 coordinates, plus the raw coordinates
POSENC_OCTAVES = 15
DIRECTION_CHANNELS = 51  # the direction encoding inserted at layer 4 (zeros: no view directions)
MLP_OUTPUTS = 12         # SDF, coarse density, fine density, STF rgb, coarse rgb, fine rgb


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


@dataclass
class LatentDiffusionConfig:
    """One latent diffusion model (``text300M`` or ``image300M``), in the reference's keys.

    Attributes:
        d_latent: D, the flat latent size (latent_ctx tokens x C channels, token-major).
        latent_ctx: number of latent tokens.
        kind: ``text`` (CLIPImagePointDiffusionTransformer, conditioned on the CLIP text
            embedding as one token) or ``image`` (CLIPImageGridPointDiffusionTransformer,
            conditioned on the CLIP grid tokens).
        width / layers / heads: the inner transformer.
        clip_dim: the conditioning's channels (text: CLIP embedding size; image: CLIP vision width).
        time_token_cond, use_pos_emb, token_cond: the reference flags (all True as published).
        cond_drop_prob, init_scale, pos_emb_init_scale: training settings kept for completeness.
    """

    d_latent: int = 1048576
    latent_ctx: int = 1024
    kind: str = "text"
    width: int = 1024
    layers: int = 24
    heads: int = 16
    clip_dim: int = 768
    time_token_cond: bool = True
    use_pos_emb: bool = True
    token_cond: bool = True
    cond_drop_prob: float = 0.1
    init_scale: float = 0.25
    pos_emb_init_scale: float = 0.05
    attention: str = "sdpa"

    def __post_init__(self) -> None:
        if self.kind not in ("text", "image"):
            raise ValueError(f"unknown latent diffusion kind {self.kind!r} (text or image)")
        if self.d_latent % self.latent_ctx:
            raise ValueError(f"d_latent {self.d_latent} is not a multiple of latent_ctx {self.latent_ctx}")
        if not self.time_token_cond or not self.use_pos_emb:
            raise ValueError("only time_token_cond and use_pos_emb models (as published) are supported")

    @property
    def channels(self) -> int:
        """C, channels per latent token."""
        return self.d_latent // self.latent_ctx

    @classmethod
    def from_reference(cls, values: dict | str, clip_dim: int, **overrides: Any) -> "LatentDiffusionConfig":
        """From a reference ``SplitVectorDiffusion`` dict (or its JSON text)."""
        values = _json(values)
        if values.get("name") != "SplitVectorDiffusion":
            raise ValueError(f"expected a SplitVectorDiffusion config, got {values.get('name')!r}")
        inner = dict(values["inner"])
        kinds = {"CLIPImagePointDiffusionTransformer": "text",
                 "CLIPImageGridPointDiffusionTransformer": "image"}
        if inner.get("name") not in kinds:
            raise ValueError(f"unknown inner transformer {inner.get('name')!r}")
        kwargs = dict(d_latent=int(values["d_latent"]), latent_ctx=int(values["latent_ctx"]),
                      kind=kinds[inner["name"]], clip_dim=clip_dim)
        for key in ("width", "layers", "heads", "time_token_cond", "use_pos_emb", "token_cond",
                    "cond_drop_prob", "init_scale", "pos_emb_init_scale"):
            if key in inner:
                kwargs[key] = inner[key]
        kwargs.update(overrides)
        return cls(**kwargs)


@dataclass
class DecoderConfig:
    """The latent decoder (``ChannelsDecoder``): params_proj + NeRSTF MLP + renderer settings.

    Attributes:
        latent_ctx / d_latent: the latent's tokens and channels per token (published 1024 x 1024).
        learned_scale: initial value of params_proj's learned scale (a training setting).
        use_ln: LayerNorm after each projection (True as published).
        d_hidden / n_hidden_layers / n_meta_layers / insert_direction_at: the NeRSTF MLP.
        grid_size: SDF grid per axis for the mesh (published 128).
        n_coarse_samples / n_fine_samples: NeRF samples per ray.
        background: void background colour, 0..255 (published black).
        bbox_min / bbox_max: the bounding box the renderer and the mesh use.
    """

    latent_ctx: int = 1024
    d_latent: int = 1024
    learned_scale: float = 0.0625
    use_ln: bool = True
    d_hidden: int = 256
    n_hidden_layers: int = 6
    n_meta_layers: int = 4
    insert_direction_at: int = 4
    grid_size: int = 128
    n_coarse_samples: int = 64
    n_fine_samples: int = 128
    background: tuple = (0.0, 0.0, 0.0)
    bbox_min: tuple = (-1.0, -1.0, -1.0)
    bbox_max: tuple = (1.0, 1.0, 1.0)

    @property
    def input_channels(self) -> int:
        """3 + 2·3·15 = 93: raw xyz then sin and sin(+pi/2) of 15 octaves."""
        return 3 + 2 * 3 * POSENC_OCTAVES

    def meta_shapes(self) -> list[tuple[int, int]]:
        """(out, in) of the meta layers whose weights come from the latent."""
        shapes = [(self.d_hidden, self.input_channels)]
        shapes += [(self.d_hidden, self.d_hidden)] * (self.n_meta_layers - 1)
        return shapes

    def __post_init__(self) -> None:
        self.background = tuple(float(v) for v in self.background)
        needed = sum(rows for rows, _ in self.meta_shapes())
        if needed != self.latent_ctx:
            raise ValueError(f"the meta layers need {needed} latent tokens (one per weight row), "
                             f"latent_ctx is {self.latent_ctx}")
        if self.n_meta_layers > self.insert_direction_at:
            raise ValueError("meta layers must come before the direction insertion")

    @classmethod
    def from_reference(cls, values: dict | str) -> "DecoderConfig":
        """From a reference ``ChannelsDecoder`` dict (or its JSON text)."""
        values = _json(values)
        if values.get("name") != "ChannelsDecoder":
            raise ValueError(f"expected a ChannelsDecoder config, got {values.get('name')!r}")
        proj, renderer = values["params_proj"], values["renderer"]
        mlp = renderer["nerstf"]
        if mlp.get("posenc_version") != "nerf" or mlp.get("activation") != "swish" \
                or mlp.get("density_activation") != "relu" or mlp.get("meta_bias"):
            raise ValueError("only the published NeRSTF MLP (nerf posenc, swish, relu density, "
                             "no meta bias) is supported")
        return cls(latent_ctx=int(values["latent_ctx"]), d_latent=int(values["d_latent"]),
                   learned_scale=float(proj.get("learned_scale", 0.0625)),
                   use_ln=bool(proj.get("use_ln", True)), d_hidden=int(mlp["d_hidden"]),
                   n_hidden_layers=int(mlp["n_hidden_layers"]),
                   n_meta_layers=int(mlp["n_meta_layers"]),
                   insert_direction_at=int(mlp["insert_direction_at"]),
                   grid_size=int(renderer["grid_size"]),
                   n_coarse_samples=int(renderer["n_coarse_samples"]),
                   n_fine_samples=int(renderer["n_fine_samples"]),
                   background=tuple(renderer["void"]["background"]),
                   bbox_min=tuple(renderer["volume"]["bbox_min"]),
                   bbox_max=tuple(renderer["volume"]["bbox_max"]))


@dataclass
class ShapEConfig:
    """CLIP ViT-L/14 (both towers), text300M, image300M, the decoder and the sampler.

    ``clip_*``: the vision tower (image mode); ``clip_text_*``: the text tower (text mode);
    ``clip_embed_dim``: the projection size (768 for ViT-L/14). Sampler: Karras Heun settings,
    ``text_guidance`` / ``image_guidance`` per mode.
    """

    clip_image_size: int = 224
    clip_patch_size: int = 14
    clip_width: int = 1024
    clip_layers: int = 24
    clip_heads: int = 16
    clip_intermediate_size: int | None = None
    clip_text_width: int = 768
    clip_text_layers: int = 12
    clip_text_heads: int = 12
    clip_text_intermediate_size: int | None = None
    clip_context_length: int = 77
    clip_vocab_size: int = 49408
    clip_embed_dim: int = 768
    text_model: dict = field(default_factory=lambda: dict(PUBLISHED_TEXT300M))
    image_model: dict = field(default_factory=lambda: dict(PUBLISHED_IMAGE300M))
    decoder: dict = field(default_factory=lambda: dict(PUBLISHED_DECODER))
    # diffusion
    schedule: str = "exp"
    timesteps: int = 1024
    mean_type: str = "x_start"
    # sampler (published notebooks)
    karras_steps: int = 64
    sigma_min: float = 1e-3
    sigma_max: float = 160.0
    rho: float = 7.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0
    clip_denoised: bool = True
    text_guidance: float = 15.0
    image_guidance: float = 3.0
    attention: str = "sdpa"

    def text_config(self) -> LatentDiffusionConfig:
        return LatentDiffusionConfig.from_reference(self.text_model, self.clip_embed_dim,
                                                    attention=self.attention)

    def image_config(self) -> LatentDiffusionConfig:
        return LatentDiffusionConfig.from_reference(self.image_model, self.clip_width,
                                                    attention=self.attention)

    def decoder_config(self) -> DecoderConfig:
        return DecoderConfig.from_reference(self.decoder)

    def guidance(self, mode: str) -> float:
        return self.text_guidance if mode == "text" else self.image_guidance

    def clip_vision_config(self):
        """transformers ``CLIPVisionConfig`` of the vision tower."""
        from transformers import CLIPVisionConfig
        return CLIPVisionConfig(
            hidden_size=self.clip_width,
            intermediate_size=self.clip_intermediate_size or 4 * self.clip_width,
            num_hidden_layers=self.clip_layers, num_attention_heads=self.clip_heads,
            image_size=self.clip_image_size, patch_size=self.clip_patch_size,
            projection_dim=self.clip_embed_dim, num_channels=3, hidden_act="quick_gelu",
            layer_norm_eps=1e-5)

    def clip_text_config(self):
        """transformers ``CLIPTextConfig`` of the text tower (eos 49407, quick_gelu)."""
        from transformers import CLIPTextConfig
        return CLIPTextConfig(
            vocab_size=self.clip_vocab_size, hidden_size=self.clip_text_width,
            intermediate_size=self.clip_text_intermediate_size or 4 * self.clip_text_width,
            num_hidden_layers=self.clip_text_layers, num_attention_heads=self.clip_text_heads,
            max_position_embeddings=self.clip_context_length, projection_dim=self.clip_embed_dim,
            hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407,
            pad_token_id=1)

    @classmethod
    def from_fixture_metadata(cls, metadata: dict, **overrides: Any) -> "ShapEConfig":
        """Build from a conformance fixture's metadata (values may be JSON text): ``config``,
        ``text_model_config``, ``image_model_config``, ``decoder_config``, ``diffusion_config``,
        ``sampler``, ``hf_clip_vision_config``, ``hf_clip_text_config``."""
        base = _json(metadata["config"])
        vision = _json(metadata["hf_clip_vision_config"])
        text = _json(metadata["hf_clip_text_config"])
        sampler = _json(metadata["sampler"])
        diffusion = _json(metadata["diffusion_config"])
        guidance = sampler.get("guidance_scale", {})
        values = dict(
            clip_image_size=vision["image_size"], clip_patch_size=vision["patch_size"],
            clip_width=vision["hidden_size"], clip_layers=vision["num_hidden_layers"],
            clip_heads=vision["num_attention_heads"],
            clip_intermediate_size=vision["intermediate_size"],
            clip_text_width=text["hidden_size"], clip_text_layers=text["num_hidden_layers"],
            clip_text_heads=text["num_attention_heads"],
            clip_text_intermediate_size=text["intermediate_size"],
            clip_context_length=text["max_position_embeddings"], clip_vocab_size=text["vocab_size"],
            clip_embed_dim=vision["projection_dim"],
            text_model=_json(metadata["text_model_config"]),
            image_model=_json(metadata["image_model_config"]),
            decoder=_json(metadata["decoder_config"]),
            schedule=diffusion["schedule"], timesteps=int(diffusion["timesteps"]),
            mean_type=diffusion["mean_type"],
            karras_steps=int(sampler.get("karras_steps", base.get("karras_steps", 64))),
            sigma_min=float(sampler["sigma_min"]), sigma_max=float(sampler["sigma_max"]),
            rho=float(sampler["rho"]), s_churn=float(sampler["s_churn"]),
            s_tmin=float(sampler["s_tmin"]), s_tmax=float(sampler["s_tmax"]),
            s_noise=float(sampler["s_noise"]), clip_denoised=bool(sampler["clip_denoised"]),
            text_guidance=float(guidance.get("text", base.get("text_guidance", 15.0))),
            image_guidance=float(guidance.get("image", base.get("image_guidance", 3.0))))
        values.update(overrides)
        return cls(**values)

    @classmethod
    def tiny(cls) -> "ShapEConfig":
        """A tiny configuration of the family for random-weight runs (the fixture's sizes:
        CLIP width 32, transformers width 32 x 2 layers, latent 64 x 16, MLP width 16), with
        the published sampler settings and 4 Karras steps."""
        text = json.loads(json.dumps(PUBLISHED_TEXT300M))
        image = json.loads(json.dumps(PUBLISHED_IMAGE300M))
        for model in (text, image):
            model.update(d_latent=1024, latent_ctx=64)
            model["inner"].update(width=32, layers=2, heads=2)
        decoder = json.loads(json.dumps(PUBLISHED_DECODER))
        decoder.update(latent_ctx=64, d_latent=16)
        decoder["renderer"].update(grid_size=32, n_coarse_samples=16, n_fine_samples=32)
        decoder["renderer"]["nerstf"]["d_hidden"] = 16
        return cls(clip_image_size=56, clip_width=32, clip_layers=2, clip_heads=2,
                   clip_text_width=32, clip_text_layers=2, clip_text_heads=2, clip_embed_dim=24,
                   text_model=text, image_model=image, decoder=decoder, karras_steps=4)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
