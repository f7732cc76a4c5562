"""nerfstudio export: ``transforms.json`` + ``images/`` + ``points.ply`` (initial points for splatfacto).

``transforms.json`` holds ``camera_model`` (``OPENCV``), ``ply_file_path`` and one frame per posed
view with ``file_path`` (``images/<stem>.png``), ``transform_matrix`` (camera-to-world in
nerfstudio's OpenGL camera convention: x right, y up, z backward), ``fl_x fl_y cx cy w h`` in pixels
(nerfstudio puts pixel centres at +0.5, so ``cx = cx_ours + 0.5``), ``k1 k2 p1 p2`` (zeros for a
pinhole camera) and ``reconbench_view_id``. Coordinates are the run's world frame unchanged.

    transform_matrix = inverse(cam_from_world) @ diag(1, -1, -1, 1)
    cam_from_world   = inverse(transform_matrix @ diag(1, -1, -1, 1))
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core import geometry
from core.data.scene import atomic_write_bytes, to_json
from core.export import ply
from core.export.views import finite_points, posed_views, write_images

FILE_NAME = "transforms.json"
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


def c2w_opengl(cam_from_world: np.ndarray) -> np.ndarray:
    """``[4,4]`` nerfstudio camera-to-world (OpenGL camera axes) of an OpenCV ``cam_from_world``."""
    return geometry.invert_transform(np.asarray(cam_from_world, dtype=np.float64)) @ OPENCV_TO_OPENGL


def cam_from_world_of(transform_matrix: np.ndarray) -> np.ndarray:
    """The inverse of :func:`c2w_opengl`: OpenCV ``cam_from_world`` of a nerfstudio ``transform_matrix``."""
    return geometry.invert_transform(np.asarray(transform_matrix, dtype=np.float64) @ OPENCV_TO_OPENGL)


def transforms(run) -> dict:
    """The ``transforms.json`` object of one :class:`core.export.StoredRun` (see module doc)."""
    h, w = run.scene.image_size
    frames = []
    for view in posed_views(run.recon, run.scene):
        k = view.intrinsics
        frame = {"file_path": f"images/{view.file_name}", "transform_matrix": c2w_opengl(view.cam_from_world).tolist(),
                 "fl_x": float(k[0, 0]), "fl_y": float(k[1, 1]), "cx": float(k[0, 2]) + 0.5,
                 "cy": float(k[1, 2]) + 0.5, "w": int(w), "h": int(h), "reconbench_view_id": view.view_id}
        frame.update({name: float(value) for name, value in zip(("k1", "k2", "p1", "p2"), view.distortion)})
        frames.append(frame)
    return {"camera_model": "OPENCV", "ply_file_path": ply.FILE_NAME, "frames": frames,
            "reconbench_run": run.label, "reconbench_method": run.recon.method}


def write(run, folder: Path) -> None:
    """Write ``transforms.json``, the posed views' images and the points into ``folder``."""
    folder = Path(folder)
    (folder / "images").mkdir()
    write_images(posed_views(run.recon, run.scene), folder / "images")
    recon = run.recon
    keep = finite_points(recon)
    atomic_write_bytes(folder / ply.FILE_NAME, ply.ply_bytes(
        recon.points[keep], None if recon.colors is None else recon.colors[keep]))
    atomic_write_bytes(folder / FILE_NAME, to_json(transforms(run)).encode())
