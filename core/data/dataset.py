"""Dataset preparation: photos or a phone video -> a Scene folder with a COLMAP ground truth.

Inputs (the Dataset page and ``python -m core prepare`` share this code):

- a folder or an upload of images (JPEG/PNG; EXIF orientation honoured; mixed sizes refused
  unless ``resize`` is asked, then every image is centre-cropped to the most common aspect
  ratio and resized to the most common size);
- a video (mp4/mov, decoded with imageio-ffmpeg) from which ``frames`` frames are sampled
  uniformly;
- the views of an existing scene (the bundled sample).

Uploads are written under ``cache_root()/uploads/<batch>/`` with sanitised names and a size
limit before any work starts, and are never deleted when a later step fails.

The ``prepare`` pipeline writes ``<out>/`` (a folder :meth:`core.data.scene.Scene.load` reads)::

    scene.json, cameras.npz    image names in input order; intrinsics [N,3,3] (pixel centres at
                               integer coordinates), cam_from_world [N,4,4] (NaN = unregistered)
    images/                    the decoded, oriented (and, with lens distortion, undistorted) views
    images_distorted/          COLMAP's input images, only when they had to be undistorted
    database.db, sparse/0/     COLMAP's database and sparse model, as COLMAP wrote them
    depths.npz                 per-view depth maps of the dense stereo (0 = invalid), full size
    dense/fused.npz, .ply      the fused dense cloud (points, colours, confidence, source view)
    crop.json                  the object crop box
    gt_points.npz, object.ply  the dense points inside the crop box: the scene's ground truth
    prepare.json               the report (registration, errors, point counts, stage timings)

All geometry stays in COLMAP's world frame (metric scale unknown).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from core import geometry
from core.store.cache import cache_root, safe_name
from core.progress import Progress, silent
from core.data.scene import IMAGE_SUFFIXES, Scene, SceneError, atomic_write_bytes, read_image, to_json
from core.data.sfm import SfmError, SfmOptions, SfmResult, run_sfm

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".webm", ".mkv")
MAX_IMAGE_BYTES = 40 * 1024**2      # per uploaded image
MAX_VIDEO_BYTES = 1024 * 1024**2    # per uploaded video
MAX_IMAGES = 400
MIN_VIEWS = 3
DEFAULT_FRAMES = 42


class DatasetError(ValueError):
    """Unusable input (too few, identical, corrupt or mismatched images; undecodable video...)."""


# --------------------------------------------------------------------------- uploads
@dataclass
class UploadBatch:
    """Files stored under ``folder`` (sanitised, unique names, in upload order)."""

    folder: Path
    names: list[str]
    original_names: list[str]
    kind: str  # "images" | "video"

    @property
    def paths(self) -> list[Path]:
        return [self.folder / n for n in self.names]


def uploads_root() -> Path:
    return cache_root() / "uploads"


def store_uploads(files: list[tuple[str, bytes]], kind: str = "images", batch: str | None = None) -> UploadBatch:
    """Write uploaded ``(name, bytes)`` pairs under ``cache_root()/uploads/<batch>/`` before any work.

    Names are sanitised (:func:`core.store.cache.safe_name`) and made unique; each file must be under the
    size limit (40 MB per image, 1 GB per video) and have an accepted suffix.
    Raises DatasetError (nothing is written) when a file is refused.
    """
    if kind not in ("images", "video"):
        raise ValueError(f"kind must be 'images' or 'video', got {kind!r}")
    if not files:
        raise DatasetError("no file was uploaded")
    suffixes = IMAGE_SUFFIXES if kind == "images" else VIDEO_SUFFIXES
    limit = MAX_IMAGE_BYTES if kind == "images" else MAX_VIDEO_BYTES
    if kind == "images" and len(files) > MAX_IMAGES:
        raise DatasetError(f"at most {MAX_IMAGES} images per upload; got {len(files)}")
    if kind == "video" and len(files) != 1:
        raise DatasetError(f"upload one video at a time; got {len(files)} files")
    for name, data in files:
        suffix = Path(name).suffix.lower()
        if suffix not in suffixes:
            raise DatasetError(f"{name}: not an accepted {kind[:-1] if kind == 'images' else 'video'} type "
                               f"(accepted: {', '.join(suffixes)})")
        if len(data) > limit:
            raise DatasetError(f"{name}: {len(data) / 1024**2:.1f} MB is over the {limit / 1024**2:.0f} MB limit")
        if len(data) == 0:
            raise DatasetError(f"{name}: the file is empty")
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(name.encode())
        digest.update(hashlib.sha256(data).digest())
    batch = safe_name(batch) if batch else f"{time.strftime('%Y%m%d-%H%M%S')}-{digest.hexdigest()[:8]}"
    folder = uploads_root() / batch
    folder.mkdir(parents=True, exist_ok=True)
    names, used = [], set()
    for name, data in files:
        clean = safe_name(name, default=f"upload{Path(name).suffix.lower()}")
        stem, suffix = Path(clean).stem, Path(clean).suffix
        candidate, k = clean, 1
        while candidate.lower() in used:
            candidate = f"{stem}_{k}{suffix}"
            k += 1
        used.add(candidate.lower())
        atomic_write_bytes(folder / candidate, data)
        names.append(candidate)
    (folder / "batch.json").write_text(json.dumps({"kind": kind, "names": names,
                                                   "original_names": [n for n, _ in files]}, indent=2))
    log.info("stored %d upload(s) in %s", len(names), folder)
    return UploadBatch(folder, names, [n for n, _ in files], kind)


def list_upload_batches() -> list[UploadBatch]:
    """Stored upload batches, newest first."""
    root = uploads_root()
    out = []
    if not root.is_dir():
        return out
    for meta in sorted(root.glob("*/batch.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            data = json.loads(meta.read_text())
            out.append(UploadBatch(meta.parent, data["names"], data["original_names"], data["kind"]))
        except (OSError, json.JSONDecodeError, KeyError):
            continue
    return out


# --------------------------------------------------------------------------- images
def list_image_files(folder: Path | str) -> list[str]:
    """Image file names (png/jpg/jpeg) in ``folder``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder")
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def crop_to_aspect(image: np.ndarray, aspect: float) -> np.ndarray:
    """The largest centred crop of an ``[H,W,...]`` image with height/width = ``aspect`` (the
    image itself when its aspect is within 1e-3)."""
    h, w = image.shape[:2]
    if abs(h / w - aspect) <= 1e-3:
        return image
    if h / w > aspect:  # too tall
        nh = int(round(w * aspect))
        top = (h - nh) // 2
        return image[top:top + nh]
    nw = int(round(h / aspect))
    left = (w - nw) // 2
    return image[:, left:left + nw]


