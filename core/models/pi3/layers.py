"""Building blocks of π³ / Pi3X beyond the transformer block they share with VGGT.

Tensor layout: tokens ``[B, N, C]``; attention internals ``[B, heads, N, head_dim]``; feature maps
``[B, C, h, w]``. Parameter names follow the published checkpoints (``yyfz233/Pi3``,
``yyfz233/Pi3X``).

Reused from :mod:`core.models.vggt` because they are the same computation: the DINOv2 encoder
(π³ builds it without ``mask_token``), the pre-norm transformer block (LayerNorm eps 1e-6 here;
qk-norm LayerNorm eps 1e-5 over each head's channels), the 2-D RoPE table (base 100, channel halves
rotated by row then column, registers at (0, 0), patches at (row + 1, column + 1)), LayerScale and
the exact-GELU MLP.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core.models.vggt.dinov2 import DinoV2
from core.models.vggt.layers import Block, LayerScale, Mlp, RotaryTable

NORM_EPS = 1e-6


class Encoder(DinoV2):
    """DINOv2 ViT/14 with registers and no ``mask_token``: ``[B, C_in, H, W]`` -> the final
    normalised patch tokens ``[B, (H/14)(W/14), D]`` (row-major; cls and registers dropped).

    ``in_chans`` is 3 for the image encoder, 2 for Pi3X's depth encoder (depth, validity).
    """

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float = 4.0, num_register_tokens: int = 4, in_chans: int = 3) -> None:
        super().__init__(img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio,
                         num_register_tokens)
        del self.mask_token
        if in_chans != 3:
            self.patch_embed.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size,
                                              stride=patch_size)


class HeadTransformer(nn.Module):
    """``projects`` Linear(in -> width), ``depth`` blocks within each view (no qk-norm, no
    LayerScale, RoPE), ``linear_out`` Linear(width -> out): ``[B*S, hw, in]`` -> ``[B*S, hw, out]``."""

    def __init__(self, in_dim: int, width: int, depth: int, heads: int, out_dim: int,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.projects = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, qk_norm=False, init_values=None,
                                          norm_eps=NORM_EPS) for _ in range(depth))
        self.linear_out = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor, rope: RotaryTable) -> torch.Tensor:
        x = self.projects(x)
        for block in self.blocks:
            x = block(x, rope=rope)
        return self.linear_out(x)


class LinearPointHead(nn.Module):
    """π³'s per-patch linear head: ``[B*S, P, C]`` -> ``[B*S, H, W, out]`` by ``proj``
    Linear(C -> out * p²) and a pixel shuffle (output ``c * p² + dy * p + dx`` of patch (py, px)
    is channel c of pixel (p * py + dy, p * px + dx))."""

    def __init__(self, in_dim: int, out_channels: int, patch_size: int) -> None:
        super().__init__()
        self.out_channels, self.patch_size = out_channels, patch_size
        self.proj = nn.Linear(in_dim, out_channels * patch_size ** 2)

    def forward(self, x: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        n, p, (h, w) = x.shape[0], self.patch_size, grid_hw
        x = self.proj(x).view(n, h, w, self.out_channels, p, p)
        return x.permute(0, 1, 4, 2, 5, 3).reshape(n, h * p, w * p, self.out_channels)


class ResidualMLP(nn.Module):
    """``x + relu(res_conv3(relu(res_conv2(relu(res_conv1(x))))))`` (the camera head's blocks)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.res_conv1 = nn.Linear(dim, dim)
        self.res_conv2 = nn.Linear(dim, dim)
        self.res_conv3 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.res_conv2(F.relu(self.res_conv1(x))))
        return x + F.relu(self.res_conv3(y))


