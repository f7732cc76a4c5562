"""Mesh extraction from LRM's density grid, export, and surface sampling.

Frame: OpenLRM's canonical object frame (box [-1,1]³, up +z). Marching cubes runs on the
activated density ``sigma`` sampled at ``linspace(-1,1,G)³`` (array axes x, y, z) at iso-level
``threshold`` (3.0 in the authors' inference); vertices are mapped from grid index units by
``v/(G-1)·2 - 1``. PyMCubes (the authors' choice) is used when installed, otherwise
scikit-image's classic (Lorensen) marching cubes, which gives the same vertices but may
triangulate ambiguous cells differently.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("ply", "obj", "glb")


@dataclass
class Mesh:
    """A triangle mesh in the canonical frame.

    Attributes:
        vertices: ``float32 [V,3]``.
        faces: ``int64 [F,3]`` (PyMCubes winding).
        colors: ``float32 [V,3]`` decoder rgb in [0,1] at the vertices.
    """

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray

    @property
    def colors_uint8(self) -> np.ndarray:
        """``uint8 [V,3]`` as the reference exports them (``rgb·255`` truncated)."""
        return (np.clip(self.colors, 0, 1) * 255).astype(np.uint8)

    @property
    def is_empty(self) -> bool:
        return len(self.faces) == 0

    def to_trimesh(self):
        import trimesh
        return trimesh.Trimesh(vertices=self.vertices, faces=self.faces,
                               vertex_colors=self.colors_uint8, process=False)

    @property
    def is_watertight(self) -> bool:
        """Every edge shared by exactly two faces (trimesh's definition)."""
        return (not self.is_empty) and bool(self.to_trimesh().is_watertight)


def marching_cubes(volume: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``float64 [V,3]`` (grid index units, axes as the array's) and faces ``int64 [F,3]``."""
    volume = np.ascontiguousarray(volume, dtype=np.float64)
    if not (volume.min() < threshold < volume.max()):
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    try:
        import mcubes
        vertices, faces = mcubes.marching_cubes(volume, float(threshold))
    except ImportError:
        from skimage import measure
        vertices, faces, _, _ = measure.marching_cubes(volume, float(threshold), method="lorensen")
    return np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)


def extract_mesh(model, planes: torch.Tensor, grid_size: int, threshold: float,
                 sigma: torch.Tensor | None = None) -> Mesh:
    """Marching-cubes mesh of one triplane ``planes [1,3,C,H,W]`` (module docstring).

    Args:
        model: an :class:`~core.models.lrm.LRM` (for its grid and point queries).
        grid_size: G, samples per axis.
        threshold: iso-level on the activated density.
        sigma: optional precomputed ``[1,G,G,G,1]`` density grid.

    Returns:
        :class:`Mesh` (empty when the density never crosses ``threshold``).
    """
    if sigma is None:
        sigma = model.query_grid(planes, grid_size).sigma
    vertices, faces = marching_cubes(sigma[0, ..., 0].detach().cpu().numpy(), threshold)
    vertices = (vertices / (grid_size - 1) * 2 - 1).astype(np.float32)
    if len(vertices):
        pts = torch.from_numpy(vertices).to(planes.device).unsqueeze(0)
        colors = model.query_points(planes, pts).rgb[0].cpu().numpy().astype(np.float32)
    else:
        colors = np.zeros((0, 3), dtype=np.float32)
    return Mesh(vertices=vertices, faces=faces, colors=colors)


def export_mesh(mesh: Mesh, path: str | Path) -> Path:
    """Write ``mesh`` with vertex colours as PLY, OBJ or GLB (by the file suffix)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"mesh format {fmt!r} not supported; use one of {', '.join(EXPORT_FORMATS)}")
    if mesh.is_empty:
        raise ValueError("the mesh is empty; nothing to export")
    path.parent.mkdir(parents=True, exist_ok=True)
    mesh.to_trimesh().export(str(path), file_type=fmt)
    return path


def sample_surface(mesh: Mesh, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform random points on the mesh: ``float32 [count,3]`` and their face ids ``int64 [count]``.

    Deterministic for a given ``seed``.
    """
    if mesh.is_empty:
        return np.zeros((0, 3), dtype=np.float32), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    tri = mesh.vertices[mesh.faces].astype(np.float64)  # [F,3,3]
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if areas.sum() <= 0:
        return np.zeros((0, 3), dtype=np.float32), np.zeros(0, dtype=np.int64)
    face_ids = rng.choice(len(areas), size=count, p=areas / areas.sum())
    r1, r2 = rng.random(count), rng.random(count)
    flip = r1 + r2 > 1
    r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
    t = tri[face_ids]
    points = t[:, 0] + r1[:, None] * (t[:, 1] - t[:, 0]) + r2[:, None] * (t[:, 2] - t[:, 0])
    return points.astype(np.float32), face_ids.astype(np.int64)
