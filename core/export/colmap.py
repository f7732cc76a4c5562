"""COLMAP export: a binary sparse model written with pycolmap, the input images and a README.

Layout (COLMAP's project layout, which COLMAP's GUI, nerfstudio's ``ns-process-data`` and Gaussian
splatting read)::

    images/<stem>.png         the run's posed input views (lossless)
    sparse/0/cameras.bin      one camera per posed view: PINHOLE fx fy cx cy at the scene's image
                              size (OPENCV with k1 k2 p1 p2 when the run recorded distortion)
    sparse/0/images.bin       cam_from_world of each view (the run's world frame), its 2-D points
    sparse/0/points3D.bin     the run's finite points with colours, in order (point id = row + 1)
    sparse/0/rigs.bin, frames.bin   trivial rigs/frames (pycolmap 4 writes them)
    README.txt                what the model holds, how tracks were made

Camera and image ids are the view's position in the run's ``view_ids`` + 1. COLMAP puts pixel
centres at +0.5 (``cx_colmap = cx + 0.5``, keypoint ``u_colmap = u + 0.5``); ReconBench at 0.

Tracks (the 2-D observations of each point): a point is observed in the view it came from
(``recon.source_view``) at its projection, and in every other posed view whose depth map
(``recon.depth_maps``) agrees with the point's depth there within :data:`DEPTH_TOLERANCE`
(relative; nearest depth-map pixel). Without a source view or depth maps a point gets no
observations; the README says how many points have none.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core import geometry
from core.data.scene import Reconstruction, atomic_write_bytes
from core.export.views import PosedView, finite_points, posed_views, write_images

DEPTH_TOLERANCE = 0.01


def _in_image(uv: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``bool [N]``: pixels (integer = centre) inside an ``(H, W)`` image."""
    h, w = size
    with np.errstate(invalid="ignore"):
        return (np.isfinite(uv).all(axis=1) & (uv[:, 0] >= -0.5) & (uv[:, 0] < w - 0.5)
                & (uv[:, 1] >= -0.5) & (uv[:, 1] < h - 0.5))


def _depth_agrees(depth_map: np.ndarray, uv: np.ndarray, z: np.ndarray, size: tuple[int, int],
                  tolerance: float) -> np.ndarray:
    """``bool [N]``: the depth map (``[h,w]``, any resolution of the ``(H, W)`` image) at the nearest
    pixel to ``uv`` is valid and within ``tolerance * z`` of ``z``. ``uv`` must be inside the image."""
    h, w = depth_map.shape
    big_h, big_w = size
    col = np.clip(np.rint((uv[:, 0] + 0.5) * w / big_w - 0.5), 0, w - 1).astype(np.int64)
    row = np.clip(np.rint((uv[:, 1] + 0.5) * h / big_h - 0.5), 0, h - 1).astype(np.int64)
    d = depth_map[row, col]
    return (d > 0) & np.isfinite(d) & (np.abs(d - z) <= tolerance * z)


