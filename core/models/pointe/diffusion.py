"""Gaussian diffusion constants (1024 steps, float64) shared by Point-E and Shap-E.

Point-E: epsilon prediction; base40M uses the cosine schedule, the upsampler the linear one
(scaled to 1024 steps); model space = output units * channel_scales + channel_biases (xyz * 2,
RGB / 127.5 - 1). Shap-E: the ``exp`` schedule (abar(s) = exp(-12 s)) and x_start prediction
(the model outputs x0 directly); its latents need no channel scaling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .config import CHANNEL_BIASES, CHANNEL_SCALES


def cosine_betas(num_steps: int, max_beta: float = 0.999) -> np.ndarray:
    """beta_i = min(1 - abar((i+1)/T) / abar(i/T), max_beta), abar(s) = cos^2((s+0.008)/1.008 pi/2)."""
    def abar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    return np.array([min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), max_beta)
                     for i in range(num_steps)], dtype=np.float64)


def linear_betas(num_steps: int) -> np.ndarray:
    """Linear from 1e-4 to 0.02, both scaled by 1000 / T (the DDPM schedule at any T)."""
    scale = 1000.0 / num_steps
    return np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)


def exp_betas(num_steps: int, rate: float = 12.0) -> np.ndarray:
    """Shap-E's ``exp`` schedule: abar(s) = exp(-rate s), so every beta_i = 1 - exp(-rate / T)
    and abar_i = exp(-rate (i + 1) / T)."""
    return np.array([1 - math.exp(-rate * (i + 1) / num_steps) / math.exp(-rate * i / num_steps)
                     for i in range(num_steps)], dtype=np.float64)


def betas_for(schedule: str, num_steps: int) -> np.ndarray:
    if schedule == "cosine":
        return cosine_betas(num_steps)
    if schedule == "linear":
        return linear_betas(num_steps)
    if schedule == "exp":
        return exp_betas(num_steps)
    raise ValueError(f"unknown noise schedule {schedule!r} (cosine, linear or exp)")


MEAN_TYPES = ("epsilon", "x_start")


@dataclass
class GaussianDiffusion:
    """Precomputed float64 ``[T]`` constants of a discrete Gaussian diffusion.

    Attributes mirror the reference names (``betas``, ``alphas_cumprod``, ...,
    ``posterior_mean_coef2``); ``channel_scales`` / ``channel_biases`` map output units to
    model space. ``mean_type``: what the model's first C output channels predict,
    ``epsilon`` (Point-E) or ``x_start`` (Shap-E).
    """

    betas: np.ndarray
    channel_scales: tuple = CHANNEL_SCALES
    channel_biases: tuple = CHANNEL_BIASES
    mean_type: str = "epsilon"

    CONSTANTS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                 "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                 "sqrt_recipm1_alphas_cumprod", "posterior_variance",
                 "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2")

    def __post_init__(self) -> None:
        betas = np.asarray(self.betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a 1-D array in (0, 1]")
        if self.mean_type not in MEAN_TYPES:
            raise ValueError(f"unknown mean type {self.mean_type!r} ({' or '.join(MEAN_TYPES)})")
        self.betas = betas
        self.num_timesteps = len(betas)
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        self.posterior_variance = (betas * (1.0 - self.alphas_cumprod_prev)
                                   / (1.0 - self.alphas_cumprod))
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = (betas * np.sqrt(self.alphas_cumprod_prev)
                                     / (1.0 - self.alphas_cumprod))
        self.posterior_mean_coef2 = ((1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas)
                                     / (1.0 - self.alphas_cumprod))

    @classmethod
    def from_schedule(cls, schedule: str, num_steps: int = 1024, **kwargs) -> "GaussianDiffusion":
        return cls(betas_for(schedule, num_steps), **kwargs)

    def constants(self) -> dict[str, np.ndarray]:
        """Name -> float64 ``[T]`` array, for checks against the reference."""
        return {name: getattr(self, name) for name in self.CONSTANTS}

    # --------------------------------------------------------------- units
    def _channel(self, values: tuple, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=like.device)[:, None].to(like.dtype)

    def scale_channels(self, x: torch.Tensor) -> torch.Tensor:
        """Output units ``[B, C, N]`` -> model space."""
        return x * self._channel(self.channel_scales, x) + self._channel(self.channel_biases, x)

    def unscale_channels(self, x: torch.Tensor) -> torch.Tensor:
        """Model space ``[B, C, N]`` -> output units (xyz in [-0.5, 0.5], RGB in [0, 255])."""
        return (x - self._channel(self.channel_biases, x)) / self._channel(self.channel_scales, x)

    # --------------------------------------------------------------- Karras bridge
    def sigma_to_t(self, sigma: float) -> int:
        """Integer timestep of a Karras noise level (float32 sigma).

        abar = 1/(sigma^2 + 1) in float32; 0 when abar > alphas_cumprod[0], T-1 when
        abar <= alphas_cumprod[T-1], else the linearly interpolated index truncated toward zero.
        """
        sigma = np.float32(sigma)
        abar = float(np.float32(1.0) / (sigma * sigma + np.float32(1.0)))
        ac = self.alphas_cumprod
        if abar > ac[0]:
            return 0
        if abar <= ac[-1]:
            return self.num_timesteps - 1
        # ac is decreasing: find j with ac[j] >= abar > ac[j + 1]
        j = int(np.searchsorted(-ac, -abar, side="right")) - 1
        j = min(max(j, 0), self.num_timesteps - 2)
        lo_x, hi_x = ac[j + 1], ac[j]      # ascending order: (ac[j+1], j+1) -> (ac[j], j)
        slope = (j - (j + 1)) / (hi_x - lo_x)
        return int(slope * (abar - lo_x) + (j + 1))

    def predict_xstart(self, x_in: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                       clip: bool = True) -> torch.Tensor:
        """x0 = sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps, coefficients as float32; clamped to
        [-1, 1] when ``clip``. x_in, eps ``[B, C, N]``, t ``[B]`` int64."""
        index = t.cpu().numpy()
        a = torch.from_numpy(self.sqrt_recip_alphas_cumprod[index]).float().to(x_in.device)
        b = torch.from_numpy(self.sqrt_recipm1_alphas_cumprod[index]).float().to(x_in.device)
        shape = (-1,) + (1,) * (x_in.dim() - 1)
        x0 = a.view(shape).to(x_in.dtype) * x_in - b.view(shape).to(x_in.dtype) * eps
        return x0.clamp(-1, 1) if clip else x0

    def x0_from_output(self, x_in: torch.Tensor, t: torch.Tensor, output: torch.Tensor,
                       clip: bool = True) -> torch.Tensor:
        """x0 from the model's prediction ``output`` (shaped like ``x_in``: its first C channels)
        according to ``mean_type``: epsilon -> :meth:`predict_xstart`; x_start -> the output
        itself. Clamped to [-1, 1] when ``clip``."""
        if self.mean_type == "x_start":
            return output.clamp(-1, 1) if clip else output
        return self.predict_xstart(x_in, t, output, clip)
