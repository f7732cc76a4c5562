"""Loading data in the 3D-R2N2 / 3D-LMNet layout (real ShapeNet or the procedural set).

Layout::

    ROOT/<synset>/<model>/rendering/00.png .. 23.png      137x137 RGBA (or RGB on white)
    ROOT/<synset>/<model>/rendering/rendering_metadata.txt one line per view:
        azimuth elevation in_plane_rotation distance fov   (degrees, distance units)
    ROOT/<synset>/<model>/pointcloud_2048.npy              [2048,3] (or under POINTS_ROOT with the
                                                            same <synset>/<model> path, as 3D-LMNet ships them)
    ROOT/splits.json                                       optional {"train": ["<synset>/<model>", ...], ...}

Images are composited onto white (RGBA) and centre-cropped from 137 to 128 (the original
protocol); training may jitter the crop.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import UserError

log = logging.getLogger(__name__)

POINTCLOUD_NAME = "pointcloud_2048.npy"


class DataError(UserError):
    """The data folder does not follow the layout."""


def read_metadata(path: Path | str) -> np.ndarray:
    """``float64 [V,5]``: azimuth, elevation, in-plane rotation, distance, fov per view."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        values = line.replace(",", " ").split()
        if len(values) < 5:
            raise DataError(f"{path}:{number}: expected 5 numbers (azimuth elevation in-plane distance fov), "
                            f"got {len(values)}")
        rows.append([float(v) for v in values[:5]])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def composite_on_white(image: np.ndarray) -> np.ndarray:
    """``uint8 [H,W,3|4] -> uint8 [H,W,3]``: RGBA alpha-blended onto white; RGB unchanged."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 4:
        alpha = image[..., 3:].astype(np.float32) / 255.0
        rgb = image[..., :3].astype(np.float32) * alpha + 255.0 * (1 - alpha)
        return np.round(rgb).astype(np.uint8)
    return image[..., :3]


def load_rendering(path: Path | str) -> np.ndarray:
    """``uint8 [H,W,3]`` of a rendering, on white."""
    with Image.open(path) as image:
        return composite_on_white(np.asarray(image.convert("RGBA") if image.mode in ("RGBA", "LA", "P")
                                             else image.convert("RGB")))


def crop_to_tensor_array(image: np.ndarray, crop: int = 128, offset: tuple[int, int] | None = None,
                         out_size: int | None = None) -> np.ndarray:
    """``uint8 [H,W,3] -> float32 [3,S,S]`` in [0,1]: a ``crop`` square (centre, or at ``offset``
    (top, left)), resized to ``out_size`` when given and different."""
    h, w = image.shape[:2]
    crop = min(crop, h, w)
    top, left = offset if offset is not None else ((h - crop) // 2, (w - crop) // 2)
    patch = image[top:top + crop, left:left + crop]
    if out_size is not None and out_size != crop:
        patch = np.asarray(Image.fromarray(patch).resize((out_size, out_size), Image.BILINEAR))
    return np.ascontiguousarray(patch.transpose(2, 0, 1), dtype=np.float32) / 255.0


@dataclass
class ModelEntry:
    """One shape: ``key`` = ``<synset>/<model>``, its folder and point-cloud file."""

    key: str
    folder: Path
    points_path: Path

    @property
    def synset(self) -> str:
        return self.key.split("/")[0]

    def rendering(self, view: int) -> Path:
        return self.folder / "rendering" / f"{view:02d}.png"

    def metadata(self) -> np.ndarray:
        return read_metadata(self.folder / "rendering" / "rendering_metadata.txt")

    def points(self) -> np.ndarray:
        return np.load(self.points_path).astype(np.float32)


def list_models(root: Path | str, split: str | None = None, points_root: Path | str | None = None,
                splits_file: Path | str | None = None, categories: list[str] | None = None) -> list[ModelEntry]:
    """The shapes of ``split`` (``train``/``val``/``test``; None = every shape found).

    Splits come from ``splits_file`` or ``ROOT/splits.json``; without a split file, every shape
    is listed (``split`` must then be None). Shapes without renderings or a point cloud raise
    :class:`DataError` naming the first missing file.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    points_root = Path(points_root) if points_root else None
    if split is not None:
        path = Path(splits_file) if splits_file else root / "splits.json"
        if not path.is_file():
            raise DataError(f"no split file {path}; pass splits_file or split=None")
        splits = json.loads(path.read_text())
        if split not in splits:
            raise DataError(f"split {split!r} not in {path} (has {', '.join(splits)})")
        keys = list(splits[split])
    else:
        keys = sorted(f"{m.parent.parent.name}/{m.parent.name}" for m in root.glob("*/*/rendering"))
    if categories:
        keys = [k for k in keys if k.split("/")[0] in categories]
    entries = []
    for key in keys:
        folder = root / key
        points = folder / POINTCLOUD_NAME
        if not points.is_file() and points_root is not None:
            points = points_root / key / POINTCLOUD_NAME
        for needed in (folder / "rendering" / "rendering_metadata.txt", points):
            if not needed.is_file():
                raise DataError(f"shape {key}: missing {needed}")
        entries.append(ModelEntry(key, folder, points))
    if not entries:
        raise DataError(f"no shapes found in {root}" + (f" for split {split!r}" if split else ""))
    return entries


class ShapeImageSet:
    """All views of a list of shapes, held in memory (uint8 renders, float32 clouds, azimuths).

    Attributes:
        entries: the shapes.
        images: ``uint8 [S,V,H,W,3]`` on white.
        points: ``float32 [S,P,3]``.
        azimuths: ``float32 [S,V]`` degrees.
    """

    def __init__(self, entries: list[ModelEntry], views: list[int] | None = None, progress=None) -> None:
        self.entries = entries
        first_meta = entries[0].metadata()
        self.views = list(range(len(first_meta))) if views is None else list(views)
        images, points, azimuths = [], [], []
        for i, entry in enumerate(entries):
            meta = entry.metadata()
            images.append(np.stack([load_rendering(entry.rendering(v)) for v in self.views]))
            points.append(entry.points())
            azimuths.append(meta[self.views, 0])
            if progress is not None:
                progress((i + 1) / len(entries), f"loaded {entry.key}")
        self.images = np.stack(images)
        self.points = np.stack(points).astype(np.float32)
        self.azimuths = np.stack(azimuths).astype(np.float32)

    def __len__(self) -> int:
        return len(self.entries)