def _resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop ``image`` to the aspect ratio of ``size`` (H, W) and resize to it."""
    th, tw = size
    image = crop_to_aspect(image, th / tw)
    if image.shape[:2] != (th, tw):
        area = image.shape[0] * image.shape[1] > th * tw
        image = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA if area else cv2.INTER_CUBIC)
    return np.ascontiguousarray(image)


def load_images(paths: list[Path], resize: bool = False, names: list[str] | None = None
                ) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Decode and check a set of images.

    Args:
        paths: image files (EXIF orientation honoured).
        resize: bring mixed sizes to the most common size instead of refusing them.
        names: display names (default: the file names).
    Returns:
        (images ``uint8 HxWx3``, names, notes): exact duplicates are dropped with a note.
    Raises:
        DatasetError naming the corrupt file(s), the sizes when they differ (and ``resize`` is off),
        or saying that fewer than 3 distinct images remain.
    """
    names = list(names) if names is not None else [Path(p).name for p in paths]
    if len(paths) < MIN_VIEWS:
        raise DatasetError(f"at least {MIN_VIEWS} images are needed to reconstruct; got {len(paths)}")
    images, bad = [], []
    for path, name in zip(paths, names):
        try:
            images.append(read_image(Path(path)))
        except SceneError as error:
            bad.append(f"{name} ({str(error).split(': ', 1)[-1]})")
    if bad:
        raise DatasetError(f"{len(bad)} file(s) could not be decoded as images: {'; '.join(bad)}. "
                           "Remove or replace them and try again.")
    notes = []
    seen: dict[str, str] = {}
    keep = []
    for i, (image, name) in enumerate(zip(images, names)):
        key = hashlib.sha1(image.tobytes()).hexdigest()
        if key in seen:
            notes.append(f"{name} is identical to {seen[key]} and was skipped")
        else:
            seen[key] = name
            keep.append(i)
    if len(keep) < MIN_VIEWS:
        raise DatasetError(f"{len(images)} images but only {len(keep)} distinct one(s): identical images give "
                           f"COLMAP no parallax; at least {MIN_VIEWS} different views are needed")
    images = [images[i] for i in keep]
    names = [names[i] for i in keep]
    sizes: dict[tuple[int, int], list[str]] = {}
    for image, name in zip(images, names):
        sizes.setdefault(image.shape[:2], []).append(name)
    if len(sizes) > 1:
        common = max(sizes, key=lambda s: len(sizes[s]))
        if not resize:
            listing = "; ".join(f"{w}x{h}: {len(v)} image(s)" + ("" if len(v) > 3 else f" ({', '.join(v)})")
                                for (h, w), v in sorted(sizes.items(), key=lambda kv: -len(kv[1])))
            raise DatasetError(f"the images have different sizes ({listing}); use images from one camera setting, "
                               f"or ask to resize them to the most common size ({common[1]}x{common[0]})")
        images = [_resize_to(image, common) for image in images]
        notes.append(f"resized {sum(len(v) for s, v in sizes.items() if s != common)} image(s) to "
                     f"{common[1]}x{common[0]}")
    return images, names, notes


