"""2-D rotary position embedding (RoPE) of CroCo v2, as used by DUSt3R and Fast3R encoders.

Each attention head of width ``d`` is split in two halves: the first half is rotated by the
token's row index ``y``, the second by its column index ``x``. Within a half of width
``h = d/2``, channel ``j`` is paired with channel ``j + h/2`` ("rotate-half", not interleaved)
and rotated by the angle ``position * base**(-2j/h)`` (= ``base**(-4j/d)``), ``j < h/2``.
"""
from __future__ import annotations

import torch
from torch import nn


def patch_positions(batch: int, rows: int, cols: int, device=None) -> torch.Tensor:
    """Integer (y, x) position of every patch token, row-major.

    Returns:
        ``int64 [batch, rows*cols, 2]``: token ``k`` sits at row ``k // cols``, column ``k % cols``.
    """
    y = torch.arange(rows, device=device)
    x = torch.arange(cols, device=device)
    grid = torch.stack(torch.meshgrid(y, x, indexing="ij"), dim=-1).reshape(rows * cols, 2)
    return grid.unsqueeze(0).expand(batch, -1, -1).clone()


def _rotate_half(t: torch.Tensor) -> torch.Tensor:
    first, second = t.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class RoPE2D(nn.Module):
    """Applies 2-D RoPE to queries or keys.

    Args:
        base: frequency base (100 for CroCo's ``RoPE100``).
    """

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        self.base = float(base)

    def _cos_sin(self, half_dim: int, length: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = 1.0 / (self.base ** (torch.arange(0, half_dim, 2, device=device).float() / half_dim))
        angles = torch.arange(length, device=device).float()[:, None] * inv_freq[None, :]
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``tokens``.

        Args:
            tokens: ``[B, heads, N, d]`` queries or keys (``d`` divisible by 4).
            positions: ``int64 [B, N, 2]`` (y, x) patch positions.

        Returns:
            ``[B, heads, N, d]`` rotated tokens.
        """
        d = tokens.shape[-1]
        if d % 4:
            raise ValueError(f"2-D RoPE needs a head width divisible by 4, got {d}")
        half = d // 2
        cos, sin = self._cos_sin(half, int(positions.max()) + 1, tokens.device, tokens.dtype)
        parts = []
        for axis, part in enumerate(tokens.split(half, dim=-1)):
            c = cos[positions[:, :, axis]].unsqueeze(1)  # [B,1,N,half]
            s = sin[positions[:, :, axis]].unsqueeze(1)
            parts.append(part * c + _rotate_half(part) * s)
        return torch.cat(parts, dim=-1)


def parse_pos_embed(name: str) -> float:
    """The RoPE base of a CroCo ``pos_embed`` string such as ``RoPE100``."""
    if not isinstance(name, str) or not name.startswith("RoPE"):
        raise ValueError(f"only RoPE position embeddings are supported, got {name!r}")
    return float(name[len("RoPE"):])
