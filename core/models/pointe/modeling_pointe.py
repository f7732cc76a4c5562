"""The Point-E image -> coloured point cloud pipeline: CLIP grid, base40M, upsample, samplers.

Output frame: Point-E's own object-centred frame (xyz roughly in [-0.5, 0.5]); it is not tied
to any input camera.

Stage 1 samples ``base_points`` points conditioned on the CLIP grid; stage 2 samples
``up_points`` more conditioned on the grid and the stage-1 points (output units); the result is
both concatenated, ``[B, 6, base_points + up_points]`` in output units (xyz, RGB 0..255).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .clip_conditioning import CLIPImageGrid, preprocess
from .config import PointEConfig
from .diffusion import GaussianDiffusion
from .modeling_transformer import (CLIPImageGridPointDiffusionTransformer,
                                   CLIPImageGridUpsamplePointDiffusionTransformer)
from .sampler import GuidedDenoiser, NoiseSource, sample_stage

log = logging.getLogger(__name__)

MULTIVIEW_MODES = ("fuse-samples", "average-conditioning", "concat-conditioning")


def combine_views(grid: torch.Tensor, mode: str) -> torch.Tensor:
    """Conditioning for several views of one object.

    Args:
        grid: ``[V, G, T]`` per-view CLIP grids.
        mode: ``fuse-samples`` (keep one conditioning per view: ``[V, G, T]``, one sample each),
            ``average-conditioning`` (mean over views: ``[1, G, T]``) or
            ``concat-conditioning`` (all views' tokens in one sequence: ``[1, G, V*T]``; the
            transformers have no position embedding, so any token count works).
    """
    if mode == "fuse-samples":
        return grid
    if mode == "average-conditioning":
        return grid.mean(dim=0, keepdim=True)
    if mode == "concat-conditioning":
        v, g, t = grid.shape
        return grid.permute(1, 0, 2).reshape(1, g, v * t)
    raise ValueError(f"unknown multiview mode {mode!r}; choose one of {', '.join(MULTIVIEW_MODES)}")


@dataclass(frozen=True, eq=False)
class PointEOutput:
    """Both stages' samples, float32, in output units: channels (x, y, z, R, G, B), xyz in
    Point-E's object-centred frame (roughly [-0.5, 0.5], not tied to any camera), RGB on the
    0..255 scale (not clamped; see :func:`samples_to_points`).

    Attributes:
        base: ``[B, 6, base_points]`` stage 1 (base model).
        upsampled: ``[B, 6, up_points]`` stage 2 (upsampler, conditioned on ``base``).
    """

    base: torch.Tensor
    upsampled: torch.Tensor

    @property
    def samples(self) -> torch.Tensor:
        """The cloud: ``[B, 6, base_points + up_points]``, ``base`` then ``upsampled``."""
        return torch.cat([self.base, self.upsampled], dim=-1)


def samples_to_points(samples: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``[B, 6, N]`` output units -> (coords ``float32 [B, N, 3]``, colours ``uint8 [B, N, 3]``,
    round(clamp(RGB, 0, 255)))."""
    samples = samples.detach().float().cpu()
    coords = samples[:, :3].permute(0, 2, 1).contiguous().numpy()
    colors = samples[:, 3:6].clamp(0, 255).round().permute(0, 2, 1).to(torch.uint8).numpy()
    return coords.astype(np.float32), colors


