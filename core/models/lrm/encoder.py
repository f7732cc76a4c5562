"""DINOv2 ViT/14 image encoder with register tokens and LayerScale (OpenLRM v1.1's encoder).

Parameter names follow the published checkpoints: ``encoder.model.{cls_token, pos_embed,
register_tokens, patch_embed.proj, blocks.<i>.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2,
mlp.fc1, mlp.fc2, ls2.gamma}, norm}``. There is no ``mask_token``.

Input: ``[B,3,H,W]`` RGB in [0,1] (no mean/std normalisation, as OpenLRM feeds it), H and W
multiples of the patch size. Output: ``[B,1+h·w,C]`` = final LayerNorm of [CLS, patch tokens in
row-major order]; register tokens are dropped.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch×patch`` convolution: ``[B,3,H,W]`` -> ``[B,(H/p)·(W/p),C]``."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image {h}x{w} is not a multiple of the patch size {self.patch_size}")
        return self.proj(image).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (biases on)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        scale = (c // self.heads) ** -0.5
        weights = ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """fc1 -> GELU (erf) -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel residual scale ``x·gamma``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm ViT block: ``x + ls1(attn(norm1 x))``, then ``x + ls2(mlp(norm2 x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT with registers, as used (unmodulated) by OpenLRM v1.1.

    Args:
        dim, depth, heads: width, blocks, attention heads.
        patch_size: 14.
        img_size: size the learned position embedding covers (518 -> 37×37 patches).
        num_registers: register tokens inserted after CLS (4).
    """

    def __init__(self, dim: int, depth: int, heads: int, patch_size: int = 14,
                 img_size: int = 518, num_registers: int = 4) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_registers = num_registers
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, dim)
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + grid * grid, dim))
        self.register_tokens = nn.Parameter(torch.empty(1, num_registers, dim)) if num_registers else None
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def interpolated_pos_embed(self, rows: int, cols: int) -> torch.Tensor:
        """Position embedding ``[1,1+rows·cols,C]`` for a ``rows×cols`` patch grid.

        The learned ``g×g`` patch grid is resized bicubically with antialiasing by the scale
        factors ``rows/g`` and ``cols/g`` (DINOv2 with ``interpolate_offset`` 0, as in OpenLRM).
        """
        n = self.pos_embed.shape[1] - 1
        if rows * cols == n and rows == cols:
            return self.pos_embed
        side = math.sqrt(n)
        pos = self.pos_embed.float()
        patch = pos[:, 1:].reshape(1, int(side), int(side), -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, scale_factor=(rows / side, cols / side), mode="bicubic",
                              antialias=True)
        if patch.shape[-2:] != (rows, cols):  # float rounding of the scale factor
            patch = F.interpolate(pos[:, 1:].reshape(1, int(side), int(side), -1).permute(0, 3, 1, 2),
                                  size=(rows, cols), mode="bicubic", antialias=True)
        patch = patch.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat([pos[:, :1], patch], dim=1).to(self.pos_embed.dtype)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` in [0,1] -> ``[B,1+(H/14)·(W/14),C]`` normed [CLS, patches]."""
        b, _, h, w = image.shape
        x = self.patch_embed(image)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        x = x + self.interpolated_pos_embed(h // self.patch_size, w // self.patch_size)
        if self.register_tokens is not None:
            x = torch.cat([x[:, :1], self.register_tokens.expand(b, -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return torch.cat([x[:, :1], x[:, 1 + self.num_registers:]], dim=1)


class Dinov2Encoder(nn.Module):
    """Holds the ViT under ``model`` so that names read ``encoder.model.*`` like the checkpoints."""

    def __init__(self, dim: int, depth: int, heads: int, patch_size: int, img_size: int,
                 num_registers: int) -> None:
        super().__init__()
        self.model = DinoVisionTransformer(dim, depth, heads, patch_size, img_size, num_registers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)
