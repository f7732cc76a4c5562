"""Point-E point diffusion transformers conditioned on a CLIP image grid.

Parameter names are the published checkpoints' (``base_40m.pt``, ``upsample_40m.pt``), so
``load_state_dict(strict=True)`` works on the real files.

Tensors (channels first, as the reference):
    x: ``[B, C, N]`` noisy points in model space, channels xyz then RGB (C = 6).
    t: ``[B]`` int64 diffusion timesteps in [0, 1023].
    grid: ``[B, G, T]`` CLIP grid (G = CLIP width, T = 256 tokens for ViT-L/14 at 224 px; any
        T works since there is no position embedding, e.g. several views' tokens concatenated).
    low_res: ``[B, C, M]`` upsampler conditioning points in *output units* (xyz in [-0.5, 0.5],
        RGB in [0, 255]).
    output: ``[B, 2C, N]``: epsilon (channels 0..C-1) and learned-range variance values.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import PointDiffusionTransformerConfig


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[B, dim]``: [cos, sin] of t * exp(-ln(max_period) k / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class MLP(nn.Module):
    """Linear(W, 4W) - exact GELU - Linear(4W, W), named ``c_fc`` / ``c_proj``."""

    def __init__(self, width: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or 4 * width
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


ATTENTION_IMPLEMENTATIONS = ("sdpa", "reference")


class MultiheadAttention(nn.Module):
    """Self-attention with the reference's head-interleaved qkv layout.

    ``c_qkv`` gives ``[B, T, 3W]`` which is viewed as ``[B, T, heads, 3d]`` and split per head
    into q, k, v (d = W / heads); scores are scaled by d^(-1/2) (the reference scales q and k by
    d^(-1/4) each) and the softmax runs in float32.

    ``implementation``: ``sdpa`` (torch's fused kernel; fastest, agrees with the reference to
    ~1e-7 per forward) or ``reference`` (the reference's operation order, bit-identical on CPU
    for the fixture; computed over query blocks so a score block stays under
    ``max_scores_bytes``).
    """

    max_scores_bytes = 256 * 2 ** 20

    def __init__(self, width: int, heads: int, implementation: str = "sdpa") -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        if implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"unknown attention implementation {implementation!r}")
        self.heads = heads
        self.implementation = implementation
        self.c_qkv = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        d = w // self.heads
        qkv = self.c_qkv(x).view(b, n, self.heads, 3 * d)
        q, k, v = qkv.split(d, dim=-1)                       # each [B, T, heads, d]
        if self.implementation == "sdpa" and x.dtype in (torch.float32, torch.float64):
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                 v.transpose(1, 2), scale=d ** -0.5)
            return self.c_proj(out.transpose(1, 2).reshape(b, n, w))
        scale = 1 / math.sqrt(math.sqrt(d))
        q, k = q * scale, k * scale
        block = max(1, int(self.max_scores_bytes // (4 * b * self.heads * n)))
        outs = []
        for start in range(0, n, block):
            scores = torch.einsum("bthc,bshc->bhts", q[:, start:start + block], k)
            weight = torch.softmax(scores.float(), dim=-1).type(scores.dtype)
            outs.append(torch.einsum("bhts,bshc->bthc", weight, v))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        return self.c_proj(out.reshape(b, n, w))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, attention: str = "sdpa") -> None:
        super().__init__()
        self.attn = MultiheadAttention(width, heads, attention)
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = MLP(width)
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of residual blocks, named ``resblocks.<i>``."""

    def __init__(self, width: int, layers: int, heads: int, attention: str = "sdpa") -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, attention)
                                       for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class CLIPImageGridPointDiffusionTransformer(nn.Module):
    """base40M: denoises N points conditioned on a CLIP image grid.

    Token sequence: [time token, grid tokens (T), point tokens (N)], no position embedding;
    ``ln_pre`` -> blocks -> ``ln_post``; only the last N tokens go through ``output_proj``.
    """

    def __init__(self, config: PointDiffusionTransformerConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or PointDiffusionTransformerConfig()
        w = config.width
        self.time_embed = MLP(w)
        self.ln_pre = nn.LayerNorm(w, eps=1e-5)
        self.backbone = Transformer(w, config.layers, config.heads, config.attention)
        self.ln_post = nn.LayerNorm(w, eps=1e-5)
        self.input_proj = nn.Linear(config.input_channels, w)
        self.output_proj = nn.Linear(w, config.output_channels)
        self.clip_embed = nn.Sequential(nn.LayerNorm(config.clip_grid_dim, eps=1e-5),
                                        nn.Linear(config.clip_grid_dim, w))

    def _embed_time(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.time_embed(timestep_embedding(t, self.config.width).to(dtype))  # [B, W]

    def _condition_tokens(self, grid: torch.Tensor) -> torch.Tensor:
        """``[B, G, T]`` grid -> ``[B, T, W]`` tokens (LayerNorm + Linear)."""
        return self.clip_embed(grid.permute(0, 2, 1))

    def _run(self, points: torch.Tensor, t: torch.Tensor, prefix: list[torch.Tensor]) -> torch.Tensor:
        """Shared body: points ``[B, C, N]``, prefix tokens list of ``[B, *, W]``."""
        h = self.input_proj(points.permute(0, 2, 1))                 # [B, N, W]
        t_embed = self._embed_time(t, h.dtype)
        if self.config.time_token_cond:
            tokens = [t_embed[:, None]] + prefix
        else:
            tokens = prefix
            h = h + t_embed[:, None]
        h = torch.cat(tokens + [h], dim=1)
        h = self.ln_post(self.backbone(self.ln_pre(h)))
        h = h[:, h.shape[1] - points.shape[2]:]                       # point tokens only
        return self.output_proj(h).permute(0, 2, 1)                  # [B, 2C, N]

    def set_attention(self, implementation: str) -> None:
        """Switch every block's attention (``sdpa`` or ``reference``); weights unchanged."""
        for block in self.backbone.resblocks:
            block.attn.implementation = implementation
        self.config.attention = implementation

    def forward(self, x: torch.Tensor, t: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """x ``[B, C, N]`` model space, t ``[B]`` int64, grid ``[B, G, T]`` -> ``[B, 2C, N]``."""
        return self._run(x, t, [self._condition_tokens(grid.to(x.dtype))])


class CLIPImageGridUpsamplePointDiffusionTransformer(CLIPImageGridPointDiffusionTransformer):
    """upsample: denoises N new points given the grid and M low-resolution points.

    Token sequence: [time, grid tokens, low-res tokens (M), point tokens (N)]. Low-res tokens =
    ``cond_point_proj(low_res * channel_scales + channel_biases)`` (output units -> model space).
    """

    def __init__(self, config: PointDiffusionTransformerConfig | None = None) -> None:
        config = config or PointDiffusionTransformerConfig(
            name="CLIPImageGridUpsamplePointDiffusionTransformer", n_ctx=3072)
        super().__init__(config)
        self.cond_point_proj = nn.Linear(config.input_channels, config.width)
        self.register_buffer("channel_scales",
                             torch.tensor(config.channel_scales, dtype=torch.float32))
        self.register_buffer("channel_biases",
                             torch.tensor(config.channel_biases, dtype=torch.float32))

    def forward(self, x: torch.Tensor, t: torch.Tensor, grid: torch.Tensor,
                low_res: torch.Tensor) -> torch.Tensor:
        """x ``[B, C, N]``, t ``[B]``, grid ``[B, G, T]``, low_res ``[B, C, M]`` (output units)."""
        low = low_res.to(x.dtype) * self.channel_scales[:, None].to(x.dtype) \
            + self.channel_biases[:, None].to(x.dtype)
        low_tokens = self.cond_point_proj(low.permute(0, 2, 1))      # [B, M, W]
        return self._run(x, t, [self._condition_tokens(grid.to(x.dtype)), low_tokens])
