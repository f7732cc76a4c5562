"""The Shap-E pipeline: CLIP conditioning -> latent sampling -> decoder (mesh, renders).

Text mode: CLIP text embedding ``[B, D_clip]`` (unit) conditions ``text300M``; image mode: the
CLIP image grid ``[B, G, T]`` conditions ``image300M``. The latent ``[B, D]`` is sampled with
the Karras Heun sampler shared with Point-E (x_start prediction, ``exp`` schedule, classifier-
free guidance, final x returned) and decoded into the NeRSTF MLP's weights.

Submodules (state dict prefixes): ``clip_vision.model.*`` / ``clip_text.model.*`` (transformers
names), ``text_model.*`` / ``image_model.*`` (``text_cond.pt`` / ``image_cond.pt`` names,
``wrapped.*``), ``decoder.*`` (``vector_decoder.pt`` names).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import numpy as np
import torch
from torch import nn

from core.models.pointe.clip_conditioning import CLIPImageGrid, CLIPTextEmbedding, preprocess
from core.models.pointe.diffusion import GaussianDiffusion
from core.models.pointe.sampler import GuidedDenoiser, NoiseSource, sample_stage

from .config import ShapEConfig
from .decoder import ShapEDecoder
from .modeling_latent import SplitVectorDiffusion

log = logging.getLogger(__name__)

MODES = ("text", "image")


class ShapE(nn.Module):
    """CLIP ViT-L/14 (both towers) + text300M + image300M + the latent decoder.

    ``modes`` limits which halves are built (a text-only model needs no vision tower nor
    image300M): ``("text",)``, ``("image",)`` or both.
    """

    def __init__(self, config: ShapEConfig | None = None, modes: tuple = MODES) -> None:
        super().__init__()
        self.config = config = config or ShapEConfig()
        self.modes = tuple(modes)
        if "text" in self.modes:
            self.clip_text = CLIPTextEmbedding(config.clip_text_config())
            self.text_model = SplitVectorDiffusion(config.text_config())
        if "image" in self.modes:
            self.clip_vision = CLIPImageGrid(config.clip_vision_config())
            self.image_model = SplitVectorDiffusion(config.image_config())
        self.decoder = ShapEDecoder(config.decoder_config())
        self.diffusion = GaussianDiffusion.from_schedule(
            config.schedule, config.timesteps, mean_type=config.mean_type)

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    def latent_model(self, mode: str) -> SplitVectorDiffusion:
        if mode not in self.modes:
            raise ValueError(f"this Shap-E model was built for {', '.join(self.modes)}, not {mode}")
        return self.text_model if mode == "text" else self.image_model

    def parameter_counts(self) -> dict[str, int]:
        parts = {"decoder": self.decoder}
        if "text" in self.modes:
            parts.update(clip_text=self.clip_text, text300M=self.text_model)
        if "image" in self.modes:
            parts.update(clip_vision=self.clip_vision, image300M=self.image_model)
        return {name: sum(p.numel() for p in m.parameters()) for name, m in parts.items()}

    # ------------------------------------------------------------------ conditioning
    @torch.no_grad()
    def condition_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """CLIP tokens ``int [B, 77]`` -> unit text embedding ``float32 [B, D_clip]``."""
        return self.clip_text(tokens.to(self.device)).float()

    @torch.no_grad()
    def condition_images(self, images: list[np.ndarray]) -> torch.Tensor:
        """Images ``uint8 HxWx3`` RGB -> CLIP grid ``float32 [B, G, T]``."""
        pixels = preprocess(images, self.config.clip_image_size).to(self.device)
        return self.clip_vision.grid(pixels).float()

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_latents(self, mode: str, cond: torch.Tensor, noise: NoiseSource | None = None,
                       progress: Callable[[int], None] | None = None, trace: list | None = None,
                       **settings) -> torch.Tensor:
        """Latents ``[B, D]`` (the final x of the Heun loop) for conditioning ``cond`` (batch B).

        ``progress(calls)``: called after every denoiser call (it may raise to stop).
        ``settings``: :class:`ShapEConfig` sampler overrides (``karras_steps``, ``s_churn``,
        ``text_guidance``/``image_guidance``, ``guidance_scale`` for the mode's...).
        """
        guidance = settings.pop("guidance_scale", None)
        config = dataclasses.replace(self.config, **settings) if settings else self.config
        guidance = config.guidance(mode) if guidance is None else float(guidance)
        model = self.latent_model(mode)
        denoiser = GuidedDenoiser(model, self.diffusion, {"cond": cond.to(self.device)}, guidance,
                                  config.clip_denoised, trace=trace, on_call=progress)
        shape = (cond.shape[0], model.config.d_latent)
        return sample_stage(denoiser, shape, noise or NoiseSource(0), config.karras_steps,
                            config.sigma_min, config.sigma_max, config.rho, config.s_churn,
                            config.s_tmin, config.s_tmax, config.s_noise, device=self.device,
                            return_final_x=True)

    def denoiser_calls(self, steps: int | None = None) -> int:
        """Model calls of one sampling run: 2S - 1 (the last step is an Euler step)."""
        return 2 * int(steps or self.config.karras_steps) - 1


def build_random(config: ShapEConfig, seed: int = 0, modes: tuple = MODES) -> ShapE:
    """A :class:`ShapE` with seeded random weights (PyTorch default init), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ShapE(config, modes)
    return model.eval()
