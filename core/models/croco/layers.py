"""CroCo ViT building blocks shared by DUSt3R and Fast3R (parameter names = the checkpoints').

Tokens are ``[B, N, C]``; positions are ``int64 [B, N, 2]`` (y, x) patch indices used by RoPE.
All blocks are pre-norm with exact GELU and attention scale ``head_dim**-0.5``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rope import RoPE2D, patch_positions


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution; any image size divisible by the patch.

    This is CroCo's ``PatchEmbedDust3R``: the image is used in its natural layout (portrait
    images stay portrait), no position embedding is added.
    """

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 1024) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images [B,3,H,W]`` (H, W multiples of the patch) -> tokens ``[B,N,C]``, positions ``[B,N,2]``."""
        b, _, h, w = images.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
        tokens = self.proj(images).flatten(2).transpose(1, 2)
        return tokens, patch_positions(b, h // p, w // p, device=images.device)


class Mlp(nn.Module):
    """Linear -> GELU (exact) -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection and optional 2-D RoPE."""

    def __init__(self, dim: int, num_heads: int, rope: RoPE2D | None = None, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.rope is not None:
            q, k = self.rope(q, pos), self.rope(k, pos)
        return self.proj(_merge(F.scaled_dot_product_attention(q, k, v)))


class CrossAttention(nn.Module):
    """Queries from one view attend to the other view's tokens (separate q/k/v projections, RoPE)."""

    def __init__(self, dim: int, num_heads: int, rope: RoPE2D | None = None, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.projq = nn.Linear(dim, dim, bias=qkv_bias)
        self.projk = nn.Linear(dim, dim, bias=qkv_bias)
        self.projv = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, query, key, value, qpos, kpos) -> torch.Tensor:
        q = _heads(self.projq(query), self.num_heads)
        k = _heads(self.projk(key), self.num_heads)
        v = _heads(self.projv(value), self.num_heads)
        if self.rope is not None:
            q, k = self.rope(q, qpos), self.rope(k, kpos)
        return self.proj(_merge(F.scaled_dot_product_attention(q, k, v)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``.

    Used by the CroCo encoder (RoPE, LayerNorm eps 1e-6) and by Fast3R's fusion transformer
    (no RoPE, LayerNorm eps 1e-5).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, rope: RoPE2D | None = None,
                 qkv_bias: bool = True, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, rope=rope, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), pos)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """DUSt3R decoder block: self-attention, cross-attention to the other view, MLP (all RoPE)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, rope: RoPE2D | None = None,
                 qkv_bias: bool = True, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, rope=rope, qkv_bias=qkv_bias)
        self.cross_attn = CrossAttention(dim, num_heads, rope=rope, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.norm3 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = nn.LayerNorm(dim, eps=norm_eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor, xpos: torch.Tensor, ypos: torch.Tensor) -> torch.Tensor:
        """``x [B,Nx,C]`` this view's tokens, ``y [B,Ny,C]`` the other view's -> new ``x``."""
        x = x + self.attn(self.norm1(x), xpos)
        y = self.norm_y(y)
        x = x + self.cross_attn(self.norm2(x), y, y, xpos, ypos)
        return x + self.mlp(self.norm3(x))


class CroCoEncoder(nn.Module):
    """Patch embedding, ``depth`` RoPE ViT blocks and a final LayerNorm (``patch_embed``,
    ``enc_blocks``, ``enc_norm``)."""

    def __init__(self, embed_dim: int, depth: int, num_heads: int, patch_size: int = 16,
                 mlp_ratio: float = 4.0, rope_base: float = 100.0) -> None:
        super().__init__()
        self.rope = RoPE2D(rope_base)
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.enc_blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, rope=self.rope, norm_eps=1e-6) for _ in range(depth)])
        self.enc_norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images [B,3,H,W]`` in [-1,1] -> tokens ``[B,N,C]`` (after ``enc_norm``), positions ``[B,N,2]``."""
        return run_encoder(self.patch_embed, self.enc_blocks, self.enc_norm, images)


def run_encoder(patch_embed: PatchEmbed, blocks: nn.ModuleList, norm: nn.Module,
                images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The CroCo encoder pass on modules owned by any parent (DUSt3R keeps them at top level)."""
    x, pos = patch_embed(images)
    for block in blocks:
        x = block(x, pos)
    return norm(x), pos
