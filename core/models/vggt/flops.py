"""Analytic FLOP count of a VGGT forward pass (used by the benchmark and the scaling page).

Counts 2 FLOPs per multiply-accumulate of every matrix product and convolution (linear
layers, attention scores and mixing, convolutions, transposed convolutions); element-wise
work (norms, softmax, activations, RoPE, interpolation) is left out (a few percent).
With S views of h x w patches (T = 1 + R + h*w tokens per view, N = S*T):

- per-view terms (patch embedding, DINOv2, frame blocks, linear parts of global blocks, DPT
  heads) grow linearly in S,
- global attention scores and mixing grow as ``4 * N^2 * C`` per global block: quadratic in S.
"""
from __future__ import annotations

import math
from typing import Iterable

from .config import VGGTConfig


def _block(tokens: int, dim: int, seq: int, batch: int, mlp_ratio: float) -> tuple[float, float]:
    """(linear FLOPs, attention FLOPs) of one transformer block on ``batch`` sequences of
    ``seq`` tokens (``tokens = batch * seq``)."""
    hidden = int(dim * mlp_ratio)
    linear = 2.0 * tokens * (dim * 3 * dim + dim * dim + 2 * dim * hidden)
    attention = 2.0 * 2 * batch * seq * seq * dim
    return linear, attention


def _conv(out_h: int, out_w: int, c_in: int, c_out: int, k: int) -> float:
    return 2.0 * out_h * out_w * c_in * c_out * k * k


def _dpt_fusion_flops(config: VGGTConfig, grid_h: int, grid_w: int, f: int) -> float:
    """FLOPs of a DPT head's reassembly and fusion (projections to refinenet1) on one view,
    with ``f`` fusion features."""
    dim = 2 * config.embed_dim
    oc = config.dpt_out_channels
    sizes = [(4 * grid_h, 4 * grid_w), (2 * grid_h, 2 * grid_w), (grid_h, grid_w),
             (math.ceil(grid_h / 2), math.ceil(grid_w / 2))]
    total = sum(_conv(grid_h, grid_w, dim, c, 1) for c in oc)            # projections
    total += 2.0 * grid_h * grid_w * oc[0] * oc[0] * 16                     # transposed 4x4/4
    total += 2.0 * grid_h * grid_w * oc[1] * oc[1] * 4                      # transposed 2x2/2
    total += _conv(*sizes[3], oc[3], oc[3], 3)                              # 3x3 stride 2
    total += sum(_conv(*sizes[i], oc[i], f, 3) for i in range(4))           # layer*_rn
    rcu = lambda h, w: 2 * _conv(h, w, f, f, 3)                             # noqa: E731
    total += rcu(*sizes[3]) + _conv(*sizes[2], f, f, 1)                     # refinenet4
    total += 2 * rcu(*sizes[2]) + _conv(*sizes[1], f, f, 1)                 # refinenet3
    total += 2 * rcu(*sizes[1]) + _conv(*sizes[0], f, f, 1)                 # refinenet2
    up = (2 * sizes[0][0], 2 * sizes[0][1])
    total += 2 * rcu(*sizes[0]) + _conv(*up, f, f, 1)                       # refinenet1
    return total


