"""GLB export (glTF binary, via trimesh): ``scene.glb`` with the run's geometry and cameras.

Nodes: ``mesh`` when the run has one (with its vertex colours), else ``points`` (the finite points
with RGBA vertex colours; grey when the run has none), and one ``camera_<view id>`` line geometry per
posed view: its frustum (centre to the four image corners, and the image rectangle) at 10 % of the
cloud's extent. Coordinates are the run's world frame unchanged (OpenCV-style axes: y down, so
a glTF viewer, which is y-up, may show learned methods' results upside down).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core import geometry
from core.data.scene import atomic_write_bytes
from core.export.views import finite_points, frustum_depth, posed_views

FILE_NAME = "scene.glb"
CAMERA_PREFIX = "camera_"


def _rgba(colors: np.ndarray | None, count: int) -> np.ndarray:
    rgba = np.full((count, 4), 255, dtype=np.uint8)
    rgba[:, :3] = 160 if colors is None else np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    return rgba


def frustum_path(corners: np.ndarray):
    """A trimesh ``Path3D`` of a frustum from :func:`core.geometry.frustum_corners` (``[5,3]``:
    centre then image corners): four edges from the centre and the closed image rectangle."""
    from trimesh.path import Path3D
    from trimesh.path.entities import Line

    entities = [Line([0, c]) for c in (1, 2, 3, 4)] + [Line([1, 2, 3, 4, 1])]
    return Path3D(entities=entities, vertices=np.asarray(corners, dtype=np.float64), process=False)


def build(run):
    """The ``trimesh.Scene`` of one :class:`core.export.StoredRun` (see module doc)."""
    import trimesh

    recon, scene = run.recon, run.scene
    out = trimesh.Scene()
    keep = finite_points(recon)
    if recon.mesh_vertices is not None and recon.mesh_faces is not None and len(recon.mesh_faces):
        mesh = trimesh.Trimesh(recon.mesh_vertices, recon.mesh_faces, process=False,
                               vertex_colors=None if recon.mesh_colors is None else _rgba(recon.mesh_colors,
                                                                                          len(recon.mesh_vertices)))
        out.add_geometry(mesh, node_name="mesh", geom_name="mesh")
    elif keep.any():
        cloud = trimesh.PointCloud(recon.points[keep],
                                   colors=_rgba(None if recon.colors is None else recon.colors[keep], int(keep.sum())))
        out.add_geometry(cloud, node_name="points", geom_name="points")
    depth = frustum_depth(recon)
    for view in posed_views(recon, scene):
        corners = geometry.frustum_corners(view.intrinsics, view.cam_from_world, scene.image_size, depth)
        name = f"{CAMERA_PREFIX}{view.view_id}"
        out.add_geometry(frustum_path(corners), node_name=name, geom_name=name)
    return out


def write(run, folder: Path) -> None:
    """Write ``folder/scene.glb``."""
    atomic_write_bytes(Path(folder) / FILE_NAME, build(run).export(file_type="glb"))