class CameraHead(nn.Module):
    """Patch tokens ``[B*S, P, C]`` -> camera-to-world poses ``[B*S, 4, 4]``.

    Two residual MLPs per token, mean over the patches, Linear-ReLU-Linear-ReLU, then ``fc_t`` (the
    translation) and ``fc_rot`` (9 numbers, a 3x3 matrix M row-major). Each row of M is scaled to
    unit length and R is the rotation closest to M: ``M = U S V^T``, ``R = U diag(1, 1,
    det(U V^T)) V^T``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.res_conv = nn.ModuleList(ResidualMLP(dim) for _ in range(2))
        self.more_mlps = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.fc_t = nn.Linear(dim, 3)
        self.fc_rot = nn.Linear(dim, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.res_conv:
            x = block(x)
        x = self.more_mlps(x.mean(dim=1))
        t = self.fc_t(x)
        m = self.fc_rot(x).view(-1, 3, 3)
        m = m / m.norm(dim=-1, keepdim=True)
        u, _, vh = torch.linalg.svd(m)
        sign = torch.det(u @ vh)
        u = torch.cat((u[..., :2], u[..., 2:] * sign[:, None, None]), dim=-1)
        pose = torch.zeros(x.shape[0], 4, 4, dtype=x.dtype, device=x.device)
        pose[:, :3, :3] = u @ vh
        pose[:, :3, 3] = t
        pose[:, 3, 3] = 1.0
        return pose


# ----------------------------------------------------------------------------- Pi3X conv heads
def uv_grid(height: int, width: int, dtype: torch.dtype, device) -> torch.Tensor:
    """``[2, height, width]`` (u, v) coordinates of Pi3X's conv heads: with r = width / height,
    u spans ±r/√(1+r²)·(width−1)/width and v ±1/√(1+r²)·(height−1)/height, linearly."""
    r = width / height
    sx, sy = r / math.sqrt(1 + r * r), 1 / math.sqrt(1 + r * r)
    u = torch.linspace(-sx * (width - 1) / width, sx * (width - 1) / width, width, dtype=dtype,
                       device=device)
    v = torch.linspace(-sy * (height - 1) / height, sy * (height - 1) / height, height, dtype=dtype,
                       device=device)
    return torch.stack((u[None, :].expand(height, width), v[:, None].expand(height, width)))


def with_uv(x: torch.Tensor) -> torch.Tensor:
    """Concatenate the UV channels of :func:`uv_grid` to ``x [N, C, h, w]``."""
    n, _, h, w = x.shape
    return torch.cat((x, uv_grid(h, w, x.dtype, x.device).expand(n, 2, h, w)), dim=1)


def conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="replicate")


class ResidualConvBlock(nn.Module):
    """``x + conv(ReLU(GN(conv(ReLU(GN(x))))))``: GroupNorm of 1 group on C, 3x3 C -> 2C,
    GroupNorm of 2C/32 groups (at least 1), 3x3 2C -> C (``layers.0/2/3/5``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = 2 * channels
        self.layers = nn.Sequential(nn.GroupNorm(1, channels), nn.ReLU(), conv3x3(channels, hidden),
                                    nn.GroupNorm(max(hidden // 32, 1), hidden), nn.ReLU(),
                                    conv3x3(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class ConvHead(nn.Module):
    """Pi3X's convolutional head: patch tokens ``[B*S, P, C]`` -> per output i
    ``[B*S, out_channels[i], H, W]``.

    Per ``upsample`` stage: UV concatenated, ConvTranspose2d(2, stride 2), 3x3 conv, residual
    blocks; then a bilinear resize to (H, W) (align_corners False), UV concatenated, and per output
    a 3x3 conv, ReLU, 1x1 conv. Every 3x3 convolution pads by replication.
    """

    def __init__(self, in_dim: int, upsample: tuple[int, ...], last_channels: int, res_blocks: int,
                 out_channels: tuple[int, ...]) -> None:
        super().__init__()
        stages, c_in = [], in_dim
        for c in upsample:
            stages.append(nn.Sequential(
                nn.Sequential(nn.ConvTranspose2d(c_in + 2, c, 2, stride=2), conv3x3(c, c)),
                *(ResidualConvBlock(c) for _ in range(res_blocks))))
            c_in = c
        self.upsample_blocks = nn.ModuleList(stages)
        self.output_block = nn.ModuleList(
            nn.Sequential(conv3x3(c_in + 2, last_channels), nn.ReLU(),
                          nn.Conv2d(last_channels, c, 1)) for c in out_channels)

    def forward(self, x: torch.Tensor, grid_hw: tuple[int, int], image_hw: tuple[int, int]
                ) -> list[torch.Tensor]:
        n, _, c = x.shape
        x = x.transpose(1, 2).reshape(n, c, *grid_hw)
        for stage in self.upsample_blocks:
            x = stage(with_uv(x))
        x = with_uv(F.interpolate(x, size=image_hw, mode="bilinear", align_corners=False))
        return [block(x) for block in self.output_block]


# ----------------------------------------------------------------------------- Pi3X metric scale
class CrossAttention(nn.Module):
    """Multi-head cross-attention ``q_proj(x)`` over ``k_proj(y)``, ``v_proj(y)``, 2-D RoPE on the
    keys (the single query sits at position (0, 0): its rotation is the identity), ``proj``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor, rope_y: RotaryTable) -> torch.Tensor:
        b, n, c = x.shape
        split = lambda t: t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q_proj(x)), split(self.k_proj(y)), split(self.v_proj(y))
        out = F.scaled_dot_product_attention(q, rope_y.apply(k), v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class CrossBlock(nn.Module):
    """``x += cross_attn(norm2(x), norm_y(y))``; ``x += mlp(norm3(x))`` (no LayerScale)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.norm_y = nn.LayerNorm(dim, eps=NORM_EPS)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm3 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, y: torch.Tensor, rope_y: RotaryTable) -> torch.Tensor:
        x = x + self.cross_attn(self.norm2(x), self.norm_y(y), rope_y)
        return x + self.mlp(self.norm3(x))


class MetricDecoder(nn.Module):
    """Pi3X's metric-scale decoder: one query (``projects_x`` of the metric token) cross-attends
    to every view's decoder tokens (``projects_y``), ``linear_out``: ``[B, 1, 2D]``,
    ``[B, S*hw, 2D]`` -> ``[B, 1, out]``."""

    def __init__(self, in_dim: int, width: int, depth: int, heads: int, out_dim: int,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.projects_x = nn.Linear(in_dim, width)
        self.projects_y = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(CrossBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.linear_out = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor, rope_y: RotaryTable) -> torch.Tensor:
        x, y = self.projects_x(x), self.projects_y(y)
        for block in self.blocks:
            x = block(x, y, rope_y)
        return self.linear_out(x)


# ----------------------------------------------------------------------------- Pi3X pose injection
def _rotate_pairs(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool) -> torch.Tensor:
    """(a, b) -> (a cos + b sin, -a sin + b cos) on the two halves of ``t``'s last axis
    (``inverse``: (a cos - b sin, a sin + b cos))."""
    a, b = t.chunk(2, dim=-1)
    if inverse:
        return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
    return torch.cat((a * cos + b * sin, -a * sin + b * cos), dim=-1)


class ProjectiveRoPE:
    """PRoPE's per-token transforms for one batch (Li et al., "Cameras as Relative Positional
    Encoding"): each head's channels split [d/2 | d/4 | d/4]; the first d/2 are d/8 consecutive
    4-vectors multiplied by a 4x4 matrix of the token's camera, the next d/4 rotated by the patch
    column, the last d/4 by the patch row (0-based), with frequencies ``100^(-j/(d/8))``.

    Args:
        viewmats: ``[B, N, 4, 4]`` camera-from-world matrix of each token's view.
        positions: ``int64 [N, 2]`` (row, column) of each token.
        head_dim: d (divisible by 8).
    """

    def __init__(self, viewmats: torch.Tensor, positions: torch.Tensor, head_dim: int,
                 freq: float = 100.0) -> None:
        self.head_dim = head_dim
        self.mat = viewmats[:, None]                          # [B, 1, N, 4, 4] (heads broadcast)
        self.mat_t = self.mat.transpose(-1, -2)
        self.mat_inv = torch.linalg.inv(viewmats)[:, None]
        n = head_dim // 8
        inv_freq = freq ** (-torch.arange(n, device=positions.device, dtype=torch.float32) / n)
        angles = positions.to(torch.float32)[..., None] * inv_freq   # [N, 2, d/8]
        self.cos_col, self.sin_col = angles[:, 1].cos(), angles[:, 1].sin()
        self.cos_row, self.sin_row = angles[:, 0].cos(), angles[:, 0].sin()

    def _apply(self, t: torch.Tensor, matrix: torch.Tensor, inverse: bool) -> torch.Tensor:
        d = self.head_dim
        proj = t[..., : d // 2].unflatten(-1, (-1, 4))                       # [B, h, N, d/8, 4]
        proj = (matrix[:, :, :, None].to(t.dtype) @ proj[..., None]).squeeze(-1).flatten(-2)
        col = _rotate_pairs(t[..., d // 2: 3 * d // 4], self.cos_col, self.sin_col, inverse)
        row = _rotate_pairs(t[..., 3 * d // 4:], self.cos_row, self.sin_row, inverse)
        return torch.cat((proj, col, row), dim=-1)

    def query(self, q: torch.Tensor) -> torch.Tensor:
        return self._apply(q, self.mat_t, False)

    def key_value(self, t: torch.Tensor) -> torch.Tensor:
        return self._apply(t, self.mat_inv, False)

    def output(self, o: torch.Tensor) -> torch.Tensor:
        return self._apply(o, self.mat, True)


class PRoPEAttention(nn.Module):
    """Self-attention with qk-norm (eps 1e-5) and :class:`ProjectiveRoPE` on queries, keys, values
    and (inverted) outputs; ``mask [B, N, N]`` (True = may attend). Query rows without any allowed
    key come out as zeros."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(self.head_dim)
        self.k_norm = nn.LayerNorm(self.head_dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, prope: ProjectiveRoPE, mask: torch.Tensor | None
                ) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = prope.query(self.q_norm(q)), prope.key_value(self.k_norm(k))
        v = prope.key_value(v)
        attn_mask = None if mask is None else mask[:, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        if mask is not None:
            out = torch.where(mask.any(-1)[:, None, :, None], out, torch.zeros((), dtype=out.dtype,
                                                                                 device=out.device))
        out = prope.output(out)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class PoseInjectBlock(nn.Module):
    """Pi3X's pose injection: ``delta = ls1(attn(norm1(X))) + ls2(mlp(norm2(X)))`` — two parallel
    branches from the same X, no residual inside (the caller adds ``delta`` to the patch tokens of
    the views with a pose)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.attn = PRoPEAttention(dim, num_heads)
        self.ls1 = LayerScale(dim, 0.01)
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, 0.01)

    def forward(self, x: torch.Tensor, prope: ProjectiveRoPE, mask: torch.Tensor | None
                ) -> torch.Tensor:
        return self.ls1(self.attn(self.norm1(x), prope, mask)) + self.ls2(self.mlp(self.norm2(x)))


class RayEmbed(nn.Module):
    """Pi3X's ray embedding: ``[B, 2, H, W]`` ray map -> ``[B, P, D]`` (14x14 stride-14 conv)."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(2, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)
