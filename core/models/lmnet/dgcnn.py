"""DGCNN point encoder: EdgeConv layers on dynamic k-NN graphs, then a max-pool."""
from __future__ import annotations

import torch
from torch import nn


def knn_indices(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[B,N,k]`` of each point's ``k`` nearest points (itself first) in ``features [B,C,N]``.

    Distances are squared Euclidean in feature space; ties are broken by ``topk``.
    """
    x = features.detach().transpose(1, 2)                   # [B,N,C]; indices carry no gradient
    sq = (x * x).sum(-1)                                    # [B,N]
    dist = sq[:, :, None] - 2 * x @ x.transpose(1, 2) + sq[:, None, :]
    return dist.topk(k, dim=-1, largest=False).indices


def edge_features(features: torch.Tensor, k: int) -> torch.Tensor:
    """EdgeConv input ``[B,2C,N,k]``: ``(x_j - x_i, x_i)`` over each point's k neighbours ``j``."""
    b, c, n = features.shape
    idx = knn_indices(features, k)                          # [B,N,k]
    x = features.transpose(1, 2)                            # [B,N,C]
    neighbours = x[torch.arange(b, device=x.device)[:, None, None], idx]  # [B,N,k,C]
    centre = x[:, :, None, :].expand(b, n, k, c)
    return torch.cat([neighbours - centre, centre], dim=-1).permute(0, 3, 1, 2)


class EdgeConv(nn.Module):
    """``[B,C,N] -> [B,out,N]``: shared MLP on edge features, max over the neighbours."""

    def __init__(self, in_channels: int, out_channels: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.mlp = nn.Sequential(nn.Conv2d(2 * in_channels, out_channels, 1, bias=False),
                                 nn.BatchNorm2d(out_channels), nn.LeakyReLU(0.2))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(edge_features(features, self.k)).max(dim=-1).values


class DGCNNEncoder(nn.Module):
    """``points [B,N,3] -> code [B,latent_dim]``.

    EdgeConv per width in ``channels`` (graphs recomputed in each layer's input feature
    space), the layers' outputs concatenated, a Conv1d to ``latent_dim`` (BN, LeakyReLU) and
    a max over the points.
    """

    def __init__(self, channels: tuple[int, ...], latent_dim: int, k: int) -> None:
        super().__init__()
        widths = (3, *channels)
        self.edge_convs = nn.ModuleList(EdgeConv(a, b, k) for a, b in zip(widths, widths[1:]))
        self.fuse = nn.Sequential(nn.Conv1d(sum(channels), latent_dim, 1, bias=False),
                                  nn.BatchNorm1d(latent_dim), nn.LeakyReLU(0.2))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        x = points.transpose(1, 2)
        outputs = []
        for conv in self.edge_convs:
            x = conv(x)
            outputs.append(x)
        return self.fuse(torch.cat(outputs, dim=1)).max(dim=2).values
