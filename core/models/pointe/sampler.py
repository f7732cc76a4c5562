"""Karras Heun sampling with classifier-free guidance, shared by Point-E and Shap-E.

The sampler works in model space on ``x [B, C, ...]`` (Point-E: points ``[B, C, N]``; Shap-E:
flat latents ``[B, D]``). The denoiser ``D(x, sigma)`` runs the model once on the doubled batch
``[x; x]`` with conditioning ``[cond; zeros]``, turns the prediction (epsilon or x_start, per
the diffusion's ``mean_type``) into a clamped x0 for each half and guides after the clamp:
``D = x0_uncond + g (x0_cond - x0_uncond)``. Point-E's stage result is the last D, Shap-E's
the final x of the Heun loop (``sample_stage(..., return_final_x=True)``).

Noise: every standard normal is drawn through a :class:`NoiseSource` (x_T first, then one eps
per Heun step, even when the churn is 0), so a run can be replayed from given tensors.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from .diffusion import GaussianDiffusion

log = logging.getLogger(__name__)


class NoiseSource:
    """Standard normal draws, either replayed from given tensors or from a seeded generator.

    Args:
        seed: seed of a CPU ``torch.Generator`` (draws are made on CPU then moved, so a seed
            gives the same samples on every device).
        replay: tensors returned in order instead of drawing; shapes must match the requests.
    """

    def __init__(self, seed: int | None = 0, replay: Iterable[torch.Tensor] | None = None) -> None:
        self._replay = list(replay) if replay is not None else None
        self._generator = torch.Generator().manual_seed(int(seed or 0))
        self.draws = 0

    @classmethod
    def replaying(cls, tensors: Iterable[torch.Tensor]) -> "NoiseSource":
        return cls(replay=tensors)

    def randn(self, shape: tuple, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        if self._replay is not None:
            if self.draws >= len(self._replay):
                raise RuntimeError(f"noise replay exhausted after {self.draws} draws")
            value = self._replay[self.draws]
            if tuple(value.shape) != shape:
                raise RuntimeError(f"noise replay draw {self.draws}: expected shape {list(shape)}, "
                                   f"got {list(value.shape)}")
        else:
            value = torch.randn(shape, generator=self._generator, dtype=torch.float32)
        self.draws += 1
        return value.to(device=device, dtype=dtype)

    @property
    def remaining(self) -> int | None:
        return None if self._replay is None else len(self._replay) - self.draws


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Karras et al. (2022) noise levels, float32 ``[steps + 1]`` (last = 0)."""
    if steps < 1:
        raise ValueError("karras_steps must be at least 1")
    ramp = torch.linspace(0, 1, steps)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(device)


@dataclass
class DenoiserCall:
    """One record of a denoiser call (kept only when tracing)."""

    x: torch.Tensor            # [B, C, N] (Shap-E [B, D]) model space
    sigma: torch.Tensor        # [B]
    t: torch.Tensor            # [2B] int64 (or [B] without guidance)
    model_out: torch.Tensor    # [2B, 2C, N] (Shap-E [2B, 2D])
    denoised: torch.Tensor     # like x