def dpt_head_flops(config: VGGTConfig, grid_h: int, grid_w: int, output_dim: int) -> float:
    """FLOPs of one DPT head on one view."""
    f, p = config.dpt_features, config.patch_size
    total = _dpt_fusion_flops(config, grid_h, grid_w, f)
    total += _conv(8 * grid_h, 8 * grid_w, f, f // 2, 3)                    # output_conv1
    h, w = grid_h * p, grid_w * p
    total += _conv(h, w, f // 2, 32, 3) + _conv(h, w, 32, output_dim, 1)    # output_conv2
    return total


def track_head_flops(config: VGGTConfig, num_views: int, height: int, width: int,
                     num_queries: int, iters: int | None = None) -> float:
    """FLOPs of the track head on ``num_views`` views of ``height x width`` pixels tracking
    ``num_queries`` points for ``iters`` iterations (default ``config.track_iters``): the DPT
    feature extractor per view, then per iteration the correlation volumes of every pyramid
    level, the correlation MLP, the update transformer and the feature update; visibility and
    confidence once. Bilinear lookups and embeddings are element-wise (left out)."""
    s, n, p = num_views, num_queries, config.patch_size
    gh, gw = height // p, width // p
    c, d, v = config.track_features, config.track_hidden_size, config.track_num_virtual_tracks
    dim_in, window = 3 * c + 4, (2 * config.track_corr_radius + 1) ** 2
    iters = config.track_iters if iters is None else iters
    extractor = s * (_dpt_fusion_flops(config, gh, gw, c) + _conv(8 * gh, 8 * gw, c, c, 3))
    h, w = gh * p // 2, gw * p // 2
    corr = 0.0
    for _ in range(config.track_corr_levels):
        corr += 2.0 * s * n * c * h * w
        h, w = h // 2, w // 2
    mlp = lambda tokens: 2.0 * tokens * 2 * d * 4 * d                      # noqa: E731

    def attention(queries: int, keys: int, sequences: int, cross: bool) -> float:
        q_tokens, k_tokens = sequences * queries, sequences * keys
        projections = 2.0 * d * d * (q_tokens * 2 + 2 * k_tokens) if cross else \
            2.0 * d * d * 4 * q_tokens
        return projections + 2.0 * 2 * sequences * queries * keys * d + mlp(q_tokens)

    layer = (attention(s, s, n + v, False) + attention(v, n, s, True)
             + attention(v, v, s, False) + attention(n, v, s, True))
    per_iter = (corr + 2.0 * s * n * (window * config.track_corr_levels * d + d * c)
                + 2.0 * s * n * dim_in * d + config.track_depth * layer
                + 2.0 * s * n * d * (c + 2) + 2.0 * s * n * c * c)
    return extractor + iters * per_iter + 2.0 * 2 * s * n * c


def vggt_flops(num_views: int, height: int, width: int, config: VGGTConfig | None = None,
               heads: Iterable[str] = ("camera", "depth", "point"), num_queries: int = 0,
               track_iters: int | None = None) -> dict[str, float]:
    """FLOPs of ``VGGT(config)`` on ``num_views`` images of ``height x width`` pixels, tracking
    ``num_queries`` points (the track head runs only when > 0; see :func:`track_head_flops`).

    Returns:
        dict of components (``patch_embed``, ``dino``, ``frame_blocks``, ``global_linear``,
        ``global_attention``, ``camera_head``, ``depth_head``, ``point_head``, ``track_head``)
        and ``total``.
    """
    config = config or VGGTConfig()
    heads = set(heads)
    s, c, p = num_views, config.embed_dim, config.patch_size
    gh, gw = height // p, width // p
    patches = gh * gw
    t = 1 + config.num_register_tokens + patches
    out = {"patch_embed": 2.0 * s * patches * c * 3 * p * p}
    lin, att = _block(s * t, c, t, s, config.mlp_ratio)
    out["dino"] = config.dino_depth * (lin + att)
    out["frame_blocks"] = config.depth * (lin + att)
    lin_g, att_g = _block(s * t, c, s * t, 1, config.mlp_ratio)
    out["global_linear"] = config.depth * lin_g
    out["global_attention"] = config.depth * att_g
    cam = 0.0
    if "camera" in heads:
        d2 = 2 * c
        lin_c, att_c = _block(s, d2, s, 1, config.mlp_ratio)
        per_iter = (config.camera_trunk_depth * (lin_c + att_c)
                    + 2.0 * s * (9 * d2 + d2 * 3 * d2 + d2 * (d2 // 2) + (d2 // 2) * 9))
        cam = config.camera_iterations * per_iter
    out["camera_head"] = cam
    out["depth_head"] = s * dpt_head_flops(config, gh, gw, 2) if "depth" in heads else 0.0
    out["point_head"] = s * dpt_head_flops(config, gh, gw, 4) if "point" in heads else 0.0
    out["track_head"] = track_head_flops(config, s, height, width, num_queries, track_iters) \
        if num_queries > 0 else 0.0
    out["total"] = sum(out.values())
    return out
