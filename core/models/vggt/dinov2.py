"""DINOv2 ViT/14 with register tokens: VGGT's per-image patch embedder.

Names follow the VGGT checkpoint under ``aggregator.patch_embed.``: ``cls_token [1,1,C]``,
``pos_embed [1,1+G*G,C]`` (G = img_size / 14 = 37 for 518), ``register_tokens [1,R,C]``,
``mask_token [1,C]`` (kept for checkpoint compatibility, unused at inference),
``patch_embed.proj`` (14x14 stride-14 conv), ``blocks.i``, ``norm``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Block


class PatchProjection(nn.Module):
    """``[B,3,H,W]`` -> ``[B, (H/p)*(W/p), C]`` by a p x p stride-p convolution (row-major)."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoV2(nn.Module):
    """DINOv2 encoder returning the final-normalised patch tokens.

    Args:
        img_size: size the position embedding was trained for (square).
        patch_size: 14.
        embed_dim, depth, num_heads, mlp_ratio: transformer sizes (ViT-L: 1024, 24, 16, 4).
        num_register_tokens: 4.
    """

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, depth: int,
                 num_heads: int, mlp_ratio: float = 4.0, num_register_tokens: int = 4) -> None:
        super().__init__()
        self.patch_size = patch_size
        grid = img_size // patch_size
        self.num_register_tokens = num_register_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)
        self.patch_embed = PatchProjection(patch_size, embed_dim)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qk_norm=False, init_values=1.0, norm_eps=1e-6)
            for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._pos_cache: dict = {}

    def position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """``[1, 1 + grid_h*grid_w, C]``: the class entry and the patch grid interpolated
        bicubically (antialiased, as DINOv2 with ``interpolate_antialias=True``, offset 0)."""
        pos = self.pos_embed
        n = pos.shape[1] - 1
        side = int(math.sqrt(n))
        if grid_h == side and grid_w == side:
            return pos
        key = (grid_h, grid_w, pos.device, pos.dtype, pos._version, id(pos))
        cacheable = not torch.is_grad_enabled()
        if cacheable and key in self._pos_cache:
            return self._pos_cache[key]
        patch = pos[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, size=(grid_h, grid_w), mode="bicubic", antialias=True)
        patch = patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
        out = torch.cat((pos[:, :1].float(), patch), dim=1).to(pos.dtype)
        if cacheable:  # interpolated once per image size at inference
            self._pos_cache = {key: out}
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images [B,3,H,W]`` (ImageNet-normalised) -> patch tokens ``[B, (H/14)(W/14), C]``."""
        b, _, h, w = images.shape
        x = self.patch_embed(images)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        x = x + self.position_embedding(h // self.patch_size, w // self.patch_size)
        x = torch.cat((x[:, :1], self.register_tokens.expand(b, -1, -1), x[:, 1:]), dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 1 + self.num_register_tokens:]
