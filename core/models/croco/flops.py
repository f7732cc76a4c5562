"""Analytic FLOP counts of the CroCo building blocks (encoder blocks, decoder blocks, DPT head).

Counts 2 FLOPs per multiply-accumulate of every matrix product and convolution (linear layers,
attention scores and mixing, convolutions, transposed convolutions), exactly what
``torch.utils.flop_counter.FlopCounterMode`` counts with math attention; element-wise work
(LayerNorm, softmax, GELU, RoPE, bilinear upsampling, activations) is left out. ``n`` is a
number of tokens per sequence, ``c`` a width, grids are in patches.
"""
from __future__ import annotations

import math


def conv(out_h: int, out_w: int, c_in: int, c_out: int, k: int) -> float:
    """A ``k x k`` convolution producing ``out_h x out_w`` pixels of ``c_out`` channels."""
    return 2.0 * out_h * out_w * c_in * c_out * k * k


def encoder_block(n: int, c: int, hidden: int) -> float:
    """One pre-norm ViT block (qkv, proj, two MLP layers, attention) on one sequence of ``n`` tokens."""
    return 2.0 * n * (4 * c * c + 2 * c * hidden) + 4.0 * n * n * c


def decoder_block(n_query: int, n_other: int, c: int, hidden: int) -> float:
    """One CroCo decoder block (self-attention, cross-attention to ``n_other`` tokens, MLP) on one
    sequence of ``n_query`` tokens."""
    self_attention = 2.0 * n_query * 4 * c * c + 4.0 * n_query * n_query * c
    cross = 2.0 * (2 * n_query + 2 * n_other) * c * c + 4.0 * n_query * n_other * c
    return self_attention + cross + 2.0 * n_query * 2 * c * hidden


def patch_embed(n: int, c: int, patch: int) -> float:
    """The ``patch x patch`` stride-``patch`` RGB convolution giving ``n`` tokens of width ``c``."""
    return 2.0 * n * c * 3 * patch * patch


def dpt_head(grid_h: int, grid_w: int, dim_tokens: list[int], layer_dims: list[int],
             feature_dim: int, last_dim: int, num_channels: int) -> float:
    """FLOPs of one :class:`core.models.croco.dpt.DPTAdapter` pass on one image of
    ``grid_h x grid_w`` patches (16 pixels each): the four reassembly branches, the ``layer_rn``
    projections, the four fusion blocks and the output convolutions."""
    gh, gw, d, f = grid_h, grid_w, layer_dims, feature_dim
    half = (math.ceil(gh / 2), math.ceil(gw / 2))
    sizes = [(4 * gh, 4 * gw), (2 * gh, 2 * gw), (gh, gw), half]
    total = sum(conv(gh, gw, dim_tokens[i], d[i], 1) for i in range(4))   # 1x1 projections
    total += 2.0 * gh * gw * d[0] * d[0] * 16                               # transposed 4x4/4
    total += 2.0 * gh * gw * d[1] * d[1] * 4                                # transposed 2x2/2
    total += conv(*half, d[3], d[3], 3)                                     # 3x3 stride 2
    total += sum(conv(*sizes[i], d[i], f, 3) for i in range(4))             # layer_rn (no bias)
    rcu = lambda h, w: 2 * conv(h, w, f, f, 3)                              # noqa: E731
    total += rcu(*half) + conv(2 * half[0], 2 * half[1], f, f, 1)           # refinenet4 (no skip)
    for i in (2, 1, 0):                                                     # refinenet3, 2, 1
        h, w = sizes[i]
        total += 2 * rcu(h, w) + conv(2 * h, 2 * w, f, f, 1)
    h, w = 8 * gh, 8 * gw
    total += conv(h, w, f, f // 2, 3)                                       # head conv 1
    total += conv(2 * h, 2 * w, f // 2, last_dim, 3) + conv(2 * h, 2 * w, last_dim, num_channels, 1)
    return total
