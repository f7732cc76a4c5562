"""Transformer building blocks shared by the patch embedder, the trunk and the camera head.

Tensor layout: tokens ``[B, N, C]`` (batch, tokens, channels); attention internals
``[B, heads, N, head_dim]``. Parameter names follow the published VGGT checkpoint
(``norm1``, ``attn.qkv``, ``attn.q_norm``, ``attn.k_norm``, ``attn.proj``, ``ls1.gamma``,
``norm2``, ``mlp.fc1``, ``mlp.fc2``, ``ls2.gamma``).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class LayerScale(nn.Module):
    """Per-channel scale ``x * gamma`` (CaiT LayerScale)."""

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))`` with exact (erf) GELU."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None,
                 bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RotaryTable:
    """Precomputed 2D rotary embedding for one token layout.

    VGGT's RoPE splits each head's channels in two halves: the first half is rotated by the
    token's row (y) position, the second by its column (x) position; inside each half the
    rotation pairs channel j with channel j + d/4 ("rotate half"), frequency
    ``freq ** (-2j / (d/2))``. The table is computed once per forward pass and shared by all
    blocks (the reference recomputes the lookups in every block; the values are identical).

    Args:
        positions: ``int64 [N, 2]`` (y, x) position of each token (special tokens at (0, 0),
            patches at (row + 1, column + 1)).
        head_dim: channels per head (must be divisible by 4).
        freq: base frequency.
    """

    def __init__(self, positions: torch.Tensor, head_dim: int, freq: float,
                 dtype: torch.dtype = torch.float32) -> None:
        if head_dim % 4:
            raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {head_dim}")
        half = head_dim // 2
        device = positions.device
        inv_freq = 1.0 / (freq ** (torch.arange(0, half, 2, device=device).float() / half))
        length = int(positions.max()) + 1
        steps = torch.arange(length, device=device, dtype=inv_freq.dtype)
        angles = torch.einsum("i,j->ij", steps, inv_freq).to(dtype)
        angles = torch.cat((angles, angles), dim=-1)               # [length, half]
        cos, sin = angles.cos(), angles.sin()
        y, x = positions[:, 0], positions[:, 1]
        self.cos = torch.cat((cos[y], cos[x]), dim=-1)            # [N, head_dim]
        self.sin = torch.cat((sin[y], sin[x]), dim=-1)
        self.head_dim = head_dim
        self._signed_sin = self._fold_sign(self.sin, head_dim)

    @staticmethod
    def _fold_sign(sin: torch.Tensor, head_dim: int) -> torch.Tensor:
        """``sin [N, head_dim]`` with the rotation's sign folded in: within each axis half, the
        first quarter negated (rotated = (-second, first), so first' = first cos - second sin)."""
        parts = sin.unflatten(-1, (2, 2, head_dim // 4))
        return torch.stack((-parts[..., 0, :], parts[..., 1, :]), dim=-2).flatten(-3)

    def repeat(self, times: int) -> "RotaryTable":
        """The table of ``times`` consecutive copies of this layout (global attention)."""
        out = RotaryTable.__new__(RotaryTable)
        out.cos = self.cos.repeat(times, 1)
        out.sin = self.sin.repeat(times, 1)
        out.head_dim = self.head_dim
        out._signed_sin = self._signed_sin.repeat(times, 1)
        return out

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        """Rotate ``t [B, heads, N, head_dim]``: ``t cos + rotate_half(t) sin`` per axis half.

        Without autograd the rotated copy is never built: ``t cos`` is written once and each
        quarter gets the other quarter times the signed sine added in place (one fused
        multiply-add; about 3x faster on CPU, equal to the two-step formula within float32
        rounding of one product).
        """
        quarter = self.head_dim // 4
        parts = t.unflatten(-1, (2, 2, quarter))                  # axis (y|x), half, channel
        if torch.is_grad_enabled() and t.requires_grad:           # attribution backprops here
            rotated = torch.stack((-parts[..., 1, :], parts[..., 0, :]), dim=-2).flatten(-3)
            return t * self.cos + rotated * self.sin
        out = torch.mul(parts, self.cos.unflatten(-1, (2, 2, quarter)))
        signed = self._signed_sin.unflatten(-1, (2, 2, quarter))
        out[..., 0, :].addcmul_(parts[..., 1, :], signed[..., 0, :])
        out[..., 1, :].addcmul_(parts[..., 0, :], signed[..., 1, :])
        return out.flatten(-3)


# capture(q, k) is called with post-norm, post-RoPE queries and keys [B, heads, N, head_dim].
CaptureFn = Callable[[torch.Tensor, torch.Tensor], None]


class Attention(nn.Module):
    """Multi-head self-attention with optional QK LayerNorm and 2D RoPE.

    Args:
        dim: token width C.
        num_heads: heads (C / heads channels each).
        qk_norm: LayerNorm (eps 1e-5) over each head's queries and keys.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True,
                 qk_norm: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor, rope: RotaryTable | None = None,
                capture: CaptureFn | None = None) -> torch.Tensor:
        """``x [B, N, C]`` -> ``[B, N, C]``; ``capture(q, k)`` sees the attention inputs."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope.apply(q), rope.apply(k)
        if capture is not None:
            capture(q, k)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale:
    ``x += ls1(attn(norm1(x)))``, ``x += ls2(mlp(norm2(x)))``.

    Args:
        norm_eps: LayerNorm epsilon (1e-6 in DINOv2, 1e-5 in the trunk and camera head).
        init_values: LayerScale init; None disables LayerScale.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qk_norm: bool = False,
                 init_values: float | None = 0.01, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: torch.Tensor, rope: RotaryTable | None = None,
                capture: CaptureFn | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope=rope, capture=capture))
        return x + self.ls2(self.mlp(self.norm2(x)))
