"""The object crop: an oriented box around the object, proposed from the cameras and the points.

A prepared scene's ground truth is the dense points inside this box (``gt_points.npz``,
``object.ply``); the box itself is stored as ``crop.json``. All coordinates are in the scene's
world frame (COLMAP's, arbitrary similarity of the true one).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import geometry
from core.data.importers import ply_bytes
from core.data.prepare import DatasetError
from core.data.scene import atomic_write_bytes, npz_bytes, to_json


@dataclass
class CropBox:
    """An oriented box: ``world_from_box`` rotation (columns = box axes in the world), centre, half extents.

    A world point x is inside when ``|R^T (x - centre)| <= half_extents`` component-wise.
    The box's z axis is the estimated "up" (cameras' mean up direction or the support plane's normal).
    """

    centre: np.ndarray
    rotation: np.ndarray
    half_extents: np.ndarray

    def local(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, np.float64) - self.centre) @ self.rotation

    def contains(self, points: np.ndarray) -> np.ndarray:
        """``bool [N]``: points inside the box."""
        if len(points) == 0:
            return np.zeros(0, bool)
        return np.all(np.abs(self.local(points)) <= self.half_extents, axis=1)

    def corners(self) -> np.ndarray:
        """``[8,3]`` world corners."""
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64)
        return self.centre + (signs * self.half_extents) @ self.rotation.T

    def to_dict(self) -> dict:
        return {"centre": self.centre.tolist(), "rotation": self.rotation.tolist(),
                "half_extents": self.half_extents.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "CropBox":
        return cls(np.asarray(data["centre"], np.float64), np.asarray(data["rotation"], np.float64),
                   np.asarray(data["half_extents"], np.float64))

    def adjusted(self, shift: np.ndarray = np.zeros(3), scale: np.ndarray = np.ones(3),
                 bottom: float | None = None, top: float | None = None) -> "CropBox":
        """A copy moved by ``shift`` (box axes, fraction of each half extent) and scaled per axis;
        ``bottom``/``top`` move the lower/upper face along the box z axis (fraction of the half height)."""
        half = self.half_extents * np.asarray(scale, np.float64)
        centre = self.centre + self.rotation @ (np.asarray(shift, np.float64) * self.half_extents)
        lo, hi = -half[2], half[2]
        if bottom is not None:
            lo += bottom * self.half_extents[2]
        if top is not None:
            hi += top * self.half_extents[2]
        if hi <= lo:
            raise DatasetError("the crop box's top must be above its bottom")
        centre = centre + self.rotation[:, 2] * (lo + hi) / 2
        half = np.array([half[0], half[1], (hi - lo) / 2])
        return CropBox(centre, self.rotation.copy(), half)


def _frame_from_up(up: np.ndarray) -> np.ndarray:
    up = up / np.linalg.norm(up)
    helper = np.array([1.0, 0, 0]) if abs(up[0]) < 0.9 else np.array([0, 1.0, 0])
    x = np.cross(helper, up)
    x /= np.linalg.norm(x)
    y = np.cross(up, x)
    return np.stack([x, y, up], axis=1)


def _support_plane(points: np.ndarray, up: np.ndarray, threshold: float) -> tuple[np.ndarray, float, float] | None:
    """The support plane (a table) roughly perpendicular to ``up`` under the points, if any.

    The heights along ``up`` are histogrammed (bins of ``2 * threshold``); the densest bin, when it
    holds >= 3 % of the points and more points lie above it than below, seeds a least-squares plane
    fit (two rounds of inlier selection at ``threshold``). Returns (unit normal towards up, offset d with
    ``n . x = d``, inlier share) or None.
    """
    if len(points) < 30:
        return None
    heights = points @ up
    bins = np.arange(heights.min(), heights.max() + 2 * threshold, 2 * threshold)
    if len(bins) < 3:
        return None
    counts, edges = np.histogram(heights, bins=bins)
    peak = int(np.argmax(counts))
    level = (edges[peak] + edges[peak + 1]) / 2
    if counts[peak] < 0.03 * len(points) or (heights > level + threshold).sum() < (heights < level - threshold).sum():
        return None
    normal, offset = up, level
    inliers = np.abs(heights - level) < 2 * threshold
    for _ in range(2):
        selected = points[inliers]
        mean = selected.mean(axis=0)
        candidate = np.linalg.svd(selected - mean, full_matrices=False)[2][-1]
        candidate = candidate if candidate @ up > 0 else -candidate
        if candidate @ up < np.cos(np.radians(25)):
            break
        normal, offset = candidate, float(candidate @ mean)
        inliers = np.abs(points @ normal - offset) < threshold
        if inliers.sum() < 3:
            return None
    return normal, float(offset), float(inliers.mean())


def propose_crop(cam_from_world: np.ndarray, points: np.ndarray) -> CropBox:
    """Propose the object's box from the cameras and the (sparse or dense) points.

    1. centre guess: least-squares intersection of the optical axes
       (:func:`core.geometry.least_squares_ray_intersection`);
    2. keep the points within 40 % of the median camera distance of that centre;
    3. up = the cameras' mean up direction; when a plane roughly perpendicular to it holds
       >= 3 % of those points below most of the others (a table), the box stands on it and up is its normal;
    4. the box spans the 0.5-99.5th percentiles of the remaining points (above the plane), grown 15 %.
    """
    ok = np.isfinite(cam_from_world).all(axis=(1, 2))
    if ok.sum() < 2:
        raise DatasetError("an object crop needs at least 2 registered views")
    poses = cam_from_world[ok]
    centres = geometry.camera_center(poses)
    axes = poses[:, 2, :3]
    centre = geometry.least_squares_ray_intersection(centres, axes)
    distance = float(np.median(np.linalg.norm(centres - centre, axis=1)))
    points = np.asarray(points, np.float64)
    points = points[np.isfinite(points).all(axis=1)]
    near = points[np.linalg.norm(points - centre, axis=1) < 0.4 * distance]
    up = -poses[:, 1, :3].mean(axis=0)  # camera y points down
    up /= np.linalg.norm(up)
    if len(near) < 10:
        rotation = _frame_from_up(up)
        return CropBox(centre, rotation, np.full(3, 0.2 * distance))
    plane = _support_plane(near, up, threshold=0.004 * distance)
    floor = None
    if plane is not None and plane[2] >= 0.03:
        up, floor = plane[0], plane[1]
    rotation = _frame_from_up(up)
    local = (near - centre) @ rotation
    if floor is not None:
        height = near @ up - floor
        above = height > 0.012 * distance
        if above.sum() >= 10:
            local = local[above]
    lo = np.percentile(local, 0.5, axis=0)
    hi = np.percentile(local, 99.5, axis=0)
    if floor is not None:
        lo[2] = floor + 0.006 * distance - centre @ up  # just above the table
    size = (hi - lo) * 1.15
    mid = (lo + hi) / 2
    if floor is not None:  # grow upwards only
        mid[2] = lo[2] + (hi[2] - lo[2]) * 1.075 / 2
        size[2] = (hi[2] - lo[2]) * 1.075
    return CropBox(centre + rotation @ mid, rotation, np.maximum(size / 2, 1e-6))


def load_dense(folder: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(points, colors) of a prepared scene's fused cloud (``dense/fused.npz``)."""
    path = Path(folder) / "dense" / "fused.npz"
    if not path.is_file():
        raise DatasetError(f"{folder} has no dense cloud (prepared with --no-dense?)")
    with np.load(path) as data:
        return data["points"], data["colors"]


