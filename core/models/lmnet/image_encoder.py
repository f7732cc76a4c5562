"""The original 3D-LMNet image encoder: a 2-D conv stack and a fully connected layer."""
from __future__ import annotations

import torch
from torch import nn


class ConvImageEncoder(nn.Module):
    """``images [B,3,S,S] in [0,1] -> [B,out_dim]``.

    Conv2d (padding k//2) + BatchNorm + ReLU per ``(out_channels, kernel, stride)`` layer,
    flattened, then one Linear layer to ``out_dim`` (the code, or mean and log-sigma).
    """

    def __init__(self, layers: tuple[tuple[int, int, int], ...], image_size: int, out_dim: int) -> None:
        super().__init__()
        blocks = []
        channels, size = 3, image_size
        for out_channels, kernel, stride in layers:
            blocks.append(nn.Sequential(nn.Conv2d(channels, out_channels, kernel, stride, kernel // 2),
                                        nn.BatchNorm2d(out_channels), nn.ReLU()))
            channels = out_channels
            size = (size + 2 * (kernel // 2) - kernel) // stride + 1
        self.convs = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels * size * size, out_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(images * 2.0 - 1.0).flatten(1))
