"""Analytic FLOP count of a DA3 forward pass (benchmark and scaling study).

2 FLOPs per multiply-accumulate of every matrix product and convolution (linear layers,
attention scores and mixing, convolutions, transposed convolutions); element-wise work (norms,
softmax, activations, RoPE, interpolation) and the ray decoder's small SVDs are left out. With S
views of h x w patches (P = h·w, T = 1 + P tokens per view):

- per-view terms (patch embedding, per-view blocks, the linear parts of all-view blocks, the
  DualDPT head) grow linearly in S;
- all-view attention costs ``4 (S·T)² D`` per all-view block: quadratic in S.

:func:`tests.test_da3_method` checks the total against ``torch.utils.flop_counter`` on the tiny
configuration.
"""
from __future__ import annotations

import math

from .config import DA3Config


def _linear_block(tokens: int, dim: int, mlp_ratio: float) -> float:
    hidden = int(dim * mlp_ratio)
    return 2.0 * tokens * (dim * 3 * dim + dim * dim + 2 * dim * hidden)


def _conv(n_pixels: int, c_in: int, c_out: int, k: int) -> float:
    return 2.0 * n_pixels * c_in * c_out * k * k


def head_flops(config: DA3Config, grid_h: int, grid_w: int, height: int, width: int) -> float:
    """FLOPs of the DualDPT head on one view (both fusion chains, depth and finest ray output)."""
    oc, f, d2 = config.head_out_channels, config.head_features, config.head_dim_in
    p = grid_h * grid_w
    sizes = [16 * p, 4 * p, p, math.ceil(grid_h / 2) * math.ceil(grid_w / 2)]
    total = sum(_conv(p, d2, c, 1) for c in oc)                       # projects
    total += 2.0 * p * oc[0] * oc[0] * 16 + 2.0 * p * oc[1] * oc[1] * 4  # transposed convs
    total += _conv(sizes[3], oc[3], oc[3], 3)                          # stride-2 conv
    total += sum(_conv(sizes[k], oc[k], f, 3) for k in range(4))       # layer*_rn
    rcu = lambda n: 2 * _conv(n, f, f, 3)                              # noqa: E731
    chain = (rcu(sizes[3]) + _conv(sizes[2], f, f, 1)                  # refinenet4
             + 2 * rcu(sizes[2]) + _conv(sizes[1], f, f, 1)            # refinenet3
             + 2 * rcu(sizes[1]) + _conv(sizes[0], f, f, 1)            # refinenet2
             + 2 * rcu(sizes[0]) + _conv(4 * sizes[0], f, f, 1))       # refinenet1
    total += 2 * chain
    fine = 4 * sizes[0]                                                # 8h x 8w
    half = f // 2
    total += _conv(fine, f, half, 3)                                   # output_conv1
    total += _conv(height * width, half, 32, 3) + _conv(height * width, 32, 2, 1)
    total += 5 * _conv(fine, f, half, 3)                               # output_conv1_aux
    total += _conv(fine, half, 32, 3) + _conv(fine, 32, 7, 1)          # output_conv2_aux
    return total


def da3_flops(num_views: int, height: int, width: int, config: DA3Config | None = None,
              with_cameras: bool = False) -> dict[str, float]:
    """FLOPs of ``DepthAnything3(config)`` on ``num_views`` images of ``height x width`` pixels
    (``with_cameras``: known cameras through the camera encoder).

    Returns:
        dict of components (``patch_embed``, ``local_blocks``, ``global_linear``,
        ``global_attention``, ``head``, ``camera_decoder``, ``camera_encoder``) and ``total``.
    """
    config = config or DA3Config()
    s, d, ps = num_views, config.embed_dim, config.patch_size
    gh, gw = height // ps, width // ps
    p = gh * gw
    t = 1 + p
    alt = config.alt_start
    n_global = sum(1 for i in range(config.depth) if 0 <= alt <= i and i % 2 == 1)
    n_local = config.depth - n_global
    linear = _linear_block(s * t, d, config.mlp_ratio)
    out = {"patch_embed": 2.0 * s * p * d * 3 * ps * ps,
           "local_blocks": n_local * (linear + 4.0 * s * t * t * d),
           "global_linear": n_global * linear,
           "global_attention": n_global * 4.0 * (s * t) ** 2 * d,
           "head": s * head_flops(config, gh, gw, height, width)}
    d2 = config.head_dim_in
    out["camera_decoder"] = 2.0 * s * (2 * d2 * d2 + d2 * 9)
    encoder = 0.0
    if with_cameras:
        encoder = 2.0 * s * (9 * (d // 2) + (d // 2) * d)
        encoder += config.cam_enc_trunk_depth * (_linear_block(s, d, config.mlp_ratio)
                                                 + 4.0 * s * s * d)
    out["camera_encoder"] = encoder
    out["total"] = sum(out.values())
    return out