# --------------------------------------------------------------------------- video
def sample_video_frames(path: Path | str, frames: int = DEFAULT_FRAMES) -> tuple[list[np.ndarray], list[int], dict]:
    """Decode ``frames`` frames sampled uniformly over a video.

    Returns (frames ``uint8 HxWx3``, their frame indices, {"total_frames", "fps"}).
    Raises DatasetError when the file has no decodable frame.
    """
    import imageio.v2 as imageio

    if frames < MIN_VIEWS:
        raise DatasetError(f"sample at least {MIN_VIEWS} frames; got {frames}")
    path = Path(path)
    try:
        reader = imageio.get_reader(str(path), format="FFMPEG")
    except Exception as error:
        raise DatasetError(f"{path.name}: no decodable video ({_first_line(error)})") from None
    try:
        fps = float(reader.get_meta_data().get("fps") or 0.0)
        decoded = []
        try:
            for frame in reader:  # one pass; keeps every frame's index, and a bounded set of frames
                decoded.append(np.asarray(frame))
                if len(decoded) > 20_000:
                    raise DatasetError(f"{path.name}: more than 20,000 frames; trim the video first")
        except DatasetError:
            raise
        except Exception as error:
            if not decoded:
                raise DatasetError(f"{path.name}: no decodable frame ({_first_line(error)})") from None
            log.warning("%s: decoding stopped after %d frames: %s", path.name, len(decoded), error)
    finally:
        reader.close()
    if not decoded:
        raise DatasetError(f"{path.name}: the video has no decodable frame")
    total = len(decoded)
    count = min(frames, total)
    indices = np.unique(np.linspace(0, total - 1, count).round().astype(int)).tolist()
    chosen = [np.ascontiguousarray(decoded[i][..., :3]).astype(np.uint8) for i in indices]
    return chosen, indices, {"total_frames": total, "fps": fps}


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def preview_strip(images: list[np.ndarray], count: int = 8, height: int = 96) -> np.ndarray:
    """A horizontal strip of up to ``count`` thumbnails (uniformly chosen) of ``height`` pixels."""
    if not images:
        raise DatasetError("no frame to preview")
    idx = np.unique(np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int))
    thumbs = []
    for i in idx:
        h, w = images[i].shape[:2]
        thumbs.append(cv2.resize(images[i], (max(1, int(round(w * height / h))), height),
                                 interpolation=cv2.INTER_AREA))
        thumbs.append(np.full((height, 4, 3), 255, np.uint8))
    return np.concatenate(thumbs[:-1], axis=1)


