"""The views to prepare: images decoded and checked, video frames sampled, a preview strip.

Every function returns views as ``uint8 HxWx3`` RGB arrays in input order and raises
:class:`core.data.prepare.DatasetError` with a one-line message the user can act on.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np

from core.data.prepare import MIN_VIEWS, DatasetError
from core.data.scene import IMAGE_SUFFIXES, SceneError, read_image

log = logging.getLogger(__name__)

DEFAULT_FRAMES = 42      # frames sampled from a video unless asked otherwise


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


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop ``image [H,W,3]`` to the aspect ratio of ``size`` (H, W) and resize to it
    (area interpolation when shrinking, cubic when enlarging)."""
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
    images, names, notes, _ = load_image_files(paths, resize, names)
    return images, names, notes


def load_image_files(paths: list[Path], resize: bool = False, names: list[str] | None = None
                     ) -> tuple[list[np.ndarray], list[str], list[str], list[Path | None]]:
    """:func:`load_images`, plus for each kept image the file it decodes from as it is (``None``
    for an image that was resized): a preparation job sends these files' compressed bytes to its
    worker instead of the pixels (:func:`core.jobs.client.prepare_spec`)."""
    names = list(names) if names is not None else [Path(p).name for p in paths]
    if len(paths) < MIN_VIEWS:
        raise DatasetError(f"at least {MIN_VIEWS} images are needed to reconstruct; got {len(paths)}")
    from core import limits

    limits.check_images([Path(p) for p in paths], names)  # headers only: pixel limits before decoding
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
    files: list[Path | None] = [Path(paths[i]) for i in keep]
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
        files = [file if image.shape[:2] == common else None for image, file in zip(images, files)]
        images = [resize_to(image, common) for image in images]
        notes.append(f"resized {sum(len(v) for s, v in sizes.items() if s != common)} image(s) to "
                     f"{common[1]}x{common[0]}")
    return images, names, notes, files


def scene_image_files(scene_folder: Path | str) -> list[Path]:
    """The image files of a scene folder, in view order (``images/<name>`` as its ``scene.json``
    lists them): the files :meth:`core.data.scene.Scene.load` decodes its images from."""
    import json

    folder = Path(scene_folder)
    meta = json.loads((folder / "scene.json").read_text())
    return [folder / "images" / name for name in meta.get("image_files", meta["image_names"])]


def sample_video_frames(path: Path | str, frames: int = DEFAULT_FRAMES) -> tuple[list[np.ndarray], list[int], dict]:
    """Decode ``frames`` frames sampled uniformly over a video, streaming: only the sampled frames
    are kept in memory.

    The frame count comes from FFmpeg's count (no frame reaches Python); the stream is then read
    once and the frames at the sampled indices are kept. A stream shorter than counted keeps what
    it decoded. Returns (frames ``uint8 HxWx3``, their frame indices, {"total_frames", "fps"}).
    Raises DatasetError when the file has no decodable frame, ``LimitError`` when it holds more
    than :data:`core.limits.VIDEO_FRAMES` frames or a frame over :data:`core.limits.IMAGE_PIXELS`.
    """
    import imageio.v2 as imageio

    from core import limits

    if frames < MIN_VIEWS:
        raise DatasetError(f"sample at least {MIN_VIEWS} frames; got {frames}")
    path = Path(path)
    try:
        reader = imageio.get_reader(str(path), format="FFMPEG")
    except Exception as error:  # imageio/ffmpeg raise many types for a file that is no video
        raise DatasetError(f"{path.name}: no decodable video ({_first_line(error)})") from None
    try:
        meta = reader.get_meta_data()
        fps = float(meta.get("fps") or 0.0)
        width, height = (int(v) for v in (meta.get("size") or (0, 0)))
        limits.IMAGE_PIXELS.check(width * height, f"{path.name} (frame size)")
        try:
            total = int(reader.count_frames())
        except Exception as error:  # ffmpeg could not count: no usable stream
            raise DatasetError(f"{path.name}: no decodable frame ({_first_line(error)})") from None
        limits.VIDEO_FRAMES.check(total, path.name)
        if total <= 0:
            raise DatasetError(f"{path.name}: the video has no decodable frame")
        wanted = set(np.unique(np.linspace(0, total - 1, min(frames, total)).round().astype(int)).tolist())
        kept: dict[int, np.ndarray] = {}
        decoded = 0
        try:
            for index, frame in enumerate(reader):
                decoded = index + 1
                if index in wanted:
                    kept[index] = np.ascontiguousarray(np.asarray(frame)[..., :3]).astype(np.uint8)
                if decoded > total:
                    break
        except Exception as error:  # a truncated stream: keep the frames decoded so far
            if not kept:
                raise DatasetError(f"{path.name}: no decodable frame ({_first_line(error)})") from None
            log.warning("%s: decoding stopped after %d frames: %s", path.name, decoded, error)
    finally:
        reader.close()
    if not kept:
        raise DatasetError(f"{path.name}: the video has no decodable frame")
    indices = sorted(kept)
    return [kept[i] for i in indices], indices, {"total_frames": min(total, decoded) or total, "fps": fps}


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def preview_strip(images: list[np.ndarray], count: int = 8, height: int = 96) -> np.ndarray:
    """A horizontal strip ``uint8 [height, W, 3]`` of up to ``count`` thumbnails (uniformly chosen),
    separated by 4-pixel white gaps."""
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