def observations(recon: Reconstruction, points: np.ndarray, source: np.ndarray | None,
                 views: list[PosedView], size: tuple[int, int], tolerance: float = DEPTH_TOLERANCE
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per posed view, ``(point rows [K], uv [K,2])`` of the points observed in it (see module doc).

    Args:
        points: ``float64 [N,3]`` the points written; source: ``int [N]`` index into ``view_ids``
            of each point's source view (-1 = none), or None.
        size: ``(H, W)`` of the scene images. uv are ReconBench pixels (integer = centre).
    """
    out = []
    for view in views:
        uv, z = geometry.project(points, view.intrinsics, view.cam_from_world)
        inside = _in_image(uv, size) & (z > 0)
        seen = np.zeros(len(points), dtype=bool)
        if source is not None:
            seen |= inside & (source == view.index)
        if recon.depth_maps is not None and view.index < len(recon.depth_maps):
            rows = np.flatnonzero(inside & ~seen)
            seen[rows[_depth_agrees(recon.depth_maps[view.index], uv[rows], z[rows], size, tolerance)]] = True
        rows = np.flatnonzero(seen)
        out.append((rows, uv[rows]))
    return out


def build(recon: Reconstruction, views: list[PosedView], size: tuple[int, int]):
    """``(pycolmap.Reconstruction, observations, points observed at least once)`` of the run (module doc)."""
    import pycolmap

    model = pycolmap.Reconstruction()
    keep = finite_points(recon)
    points = recon.points[keep].astype(np.float64)
    colors = recon.colors[keep] if recon.colors is not None else np.full((len(points), 3), 128, np.uint8)
    source = recon.source_view[keep] if recon.source_view is not None else None
    seen = observations(recon, points, source, views, size)
    h, w = size
    for view, (rows, uv) in zip(views, seen):
        k = view.intrinsics
        params = [k[0, 0], k[1, 1], k[0, 2] + 0.5, k[1, 2] + 0.5]
        model_name = "PINHOLE"
        if view.has_distortion:
            model_name, params = "OPENCV", params + [float(d) for d in view.distortion]
        camera_id = view.index + 1
        model.add_camera_with_trivial_rig(pycolmap.Camera(model=model_name, width=w, height=h, params=params,
                                                          camera_id=camera_id))
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(view.cam_from_world[:3, :3]), view.cam_from_world[:3, 3])
        image = pycolmap.Image(name=view.file_name, keypoints=uv + 0.5, camera_id=camera_id, image_id=camera_id)
        model.add_image_with_trivial_frame(image, pose)
    # Track elements grouped by point: (point row, image id, 2-D point index), sorted by point row.
    if seen:
        rows = np.concatenate([r for r, _ in seen])
        image_ids = np.concatenate([np.full(len(r), v.index + 1) for v, (r, _) in zip(views, seen)])
        point2d = np.concatenate([np.arange(len(r)) for r, _ in seen])
    else:
        rows = image_ids = point2d = np.zeros(0, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    rows, image_ids, point2d = rows[order], image_ids[order], point2d[order]
    bounds = np.searchsorted(rows, np.arange(len(points) + 1))
    for i in range(len(points)):
        track = pycolmap.Track()
        for j in range(bounds[i], bounds[i + 1]):
            track.add_element(int(image_ids[j]), int(point2d[j]))
        model.add_point3D(points[i], track, colors[i])
    return model, len(rows), int(np.count_nonzero(np.diff(bounds)))


def write(run, folder: Path) -> None:
    """Write the COLMAP export (see module doc) of one :class:`core.export.StoredRun` into ``folder``."""
    recon, scene = run.recon, run.scene
    views = posed_views(recon, scene)
    size = scene.image_size
    model, count, tracked = build(recon, views, size)
    sparse = Path(folder) / "sparse" / "0"
    sparse.mkdir(parents=True)
    model.write_binary(str(sparse))
    (Path(folder) / "images").mkdir()
    write_images(views, Path(folder) / "images")
    lines = [
        f"COLMAP sparse model of ReconBench run {run.label}",
        f"method {recon.method} (version {recon.version}), weights {recon.weights_kind or 'none'}, "
        f"options {recon.options}",
        f"{len(views)} posed views of {len(recon.view_ids)} input views (scene view ids "
        f"{[v.view_id for v in views]}); images {size[1]}x{size[0]} px in images/",
        "poses: cam_from_world in the run's world frame (learned methods: the first view's camera; "
        "arbitrary scale)",
        "cameras: PINHOLE from the run's intrinsics" + (" (OPENCV where the run recorded distortion)"
                                                        if any(v.has_distortion for v in views) else "")
        + "; COLMAP pixel centres at +0.5",
        f"points3D: {model.num_points3D()} points with colours (point id = row + 1 of the run's finite points)",
    ]
    if count == 0:
        lines.append("tracks: none - the run records no source view or depth map per point, so the points "
                     "have no 2-D observations")
    else:
        lines.append(f"tracks: {count} observations; {tracked} of {model.num_points3D()} points observed: "
                     "each point in the view it came from and in every other view whose predicted depth map "
                     f"agrees with its depth within {DEPTH_TOLERANCE:.0%}")
        if tracked < model.num_points3D():
            lines.append(f"{model.num_points3D() - tracked} points have no observation (outside every image "
                         "or no agreeing depth)")
    atomic_write_bytes(Path(folder) / "README.txt", ("\n".join(lines) + "\n").encode())