def write_crop(folder: Path | str, crop: CropBox, object_points: np.ndarray, object_colors: np.ndarray) -> None:
    """Write ``crop.json`` and ``object.ply`` (the object points ``[M,3]`` with colours ``[M,3]`` uint8)."""
    folder = Path(folder)
    atomic_write_bytes(folder / "crop.json", to_json(crop.to_dict()).encode())
    atomic_write_bytes(folder / "object.ply", ply_bytes(object_points, object_colors))


def apply_crop(folder: Path | str, crop: CropBox) -> int:
    """Store the dense points inside ``crop`` as the scene's ground truth (gt_points.npz, object.ply,
    crop.json, and the box in scene.json's provenance).

    Returns the number of object points. Raises DatasetError when the box holds fewer than 10.
    """
    folder = Path(folder)
    points, colors = load_dense(folder)
    inside = crop.contains(points)
    if inside.sum() < 10:
        raise DatasetError(f"the crop box holds {int(inside.sum())} points; enlarge or move it")
    atomic_write_bytes(folder / "gt_points.npz", npz_bytes(points=points[inside].astype(np.float32),
                                                           colors=colors[inside].astype(np.uint8)))
    write_crop(folder, crop, points[inside], colors[inside])
    meta_path = folder / "scene.json"
    meta = json.loads(meta_path.read_text())
    meta.setdefault("provenance", {})["crop"] = crop.to_dict()
    atomic_write_bytes(meta_path, to_json(meta).encode())  # new mtime: the app reloads the scene
    return int(inside.sum())


def load_crop(folder: Path | str) -> CropBox | None:
    """The crop box stored in ``<folder>/crop.json``, or None when there is none."""
    path = Path(folder) / "crop.json"
    return CropBox.from_dict(json.loads(path.read_text())) if path.is_file() else None
