"""Triplane lookup and the NeRF decoder (``synthesizer.decoder.net.{0,2,4,6}``).

Frame: OpenLRM's canonical object frame, the object inside the box [-1,1]³ (world up +z).

Triplane lookup: a point (x,y,z) samples plane 0 at (u,v) = (x,y), plane 1 at (x,z) and plane 2
at (z,y); u runs along the plane's W axis and v along H; bilinear, ``align_corners=False``,
zero padding. The three C-channel features are concatenated [plane 0, 1, 2] and decoded by an
MLP 3C -> 64 -> 64 -> 64 -> 4 with ReLU: ``out[0]`` is the raw density, and
``rgb = sigmoid(out[1:4])·1.002 - 0.001``. Activated density is ``softplus(raw - 1)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .outputs import FieldOutput

# (u, v) coordinate indices of each plane
PLANE_AXES = ((0, 1), (0, 2), (2, 1))


def activate_density(raw: torch.Tensor) -> torch.Tensor:
    """OpenLRM's ``clamp_mode='softplus'``: sigma = softplus(raw - 1)."""
    return F.softplus(raw - 1)


def sample_triplane(planes: torch.Tensor, points: torch.Tensor, box_warp: float = 2.0) -> torch.Tensor:
    """Bilinear features of ``points`` on each plane.

    Args:
        planes: ``[N,3,C,H,W]``.
        points: ``[N,P,3]`` canonical-frame coordinates.
        box_warp: side of the box mapped to the planes' [-1,1] extent (2).

    Returns:
        ``[N,P,3·C]`` features concatenated in plane order.
    """
    n, _, c, h, w = planes.shape
    coords = points * (2.0 / box_warp)
    grid = torch.stack([coords[..., list(axes)] for axes in PLANE_AXES], dim=1)  # [N,3,P,2]
    grid = grid.reshape(n * 3, 1, -1, 2).to(planes.dtype)
    feats = F.grid_sample(planes.reshape(n * 3, c, h, w), grid, mode="bilinear",
                          padding_mode="zeros", align_corners=False)  # [3N,C,1,P]
    feats = feats.reshape(n, 3, c, -1).permute(0, 3, 1, 2)  # [N,P,3,C]
    return feats.reshape(n, feats.shape[1], 3 * c)


class TriplaneDecoder(nn.Module):
    """MLP ``3C -> 64 -> 64 -> 64 -> 4`` (ReLU). Returns raw density ``[...,1]`` and rgb ``[...,3]``."""

    def __init__(self, triplane_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(3 * triplane_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 4),
        )

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(features)
        rgb = torch.sigmoid(out[..., 1:]) * (1 + 2 * 0.001) - 0.001
        return out[..., :1], rgb


class TriplaneSynthesizer(nn.Module):
    """Owns the decoder (``synthesizer.decoder``); queries points of the canonical frame."""

    def __init__(self, triplane_dim: int) -> None:
        super().__init__()
        self.decoder = TriplaneDecoder(triplane_dim)

    def query_raw(self, planes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw density ``[N,P,1]`` and rgb ``[N,P,3]`` at ``points [N,P,3]`` (no box filtering)."""
        return self.decoder(sample_triplane(planes, points))

    @torch.no_grad()
    def query_points(self, planes: torch.Tensor, points: torch.Tensor,
                     chunk: int = 2 ** 18) -> FieldOutput:
        """Activated density ``sigma [N,P,1]`` and ``rgb [N,P,3]`` at ``points [N,P,3]``, in chunks."""
        sigmas, rgbs = [], []
        for start in range(0, points.shape[1], chunk):
            raw, rgb = self.query_raw(planes, points[:, start:start + chunk])
            sigmas.append(activate_density(raw))
            rgbs.append(rgb)
        return FieldOutput(sigma=torch.cat(sigmas, dim=1), rgb=torch.cat(rgbs, dim=1))

    @torch.no_grad()
    def query_grid(self, planes: torch.Tensor, grid_size: int, bbox: tuple[float, float] = (-1.0, 1.0),
                   chunk: int = 2 ** 18) -> FieldOutput:
        """Density and colour on the grid ``linspace(bbox, grid_size)³``.

        Returns ``sigma [N,G,G,G,1]`` and ``rgb [N,G,G,G,3]`` with array axes (x, y, z).
        """
        n = planes.shape[0]
        axis = torch.linspace(bbox[0], bbox[1], grid_size, device=planes.device)
        points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(1, -1, 3)
        out = self.query_points(planes, points.expand(n, -1, -1), chunk=chunk)
        return FieldOutput(sigma=out.sigma.reshape(n, grid_size, grid_size, grid_size, 1),
                           rgb=out.rgb.reshape(n, grid_size, grid_size, grid_size, 3))
