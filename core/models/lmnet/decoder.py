"""Fully connected point decoder: code -> a fixed-size point cloud."""
from __future__ import annotations

import torch
from torch import nn


class PointDecoder(nn.Module):
    """``code [B,latent_dim] -> points [B,num_points,3]`` (FC + ReLU per hidden width, linear output)."""

    def __init__(self, latent_dim: int, channels: tuple[int, ...], num_points: int) -> None:
        super().__init__()
        self.num_points = num_points
        widths = (latent_dim, *channels)
        layers: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_points * 3))
        self.layers = nn.Sequential(*layers)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.layers(code).view(code.shape[0], self.num_points, 3)