class PointE(nn.Module):
    """CLIP ViT-L/14 (transformers) + base40M + upsample, with their diffusions.

    Submodules (state dict prefixes): ``clip.model.*`` (transformers names), ``base.*`` and
    ``upsampler.*`` (the published checkpoints' names).
    """

    def __init__(self, config: PointEConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or PointEConfig()
        self.clip = CLIPImageGrid(config.clip_vision_config())
        self.base = CLIPImageGridPointDiffusionTransformer(config.base_transformer_config())
        self.upsampler = CLIPImageGridUpsamplePointDiffusionTransformer(
            config.upsample_transformer_config())
        kwargs = {"channel_scales": tuple(config.channel_scales),
                  "channel_biases": tuple(config.channel_biases)}
        self.base_diffusion = GaussianDiffusion.from_schedule(config.base_schedule,
                                                              config.timesteps, **kwargs)
        self.upsample_diffusion = GaussianDiffusion.from_schedule(config.upsample_schedule,
                                                                  config.timesteps, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.base.parameters()).device

    def parameter_counts(self) -> dict[str, int]:
        return {name: sum(p.numel() for p in module.parameters())
                for name, module in (("clip", self.clip), ("base", self.base),
                                     ("upsample", self.upsampler))}

    # ------------------------------------------------------------------ conditioning
    @torch.no_grad()
    def condition(self, images: list[np.ndarray]) -> torch.Tensor:
        """Images (``uint8 HxWx3`` RGB) -> CLIP grid ``float32 [B, G, T]``."""
        pixels = preprocess(images, self.config.clip_image_size).to(self.device)
        return self.clip.grid(pixels).float()

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_stage(self, stage: int, grid: torch.Tensor, noise: NoiseSource,
                     low_res: torch.Tensor | None = None,
                     progress: Callable[[int, int], None] | None = None,
                     trace: list | None = None,
                     config: PointEConfig | None = None) -> torch.Tensor:
        """Sample one stage; returns its result in output units ``[B, 6, N_stage]``.

        Args:
            stage: 0 = base (``grid``), 1 = upsample (``grid`` and ``low_res [B, 6, M]`` in
                output units).
            trace: list receiving every denoiser call (model-space tensors).
            config: sampler settings to use instead of ``self.config`` (e.g. fewer Karras
                steps); the model sizes must be the same.
        """
        settings = (config or self.config).stage(stage)
        b = grid.shape[0]
        if stage == 0:
            model, diffusion, cond = self.base, self.base_diffusion, {"grid": grid}
        else:
            if low_res is None:
                raise ValueError("the upsample stage needs low_res points")
            model, diffusion = self.upsampler, self.upsample_diffusion
            cond = {"grid": grid, "low_res": low_res}
        denoiser = GuidedDenoiser(model, diffusion, cond, settings["guidance_scale"],
                                  settings["clip_denoised"], trace=trace)
        shape = (b, self.config.base_transformer_config().input_channels, settings["num_points"])
        result = sample_stage(
            denoiser, shape, noise, settings["karras_steps"], settings["sigma_min"],
            settings["sigma_max"], settings["rho"], settings["s_churn"], settings["s_tmin"],
            settings["s_tmax"], settings["s_noise"], device=grid.device, progress=progress)
        return diffusion.unscale_channels(result)

    @torch.no_grad()
    def sample_from_grid(self, grid: torch.Tensor, noise: NoiseSource | None = None,
                         progress=None, traces: tuple[list, list] | None = None,
                         **settings) -> PointEOutput:
        """Both stages from a conditioning grid ``[B, G, T]`` -> :class:`PointEOutput`.

        ``progress``: a :class:`core.progress.Progress` (or ``callable(fraction, message)``),
        updated after every Karras step; a stop request raises there and nothing is returned.
        ``settings``: sampler overrides (``karras_steps``, ``guidance_scale``, ``s_churn``...,
        :class:`PointEConfig` field names).
        """
        config = dataclasses.replace(self.config, **settings) if settings else self.config
        noise = noise or NoiseSource(0)
        grid = grid.to(self.device, torch.float32)
        steps = [config.stage(i)["karras_steps"] for i in (0, 1)]
        # progress share proportional to the model calls of each stage, weighted by tokens
        weights = [steps[0] * (1 + grid.shape[2] + self.config.base_points),
                   steps[1] * (1 + grid.shape[2] + self.config.num_points)]
        split = weights[0] / sum(weights)

        def reporter(lo: float, hi: float, name: str):
            if progress is None:
                return None

            def report(i: int, total: int) -> None:
                progress(lo + (hi - lo) * i / total, f"Point-E {name}: Karras step {i}/{total}")
            return report

        base = self.sample_stage(0, grid, noise, progress=reporter(0.0, split, "base"),
                                 trace=None if traces is None else traces[0], config=config)
        up = self.sample_stage(1, grid, noise, low_res=base,
                               progress=reporter(split, 1.0, "upsample"),
                               trace=None if traces is None else traces[1], config=config)
        return PointEOutput(base=base, upsampled=up)

    @torch.no_grad()
    def generate(self, images: list[np.ndarray], noise: NoiseSource | None = None,
                 multiview: str = "fuse-samples", progress=None, **settings) -> PointEOutput:
        """Images -> :class:`PointEOutput` (``.samples [B, 6, N]`` in output units).

        With one image B = 1. With V images: ``fuse-samples`` gives B = V (one cloud per
        view), the ``*-conditioning`` modes give B = 1 (see :func:`combine_views`).
        """
        if not images:
            raise ValueError("Point-E needs at least one image")
        grid = combine_views(self.condition(images), multiview)
        return self.sample_from_grid(grid, noise, progress, **settings)


def build_random(config: PointEConfig, seed: int = 0) -> PointE:
    """A :class:`PointE` with seeded random weights (PyTorch default init), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PointE(config)
    return model.eval()
