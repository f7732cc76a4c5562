"""Analytic FLOP count of one Point-E denoiser call (base40M or the upsampler).

Counts 2 FLOPs per multiply-accumulate of every matrix product (linear layers, attention scores
and mixing), as ``torch.utils.flop_counter.FlopCounterMode`` does with math attention; the
element-wise work (LayerNorm, GELU, softmax, the sinusoidal time embedding) is left out. A
sampling stage costs this per model call (Heun: 2·steps − 1 calls, batch 2 with guidance); the
CLIP conditioning runs once per picture and is not included.
"""
from __future__ import annotations

from .config import PointDiffusionTransformerConfig


def denoiser_flops(config: PointDiffusionTransformerConfig, batch: int, grid_tokens: int,
                   points: int | None = None, low_res_points: int | None = None) -> dict[str, float]:
    """FLOPs of one forward of the denoiser ``config`` describes on ``batch`` samples.

    Args:
        grid_tokens: CLIP grid tokens T (256 for ViT-L/14 at 224 pixels).
        points: points denoised N (default ``config.n_ctx``).
        low_res_points: conditioning points M of the upsampler (default ``config.cond_ctx``;
            ignored for the base model).

    Returns:
        dict ``embeddings`` (input, time MLP, CLIP grid and low-res point projections),
        ``backbone_linear``, ``backbone_attention``, ``output`` and ``total``.
    """
    c = config
    w, b = c.width, batch
    n = c.n_ctx if points is None else points
    m = (c.cond_ctx if low_res_points is None else low_res_points) if c.is_upsampler else 0
    tokens = (1 if c.time_token_cond else 0) + grid_tokens + m + n
    embeddings = 2.0 * b * (n * c.input_channels * w + 2 * w * 4 * w + grid_tokens * c.clip_grid_dim * w
                            + m * c.input_channels * w)
    out = {"embeddings": embeddings,
           "backbone_linear": c.layers * 2.0 * b * tokens * 12 * w * w,
           "backbone_attention": c.layers * 4.0 * b * tokens * tokens * w,
           "output": 2.0 * b * n * w * c.output_channels}
    out["total"] = sum(out.values())
    return out
