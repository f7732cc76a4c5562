"""PLY export: the run's finite points as a binary little-endian PLY, ``points.ply``.

Vertex properties: ``x y z`` float32 (the run's world frame, its units), ``red green blue`` uchar
(when the run has colours), ``confidence`` float32 (when the method gives one; higher = more
certain, the method's own scale). A run with a mesh and no points is written as that mesh
(vertices, faces, vertex colours).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.data.scene import atomic_write_bytes
from core.export.views import finite_points

FILE_NAME = "points.ply"


def ply_bytes(points: np.ndarray, colors: np.ndarray | None = None, confidence: np.ndarray | None = None) -> bytes:
    """A binary little-endian PLY of a point cloud.

    Args:
        points: ``float32 [N,3]``; colors: optional ``uint8 [N,3]``; confidence: optional ``float32 [N]``.
    """
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    if confidence is not None:
        fields += [("confidence", "<f4")]
    vertices = np.empty(len(points), dtype=fields)
    vertices["x"], vertices["y"], vertices["z"] = points.T
    if colors is not None:
        colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
        vertices["red"], vertices["green"], vertices["blue"] = colors.T
    if confidence is not None:
        vertices["confidence"] = np.asarray(confidence, dtype=np.float32)
    types = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", "comment written by ReconBench",
              f"element vertex {len(points)}"]
    header += [f"property {types[t]} {name}" for name, t in fields]
    header.append("end_header")
    return ("\n".join(header) + "\n").encode("ascii") + vertices.tobytes()


def write(run, folder: Path) -> None:
    """Write ``folder/points.ply`` for one :class:`core.export.StoredRun`."""
    recon = run.recon
    keep = finite_points(recon)
    if keep.any() or recon.mesh_faces is None or len(recon.mesh_faces) == 0:
        data = ply_bytes(recon.points[keep], None if recon.colors is None else recon.colors[keep],
                         None if recon.confidence is None else recon.confidence[keep])
    else:
        import trimesh

        mesh = trimesh.Trimesh(recon.mesh_vertices, recon.mesh_faces, process=False,
                               vertex_colors=recon.mesh_colors)
        data = mesh.export(file_type="ply", encoding="binary")
    atomic_write_bytes(Path(folder) / FILE_NAME, data)
