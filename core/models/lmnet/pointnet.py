"""PointNet-style point encoder: shared per-point 1-D convolutions, then a max-pool."""
from __future__ import annotations

import torch
from torch import nn


class PointNetEncoder(nn.Module):
    """``points [B,N,3] -> code [B,latent_dim]``.

    Conv1d(k=1) + BatchNorm + ReLU per width in ``channels``, a last Conv1d to ``latent_dim``
    (BatchNorm + ReLU), then a max over the points (order invariant).
    """

    def __init__(self, channels: tuple[int, ...], latent_dim: int) -> None:
        super().__init__()
        widths = (3, *channels, latent_dim)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv1d(a, b, 1), nn.BatchNorm1d(b), nn.ReLU()) for a, b in zip(widths, widths[1:]))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        x = points.transpose(1, 2)
        for layer in self.layers:
            x = layer(x)
        return x.max(dim=2).values
