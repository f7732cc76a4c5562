"""The pieces of a run the exports share: its posed input views (camera, image, file name) and
its finite points.

Conventions are ReconBench's (DESIGN.md): OpenCV cameras, ``cam_from_world`` 4x4, intrinsics 3x3 in
pixels of the scene's images with integer coordinates at pixel centres.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.data.scene import Reconstruction, Scene, atomic_write_bytes


@dataclass(frozen=True)
class PosedView:
    """One input view of a run that has a finite predicted pose.

    Attributes:
        index: position in ``recon.view_ids`` (the row of the run's camera arrays).
        view_id: the scene's view id.
        file_name: the image's file name in an export's ``images/`` folder (``<stem>.png``).
        intrinsics: ``float64 [3,3]`` pixels of the scene image (integer = pixel centre).
        cam_from_world: ``float64 [4,4]`` world -> camera (OpenCV), the run's world frame.
        distortion: ``float64 [4]`` OpenCV ``(k1, k2, p1, p2)``; zeros for a pinhole camera.
        image: ``uint8 [H,W,3]`` the scene's view.
    """

    index: int
    view_id: int
    file_name: str
    intrinsics: np.ndarray
    cam_from_world: np.ndarray
    distortion: np.ndarray
    image: np.ndarray

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.distortion != 0))


def _file_names(scene: Scene, view_ids: list[int]) -> list[str]:
    stems = [Path(scene.image_names[v]).stem for v in view_ids]
    if len(set(stems)) != len(stems):
        stems = [f"{v:04d}_{s}" for v, s in zip(view_ids, stems)]
    return [f"{s}.png" for s in stems]


def posed_views(recon: Reconstruction, scene: Scene) -> list[PosedView]:
    """The run's input views with a finite predicted pose, in input order.

    Intrinsics are the run's (``recon.intrinsics``) or, when the method predicts none, the scene's
    for that view (intrinsics do not depend on the world frame). Distortion comes from
    ``recon.extra["distortion"]`` (``[V,4]``, COLMAP's runs) when recorded.
    """
    if not recon.has_cameras:
        return []
    ids = list(recon.view_ids)
    if len(ids) != len(recon.cam_from_world):
        ids = ids[:len(recon.cam_from_world)]
    names = _file_names(scene, ids)
    distortion = np.asarray(recon.extra.get("distortion", np.zeros((len(ids), 4))), dtype=np.float64)
    if distortion.shape != (len(recon.cam_from_world), 4):
        distortion = np.zeros((len(recon.cam_from_world), 4))
    views = []
    for i, view_id in enumerate(ids):
        pose = recon.cam_from_world[i]
        k = recon.intrinsics[i] if recon.intrinsics is not None and i < len(recon.intrinsics) \
            else scene.intrinsics[view_id]
        if not (np.isfinite(pose).all() and np.isfinite(k).all()) or not 0 <= view_id < scene.num_views:
            continue
        views.append(PosedView(i, int(view_id), names[i], np.asarray(k, dtype=np.float64),
                               np.asarray(pose, dtype=np.float64), distortion[i], scene.images[view_id]))
    return views


def finite_points(recon: Reconstruction) -> np.ndarray:
    """``bool [N]``: points with finite coordinates (the ones every export writes, in order)."""
    return np.isfinite(recon.points).all(axis=1)


def write_images(views: list[PosedView], folder: Path) -> None:
    """Write each view's image as a lossless PNG ``folder/<file_name>``."""
    for view in views:
        buffer = io.BytesIO()
        Image.fromarray(view.image).save(buffer, format="PNG", compress_level=1)
        atomic_write_bytes(Path(folder) / view.file_name, buffer.getvalue())


def frustum_depth(recon: Reconstruction) -> float:
    """Length of drawn camera frustums: 10 % of the largest extent of the finite points (1 if none)."""
    points = recon.points[finite_points(recon)]
    if len(points) == 0 and recon.mesh_vertices is not None and len(recon.mesh_vertices):
        points = recon.mesh_vertices
    extent = float(np.ptp(points, axis=0).max()) if len(points) else 0.0
    return 0.1 * extent if extent > 0 else 1.0
