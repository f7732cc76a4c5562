"""OpenLRM's canonical cameras (object frame: box [-1,1]³, world up +z).

- Source camera ``[16]``: camera-to-world ``[:3,:4]`` row-major ``[[1,0,0,0],[0,0,-1,-d],[0,1,0,0]]``
  (camera at (0,-d,0) looking at the origin along +y; OpenGL axes, x right, y up, looking along
  -z) followed by the normalised intrinsics fx, fy, cx, cy = 0.75, 0.75, 0.5, 0.5.
- Render cameras ``[25]``: camera-to-world 4×4 row-major (OpenGL axes) + normalised 3×3
  intrinsics row-major. The orbit: radius 2, height 0.8, azimuth ``linspace(-π/2, 3π/2, n)``,
  looking at the origin with up +z (the first and last views coincide, as in the reference).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from core import geometry

FOCAL = 0.75
PRINCIPAL = 0.5

# OpenGL camera axes (x right, y up, -z forward) <-> OpenCV (x right, y down, z forward)
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def normalized_intrinsics(focal: float = FOCAL, principal: float = PRINCIPAL) -> torch.Tensor:
    """``[3,3]`` intrinsics in units of the image side."""
    return torch.tensor([[focal, 0.0, principal], [0.0, focal, principal], [0.0, 0.0, 1.0]])


def source_camera(distance: float = 2.0, batch: int = 1) -> torch.Tensor:
    """The canonical source camera ``[batch,16]`` (module docstring)."""
    extrinsics = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, -distance], [0, 1, 0, 0]])
    intr = torch.tensor([FOCAL, FOCAL, PRINCIPAL, PRINCIPAL])
    return torch.cat([extrinsics.reshape(12), intr]).unsqueeze(0).repeat(batch, 1)


def opengl_look_at_c2w(positions: torch.Tensor, target: torch.Tensor | None = None,
                       up: torch.Tensor | None = None) -> torch.Tensor:
    """LRM's look-at: OpenGL camera-to-world ``[M,4,4]`` for cameras at ``positions [M,3]``
    looking at ``target`` (default the origin, up +z).

    LRM's own convention, kept because its render cameras are fed to the network as they are:
    OpenGL axes (x right, y up, looking along -z) and camera-to-world, where
    :func:`core.geometry.look_at` returns ReconBench's OpenCV ``cam_from_world``.
    """
    target = torch.zeros(3) if target is None else target
    up = torch.tensor([0.0, 0.0, 1.0]) if up is None else up
    z = positions - target
    z = z / z.norm(dim=-1, keepdim=True)
    x = torch.cross(up.expand_as(z), z, dim=-1)
    x = x / x.norm(dim=-1, keepdim=True)
    y = torch.cross(z, x, dim=-1)
    y = y / y.norm(dim=-1, keepdim=True)
    c2w = torch.eye(4).repeat(positions.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = x, y, z, positions
    return c2w


def orbit_cameras(n_views: int, radius: float = 2.0, height: float = 0.8) -> torch.Tensor:
    """The inference orbit as render cameras ``[n_views,25]`` (module docstring)."""
    if n_views < 1:
        raise ValueError("the orbit needs at least one view")
    theta = torch.linspace(-math.pi / 2, 3 * math.pi / 2, n_views)
    ring = math.sqrt(radius ** 2 - height ** 2)
    positions = torch.stack([torch.cos(theta) * ring, torch.sin(theta) * ring,
                             torch.full((n_views,), height)], dim=-1)
    c2w = opengl_look_at_c2w(positions)
    k = normalized_intrinsics().reshape(1, 9).repeat(n_views, 1)
    return torch.cat([c2w.reshape(n_views, 16), k], dim=-1)


def source_cam_from_world_cv(distance: float = 2.0) -> np.ndarray:
    """``float64 [4,4]`` world->camera (OpenCV axes) of the canonical source camera."""
    c2w = np.eye(4)
    c2w[:3, :4] = source_camera(distance)[0, :12].double().numpy().reshape(3, 4)
    return geometry.invert_transform(c2w @ GL_TO_CV)