# --------------------------------------------------------------------------- object crop
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


# --------------------------------------------------------------------------- PLY
def ply_bytes(points: np.ndarray, colors: np.ndarray | None = None) -> bytes:
    """Binary little-endian PLY of ``points [N,3]`` (float32) with optional ``colors [N,3]`` (uint8)."""
    points = np.asarray(points, np.float32).reshape(-1, 3)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(points)}",
              "property float x", "property float y", "property float z"]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    rows = np.empty(len(points), dtype=fields)
    rows["x"], rows["y"], rows["z"] = points.T
    if colors is not None:
        rows["red"], rows["green"], rows["blue"] = np.asarray(colors, np.uint8).T
    return ("\n".join(header) + "\n").encode() + rows.tobytes()


# --------------------------------------------------------------------------- the pipeline
@dataclass
class PrepareOptions:
    """Options of :func:`prepare`."""

    sfm: SfmOptions = field(default_factory=SfmOptions)
    dense: bool = True
    mvs_max_size: int = 256      # longest side of the CPU stereo's depth maps (pixels)
    mvs_depths: int = 96
    resize: bool = False

    def mvs_scale(self, image_size: tuple[int, int]) -> float:
        return min(1.0, self.mvs_max_size / max(image_size))


@dataclass
class PrepareResult:
    """What :func:`prepare` wrote: the scene folder, its report and the parts the page shows."""

    folder: Path
    scene: Scene
    report: dict
    sfm: SfmResult
    dense_points: np.ndarray | None
    dense_colors: np.ndarray | None
    crop: CropBox | None
    log: list[str]


def _write_png(path: Path, image: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=3)
    atomic_write_bytes(path, buffer.getvalue())


def _file_names(names: list[str]) -> list[str]:
    """Unique sanitised ``<stem>.png`` file names for the views (input order)."""
    out, used = [], set()
    for i, name in enumerate(names):
        stem = Path(safe_name(name, default=f"view_{i:03d}")).stem or f"view_{i:03d}"
        candidate, k = f"{stem}.png", 1
        while candidate.lower() in used:
            candidate = f"{stem}_{k}.png"
            k += 1
        used.add(candidate.lower())
        out.append(candidate)
    return out


