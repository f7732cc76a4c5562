"""Stage 4, back-projection: masked depth -> coloured 3-D points, and fusion of several views.

Intrinsics come from the scene (ground truth / COLMAP), a stored VGGT run, or a field-of-view
guess (from the image file's EXIF 35 mm focal length, else a default).
"""
from __future__ import annotations

import logging
import typing
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from core import geometry

log = logging.getLogger(__name__)

CameraSource = Literal["scene", "vggt", "fov guess"]
CAMERA_CHOICES: tuple[str, ...] = typing.get_args(CameraSource)


def erode_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``bool [H,W]`` mask shrunk by ``pixels`` (square structuring element), against edge bleeding."""
    mask = np.asarray(mask, dtype=bool)
    if pixels <= 0:
        return mask.copy()
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0


def exif_fov_deg(path: Path | str | None, width: int, height: int) -> float | None:
    """Horizontal field of view from an image file's EXIF ``FocalLengthIn35mmFilm``, or None."""
    if path is None or not Path(path).is_file():
        return None
    try:
        from PIL import Image

        with Image.open(path) as image:
            exif = image.getexif()
            focal35 = exif.get_ifd(0x8769).get(0xA405) or exif.get(0xA405)
    except Exception:  # unreadable EXIF is simply no EXIF
        return None
    if not focal35:
        return None
    # 35 mm film is 36 mm along its long side; map it onto the image's long side
    long_fov = geometry.fov_from_focal(36.0, float(focal35))
    if width >= height:
        return long_fov
    return geometry.fov_from_focal(width, geometry.focal_from_fov(height, long_fov))


def image_file(scene, view: int) -> Path | None:
    if scene.path is None:
        return None
    folder = Path(scene.path) / "images"
    stem = Path(scene.image_names[view]).stem
    for candidate in (folder / scene.image_names[view], *sorted(folder.glob(stem + ".*"))):
        if candidate.is_file():
            return candidate
    return None


def view_intrinsics(scene, view: int, source: str, fov_deg: float = 60.0, vggt_recon=None
                    ) -> tuple[np.ndarray, str]:
    """(``K [3,3]`` in the scene's pixels, a label saying where it came from)."""
    h, w = scene.image_size
    if source == "scene":
        k = np.asarray(scene.intrinsics[view], dtype=np.float64)
        if not np.isfinite(k).all():
            raise ValueError(f"view {view} has no scene intrinsics; choose 'fov guess' or 'vggt'")
        origin = scene.provenance.get("generator") or scene.provenance.get("source") or "ground truth / COLMAP"
        return k, f"the scene's intrinsics ({origin})"
    if source == "vggt":
        if vggt_recon is None:
            raise ValueError(f"no stored VGGT run includes view {view}: run VGGT first, or choose other intrinsics")
        key, recon = vggt_recon
        return np.asarray(recon.intrinsics[recon.view_ids.index(view)], dtype=np.float64), \
            f"VGGT's intrinsics (run {key[:8]})"
    if source == "fov guess":
        exif = exif_fov_deg(image_file(scene, view), w, h)
        fov = exif if exif is not None else float(fov_deg)
        label = f"a {fov:.1f}° horizontal field of view " + ("from EXIF" if exif is not None else "(default guess)")
        return geometry.intrinsics_from_fov(w, h, fov), label
    raise ValueError(f"unknown camera source {source!r}; choose one of {', '.join(CAMERA_CHOICES)}")


def backproject(depth: np.ndarray, mask: np.ndarray, intrinsics: np.ndarray, image: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masked z-depth -> camera-frame points.

    Args:
        depth: ``[H,W]`` z-depth (0 = invalid); mask: ``bool [H,W]``; intrinsics ``[3,3]``;
        image: ``uint8 [H,W,3]`` for colours.
    Returns:
        ``points float32 [M,3]`` (camera frame, OpenCV), ``colors uint8 [M,3]``,
        ``pixels int [M,2]`` (row, column) — only pixels inside ``mask`` with valid depth.
    """
    points, pixels = geometry.unproject_depth(depth, intrinsics, None, mask)
    colors = image[pixels[:, 0], pixels[:, 1]]
    return points.astype(np.float32), colors.astype(np.uint8), pixels


def to_reference_frame(points_cam: np.ndarray, cam_from_world: np.ndarray, reference_cam_from_world: np.ndarray
                       ) -> np.ndarray:
    """Camera-frame points of one view -> the frame of the reference (first) view's camera."""
    return geometry.transform_points(geometry.relative_pose(cam_from_world, reference_cam_from_world), points_cam)
