"""Shap-E's latent diffusion transformers (``text300M``, ``image300M``).

``SplitVectorDiffusion`` wraps a CLIP-conditioned point-diffusion transformer (module
``wrapped``, as in the published checkpoints) so that it denoises a flat latent:

- x ``[B, D]`` (D = latent_ctx x C, token-major) is viewed as ``[B, latent_ctx, C]`` tokens;
- the inner transformer returns 2C channels per token;
- the output ``[B, 2D]`` is [every token's first C channels, flattened token-major; then every
  token's last C channels]: ``output[:, :D]`` is the x0 prediction in x's layout, ``output[:, D:]``
  the variance values (unused by the sampler).

Token sequence of the inner transformer (no position embedding on conditioning tokens):
text: [clip token, time token, latent tokens], clip token = ``clip_embed(sqrt(D_clip) e)``, e the
unit CLIP text embedding ``[B, D_clip]`` (zeros for the unconditional half); image: [time token,
grid tokens, latent tokens], grid tokens = ``clip_embed(grid^T)`` (LayerNorm + Linear) of the CLIP
grid ``[B, G, T]``. Latent tokens = ``input_proj(tokens) + pos_emb``. Then ``ln_pre``, the
residual blocks, ``ln_post`` and ``output_proj`` on the latent tokens. The blocks, the attention
(head-interleaved qkv) and the time embedding are Point-E's: the mathematics is the same.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from core.models.pointe.modeling_transformer import MLP, Transformer, timestep_embedding

from .config import LatentDiffusionConfig


class LatentTransformer(nn.Module):
    """The inner CLIP-conditioned transformer over latent tokens (see the module docstring).

    Names follow the published checkpoints: ``time_embed``, ``ln_pre``, ``backbone``, ``ln_post``,
    ``input_proj``, ``output_proj``, ``pos_emb [latent_ctx, W]``, ``clip_embed`` (text: Linear;
    image: Sequential(LayerNorm, Linear)).
    """

    def __init__(self, config: LatentDiffusionConfig) -> None:
        super().__init__()
        self.config = config
        w, c = config.width, config.channels
        self.time_embed = MLP(w)
        self.ln_pre = nn.LayerNorm(w, eps=1e-5)
        self.backbone = Transformer(w, config.layers, config.heads, config.attention)
        self.ln_post = nn.LayerNorm(w, eps=1e-5)
        self.input_proj = nn.Linear(c, w)
        self.output_proj = nn.Linear(w, 2 * c)
        self.pos_emb = nn.Parameter(torch.randn(config.latent_ctx, w) * config.pos_emb_init_scale)
        if config.kind == "text":
            self.clip_embed = nn.Linear(config.clip_dim, w)
        else:
            self.clip_embed = nn.Sequential(nn.LayerNorm(config.clip_dim, eps=1e-5),
                                            nn.Linear(config.clip_dim, w))

    def condition_tokens(self, cond: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """text: embedding ``[B, D_clip]`` -> ``[B, 1, W]``; image: grid ``[B, G, T]`` -> ``[B, T, W]``."""
        cond = cond.to(dtype)
        if self.config.kind == "text":
            return self.clip_embed(math.sqrt(cond.shape[1]) * cond)[:, None]
        return self.clip_embed(cond.permute(0, 2, 1))

    def forward(self, tokens: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """tokens ``[B, latent_ctx, C]``, t ``[B]`` int64, cond (see :meth:`condition_tokens`)
        -> ``[B, latent_ctx, 2C]``."""
        h = self.input_proj(tokens) + self.pos_emb[None].to(tokens.dtype)
        time = self.time_embed(timestep_embedding(t, self.config.width).to(h.dtype))[:, None]
        cond_tokens = self.condition_tokens(cond, h.dtype)
        prefix = [cond_tokens, time] if self.config.kind == "text" else [time, cond_tokens]
        h = torch.cat(prefix + [h], dim=1)
        h = self.ln_post(self.backbone(self.ln_pre(h)))
        return self.output_proj(h[:, h.shape[1] - tokens.shape[1]:])


class SplitVectorDiffusion(nn.Module):
    """A latent diffusion model on flat latents ``[B, D]`` (module docstring); state dict names
    ``wrapped.*`` as in ``text_cond.pt`` / ``image_cond.pt``."""

    def __init__(self, config: LatentDiffusionConfig) -> None:
        super().__init__()
        self.config = config
        self.wrapped = LatentTransformer(config)

    def set_attention(self, implementation: str) -> None:
        """``sdpa`` (fast) or ``reference`` (the reference's operation order)."""
        for block in self.wrapped.backbone.resblocks:
            block.attn.implementation = implementation
        self.config.attention = implementation

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x ``[B, D]``, t ``[B]`` int64, cond ``[B, D_clip]`` (text) or ``[B, G, T]`` (image)
        -> ``[B, 2D]`` (x0 prediction then variance values, each token-major)."""
        b = x.shape[0]
        tokens = x.view(b, self.config.latent_ctx, self.config.channels)
        out = self.wrapped(tokens, t, cond)                           # [B, n, 2C]
        c = self.config.channels
        return torch.cat([out[..., :c].reshape(b, -1), out[..., c:].reshape(b, -1)], dim=1)