def prepare(images: list[np.ndarray], names: list[str], out: Path | str, scene_name: str | None = None,
            options: PrepareOptions | None = None, progress: Progress | None = None, is_video: bool = False,
            provenance: dict | None = None) -> PrepareResult:
    """Images -> COLMAP sparse -> dense (CUDA COLMAP or CPU stereo) -> object crop -> Scene folder ``out``.

    Args:
        images: N ``uint8 HxWx3`` of one size (see :func:`load_images`).
        names: N display names (input order is kept everywhere).
        out: the scene folder to write (replaced if it holds an earlier preparation).
        scene_name: name shown in the picker (default: the folder's name).
        is_video: frames are consecutive (sequential matching for long videos).
    Raises:
        DatasetError / SfmError with a one-line message; ``core.progress.Stopped`` when stopped.
    """
    from core.data import mvs
    from core.data import sfm

    options = options or PrepareOptions()
    progress = progress or silent()
    out = Path(out)
    if len(images) < MIN_VIEWS:
        raise DatasetError(f"at least {MIN_VIEWS} images are needed; got {len(images)}")
    if len({image.shape for image in images}) != 1:
        raise DatasetError("all images must have one size (see load_images(resize=True))")
    scene_name = safe_name(scene_name or out.name)
    stages: dict[str, float] = {}
    if (out / "scene.json").exists() or (out / "sparse").exists():
        for child in ("images", "images_distorted", "sparse", "dense"):
            shutil.rmtree(out / child, ignore_errors=True)
        for child in ("database.db", "depths.npz", "gt_points.npz", "crop.json", "object.ply", "scene.json",
                      "masks.npz", "prepare.json"):
            (out / child).unlink(missing_ok=True)
    files = _file_names(names)
    started = time.perf_counter()
    progress(0.0, f"writing {len(images)} images")
    for image, file_name in zip(images, files):
        _write_png(out / "images" / file_name, image)
    stages["write_images"] = time.perf_counter() - started

    sfm_progress = progress.sub(0.02, 0.45 if options.dense else 0.9)
    result = run_sfm(out / "images", files, out, options.sfm, sfm_progress, is_video=is_video)
    result.image_names = list(names)
    stages.update(result.stage_seconds)
    registered = result.registered
    if registered.sum() < 2:
        raise SfmError(f"only {int(registered.sum())} of {len(images)} views registered; nothing to build on")

    # undistort to pinhole intrinsics when the lens model found distortion
    views = list(images)
    undistorted = False
    for i in range(len(views)):
        fixed = sfm.undistort_image(views[i], result.intrinsics[i], result.distortion[i])
        if fixed is not views[i]:
            views[i], undistorted = fixed, True
    if undistorted:
        shutil.copytree(out / "images", out / "images_distorted", dirs_exist_ok=True)
        for image, file_name in zip(views, files):
            _write_png(out / "images" / file_name, image)

    dense_points = dense_colors = None
    depths = None
    dense_info: dict = {"method": "none"}
    if options.dense:
        progress.check()
        started = time.perf_counter()
        dense_progress = progress.sub(0.45, 0.92)
        if sfm.dense_cuda_available():
            try:
                dense_points, dense_colors = sfm.colmap_dense(result.sparse_path, out / "images_distorted"
                                                              if undistorted else out / "images", out, dense_progress)
                dense_info = {"method": "colmap-patchmatch (CUDA)", "points": int(len(dense_points))}
            except Exception as error:  # fall back to the CPU stereo
                log.warning("COLMAP dense failed (%s); using the CPU stereo", error)
        if dense_points is None:
            mvs_options = mvs.MvsOptions(scale=options.mvs_scale(views[0].shape[:2]), num_depths=options.mvs_depths)
            dense = mvs.run_mvs(views, result.intrinsics, result.cam_from_world, result.points,
                                mvs_options, dense_progress)
            dense_points, dense_colors = dense.points, dense.colors
            depths = mvs.upsample_depths(dense.depths, views[0].shape[:2])
            dense_info = {"method": "cpu plane-sweep stereo (core.data.mvs)", "points": int(len(dense_points)),
                          "options": asdict(mvs_options), "stage_seconds": dense.stage_seconds}
            atomic_write_bytes(out / "dense" / "fused.npz", _npz(points=dense.points, colors=dense.colors,
                                                                 confidence=dense.confidence,
                                                                 source_view=dense.source_view))
        else:
            atomic_write_bytes(out / "dense" / "fused.npz", _npz(points=dense_points, colors=dense_colors))
        atomic_write_bytes(out / "dense" / "fused.ply", ply_bytes(dense_points, dense_colors))
        stages["dense"] = time.perf_counter() - started
        if len(dense_points) == 0:
            raise SfmError("the dense stereo produced no point (too little texture or overlap)")

    progress(0.93, "proposing the object crop")
    cloud = dense_points if dense_points is not None and len(dense_points) else result.points
    colors = dense_colors if dense_points is not None and len(dense_points) else result.colors
    crop = propose_crop(result.cam_from_world, cloud)
    inside = crop.contains(cloud)
    report = result.report()
    report.update({"dense": dense_info, "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
                   "undistorted": undistorted, "object_points": int(inside.sum()),
                   "crop": crop.to_dict(), "sfm_options": asdict(options.sfm)})
    scene = Scene(name=scene_name, images=views, image_names=list(names), intrinsics=result.intrinsics,
                  cam_from_world=result.cam_from_world, depths=depths,
                  gt_points=cloud[inside].astype(np.float32), gt_colors=colors[inside].astype(np.uint8),
                  provenance={"generator": "core.data.dataset.prepare", "ground_truth": "COLMAP sparse + "
                              + dense_info["method"] + ", object crop", "units": "COLMAP (arbitrary scale)",
                              "world": "COLMAP's frame", **(provenance or {}),
                              "report": {k: v for k, v in report.items() if k != "crop"}})
    progress(0.95, "writing the scene folder")
    scene.save(out)
    atomic_write_bytes(out / "crop.json", to_json(crop.to_dict()).encode())
    atomic_write_bytes(out / "object.ply", ply_bytes(scene.gt_points, scene.gt_colors))
    atomic_write_bytes(out / "prepare.json", to_json({**report, "log": result.log}).encode())
    progress(1.0, f"scene {scene_name}: {report['registered']}/{report['total']} views, "
                  f"{report['object_points']:,} object points")
    return PrepareResult(out, scene, report, result, dense_points, dense_colors, crop, result.log)


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def load_dense(folder: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(points, colors) of a prepared scene's fused cloud (``dense/fused.npz``)."""
    path = Path(folder) / "dense" / "fused.npz"
    if not path.is_file():
        raise DatasetError(f"{folder} has no dense cloud (prepared with --no-dense?)")
    with np.load(path) as data:
        return data["points"], data["colors"]


def apply_crop(folder: Path | str, crop: CropBox) -> int:
    """Store the dense points inside ``crop`` as the scene's ground truth (gt_points.npz, object.ply).

    Returns the number of object points. Raises DatasetError when the box holds fewer than 10.
    """
    folder = Path(folder)
    points, colors = load_dense(folder)
    inside = crop.contains(points)
    if inside.sum() < 10:
        raise DatasetError(f"the crop box holds {int(inside.sum())} points; enlarge or move it")
    atomic_write_bytes(folder / "gt_points.npz", _npz(points=points[inside].astype(np.float32),
                                                      colors=colors[inside].astype(np.uint8)))
    atomic_write_bytes(folder / "object.ply", ply_bytes(points[inside], colors[inside]))
    atomic_write_bytes(folder / "crop.json", to_json(crop.to_dict()).encode())
    meta_path = folder / "scene.json"
    meta = json.loads(meta_path.read_text())
    meta.setdefault("provenance", {})["crop"] = crop.to_dict()
    atomic_write_bytes(meta_path, to_json(meta).encode())  # new mtime: the app reloads the scene
    return int(inside.sum())


def load_crop(folder: Path | str) -> CropBox | None:
    path = Path(folder) / "crop.json"
    return CropBox.from_dict(json.loads(path.read_text())) if path.is_file() else None


def scenes_root() -> Path:
    return cache_root() / "scenes"


def default_scene_dir(name: str) -> Path:
    return scenes_root() / safe_name(name)


# --------------------------------------------------------------------------- sample views (bench, method)
def prepare_from_scene_views(scene: Scene, views: list[int], out: Path, dense: bool = True,
                             sfm_options: SfmOptions | None = None, progress: Progress | None = None,
                             mvs_max_size: int = 256) -> dict:
    """Prepare ``views`` of an existing scene into ``out`` and score it against the scene's exact ground truth.

    Returns the report plus ``pose_errors`` and, with ``dense``, ``dense_scores`` (core.eval.metrics,
    normalised units: F-score at 0.02, accuracy, completeness).
    """
    from core.eval import metrics
    from core.data.scene import Reconstruction
    from core.data.sfm import pose_errors

    sub = scene.subset(views)
    options = PrepareOptions(sfm=sfm_options or SfmOptions(), dense=dense, mvs_max_size=mvs_max_size)
    result = prepare(sub.images, sub.image_names, out, scene_name=f"{scene.name}-{len(views)}", options=options,
                     progress=progress)
    summary = dict(result.report)
    if scene.has_ground_truth:
        gt = scene.gt_points.astype(np.float64)
        radius = float(np.linalg.norm(gt - (gt.min(0) + gt.max(0)) / 2, axis=1).max())
        summary["pose_errors"] = pose_errors(result.sfm.cam_from_world, sub.cam_from_world, radius)
        if dense and result.scene.has_ground_truth:
            recon = Reconstruction(method="colmap", points=result.scene.gt_points, colors=result.scene.gt_colors,
                                   cam_from_world=result.sfm.cam_from_world, intrinsics=result.sfm.intrinsics,
                                   view_ids=list(views))
            scores = metrics.evaluate(scene, recon).scores
            summary["dense_scores"] = {"fscore@0.02": scores["fscore"]["0.02"], "accuracy": scores["accuracy"],
                                       "completeness": scores["completeness"], "units": scores["units"]}
    return summary


# --------------------------------------------------------------------------- CLI
def _sfm_options_from_args(args) -> SfmOptions:
    return SfmOptions(camera_model=args.camera_model, shared_camera=not args.per_view_camera, matcher=args.matcher,
                      max_features=args.max_features, max_image_size=args.max_image_size,
                      num_threads=args.threads)


def cmd_prepare(args) -> int:
    """``python -m core prepare``: see :func:`register`."""
    from core.cli import CliError
    from core.progress import Stopped, to_stderr

    progress = to_stderr()
    is_video = False
    provenance: dict = {}
    try:
        if args.sample:
            from core.store.cache import REPO_ROOT

            source = Scene.load(REPO_ROOT / "sample_data" / args.sample)
            images, names = source.images, source.image_names
            provenance["source"] = f"sample_data/{args.sample}"
        elif args.images:
            folder = Path(args.images)
            files = list_image_files(folder)
            images, names, notes = load_images([folder / f for f in files], resize=args.resize)
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
            provenance["source"] = str(folder)
        else:
            path = Path(args.video)
            if not path.is_file():
                raise DatasetError(f"no such video: {path}")
            images, indices, info = sample_video_frames(path, args.frames)
            names = [f"frame_{i:06d}.png" for i in indices]
            is_video = True
            provenance.update({"source": str(path), "frame_indices": indices, **info})
        out = Path(args.out) if args.out else default_scene_dir(args.name or "scene")
        options = PrepareOptions(sfm=_sfm_options_from_args(args), dense=not args.no_dense,
                                 mvs_max_size=args.mvs_max_size, resize=args.resize)
        result = prepare(images, names, out, scene_name=args.name or out.name, options=options,
                         progress=progress, is_video=is_video, provenance=provenance)
    except (DatasetError, SfmError, SceneError, ValueError) as error:
        raise CliError(str(error)) from None
    except Stopped:
        raise CliError("stopped") from None
    print(to_json({"scene": str(result.folder), **{k: v for k, v in result.report.items() if k != "crop"}}))
    return 0


def register(subparsers) -> None:
    """Add ``prepare`` to the CLI (``core.__main__`` calls this)."""
    from core.data.sfm import CAMERA_MODELS, MATCHERS

    p = subparsers.add_parser("prepare", help="photos or a video -> a scene folder with a COLMAP ground truth")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder of JPEG/PNG images")
    source.add_argument("--video", help="video file (mp4/mov)")
    source.add_argument("--sample", help="a bundled sample scene's views, e.g. toy")
    p.add_argument("--out", help="scene folder to write (default: cache/scenes/<name>)")
    p.add_argument("--name", help="scene name (default: the output folder's name)")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="frames sampled uniformly from the video")
    p.add_argument("--no-dense", action="store_true", help="stop after the sparse reconstruction")
    p.add_argument("--resize", action="store_true", help="resize mixed-size images to the most common size")
    p.add_argument("--camera-model", default="SIMPLE_RADIAL", choices=CAMERA_MODELS)
    p.add_argument("--per-view-camera", action="store_true", help="one camera per image instead of a shared one")
    p.add_argument("--matcher", default="auto", choices=MATCHERS)
    p.add_argument("--max-features", type=int, default=SfmOptions.max_features)
    p.add_argument("--max-image-size", type=int, default=SfmOptions.max_image_size)
    p.add_argument("--threads", type=int, default=-1)
    p.add_argument("--mvs-max-size", type=int, default=PrepareOptions.mvs_max_size,
                   help="longest side (pixels) of the CPU stereo's depth maps")
    p.set_defaults(func=cmd_prepare)


def bench(argv: list[str]) -> list[dict]:
    """``python -m core bench sfm``: see :func:`core.data.sfm.bench`."""
    from core.data.sfm import bench as sfm_bench

    return sfm_bench(argv)