@dataclass
class GuidedDenoiser:
    """D(x, sigma) of one stage.

    Args:
        model: callable ``model(x_in, t, **cond) -> [B', 2C, N]``.
        diffusion: the stage's :class:`GaussianDiffusion`.
        cond: conditioning tensors (batch B) passed by keyword (``grid``, ``low_res``...).
        guidance_scale: g; 0 or 1 means no guidance (a single conditional pass).
        clip_denoised: clamp x0 to [-1, 1] before guidance.
        trace: when a list, every call's :class:`DenoiserCall` is appended.
        on_call: ``on_call(calls)`` after every model call (progress per call; may raise to stop).
    """

    model: Callable
    diffusion: GaussianDiffusion
    cond: dict
    guidance_scale: float = 3.0
    clip_denoised: bool = True
    trace: list | None = None
    on_call: Callable[[int], None] | None = None
    calls: int = 0
    _cond_doubled: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def guided(self) -> bool:
        return self.guidance_scale not in (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.guided:
            self._cond_doubled = {k: torch.cat([v, torch.zeros_like(v)], dim=0)
                                  for k, v in self.cond.items()}
        else:
            self._cond_doubled = dict(self.cond)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x ``[B, C, ...]`` model space, sigma ``[B]`` float32 -> denoised, shaped like x."""
        b, c = x.shape[:2]
        if self.guided:
            x_all, sigma_all = torch.cat([x, x], dim=0), torch.cat([sigma, sigma], dim=0)
        else:
            x_all, sigma_all = x, sigma
        t = torch.tensor([self.diffusion.sigma_to_t(s) for s in sigma_all.float().cpu().numpy()],
                         dtype=torch.long, device=x.device)
        c_in = (1.0 / (sigma_all ** 2 + 1) ** 0.5).to(x.dtype).view((-1,) + (1,) * (x.dim() - 1))
        x_in = x_all * c_in
        model_out = self.model(x_in, t, **self._cond_doubled)
        x0 = self.diffusion.x0_from_output(x_in, t, model_out[:, :c], clip=self.clip_denoised)
        if self.guided:
            cond_x0, uncond_x0 = x0[:b], x0[b:]
            denoised = uncond_x0 + self.guidance_scale * (cond_x0 - uncond_x0)
        else:
            denoised = x0
        self.calls += 1
        if self.trace is not None:
            self.trace.append(DenoiserCall(x.detach().clone(), sigma.detach().clone(), t.detach(),
                                           model_out.detach().clone(), denoised.detach().clone()))
        if self.on_call is not None:
            self.on_call(self.calls)
        return denoised


def heun_gamma(s_churn: float, steps: int) -> float:
    """Churn factor gamma = min(s_churn / S, sqrt(2) - 1)."""
    return min(s_churn / steps, 2 ** 0.5 - 1)


@dataclass
class HeunStep:
    """Intermediate values of one Heun step (for conformance checks)."""

    sigma_hat: torch.Tensor
    x_hat: torch.Tensor
    denoised_1: torch.Tensor
    x_2: torch.Tensor | None
    denoised_2: torch.Tensor | None
    x_out: torch.Tensor


def heun_step(denoiser: Callable, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
              gamma: float, eps: torch.Tensor) -> HeunStep:
    """One stochastic Heun step from ``sigma`` to ``sigma_next`` (float32 0-d tensors).

    x_hat = x + eps sqrt(sigma_hat^2 - sigma^2) when gamma > 0, sigma_hat = sigma (1 + gamma);
    Euler when sigma_next = 0, else Heun's second-order correction.
    """
    ones = x.new_ones(x.shape[0])
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        x = x + eps * (sigma_hat ** 2 - sigma ** 2) ** 0.5
    denoised = denoiser(x, sigma_hat * ones)
    d = (x - denoised) / sigma_hat
    dt = sigma_next - sigma_hat
    if float(sigma_next) == 0.0:
        return HeunStep(sigma_hat, x, denoised, None, None, x + d * dt)
    x_2 = x + d * dt
    denoised_2 = denoiser(x_2, sigma_next * ones)
    d_2 = (x_2 - denoised_2) / sigma_next
    return HeunStep(sigma_hat, x, denoised, x_2, denoised_2, x + (d + d_2) / 2 * dt)


def sample_stage(denoiser: Callable, shape: tuple, noise: NoiseSource, steps: int,
                 sigma_min: float, sigma_max: float, rho: float = 7.0, s_churn: float = 0.0,
                 s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 progress: Callable[[int, int], None] | None = None,
                 return_final_x: bool = False) -> torch.Tensor:
    """Karras Heun sampling; returns the **last denoised** x0 ``shape`` in model space (Point-E),
    or with ``return_final_x`` the final x of the loop (Shap-E; the last step, to sigma = 0,
    is an Euler step, so it equals the last D up to rounding).

    Draws x_T (``shape``) then one eps per step from ``noise``. ``progress(i + 1, steps)`` is
    called after each step (it may raise to stop).
    """
    sigmas = karras_sigmas(steps, sigma_min, sigma_max, rho, device=device)
    x = noise.randn(shape, device=device, dtype=dtype) * sigma_max
    denoised = None
    for i in range(steps):
        sigma = sigmas[i]
        gamma = heun_gamma(s_churn, steps) if s_tmin <= float(sigma) <= s_tmax else 0.0
        eps = noise.randn(shape, device=device, dtype=dtype) * s_noise
        step = heun_step(denoiser, x, sigma, sigmas[i + 1], gamma, eps)
        x = step.x_out
        denoised = step.denoised_2 if step.denoised_2 is not None else step.denoised_1
        if progress is not None:
            progress(i + 1, steps)
    return x if return_final_x else denoised
