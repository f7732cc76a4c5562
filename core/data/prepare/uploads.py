"""Uploaded files, stored under ``cache_root()/uploads/<batch>/`` before any work starts.

A batch folder holds the files under sanitised, unique names (upload order kept) and
``batch.json`` (``kind``, ``names``, ``original_names``). Batches are never deleted by a later
failure, so the user can fix the input and try again without uploading twice.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from core.data.prepare import DatasetError
from core.data.scene import IMAGE_SUFFIXES, atomic_write_bytes
from core.store.cache import cache_root, safe_name

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".webm", ".mkv")
MAX_IMAGE_BYTES = 40 * 1024**2      # per uploaded image
MAX_VIDEO_BYTES = 1024 * 1024**2    # per uploaded video
MAX_IMAGES = 400


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


def store_uploads(files: list[tuple[str, bytes]], kind: str = "images", batch: str | None = None,
                  root: Path | None = None, generated_names: bool = False) -> UploadBatch:
    """Write uploaded ``(name, bytes)`` pairs under ``<root>/<batch>/`` before any work (``root``
    defaults to :func:`uploads_root`; hosted mode passes the user's namespace).

    Names are sanitised (:func:`core.store.cache.safe_name`) and made unique, or with
    ``generated_names`` replaced by ``000000.png``-style names (the accepted suffix only, so that
    nothing of a user's file name reaches the server's disk); the original names stay in
    ``batch.json`` for display. Each file must be under the size limit (40 MB per image, 1 GB per
    video), have an accepted suffix and, for images, pass the pixel limits of :mod:`core.limits`
    (headers only). Raises DatasetError / LimitError (nothing is written) when a file is refused.
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
    if kind == "images":
        from core import limits

        limits.check_images([data for _, data in files], [name for name, _ in files])  # headers only
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(name.encode())
        digest.update(hashlib.sha256(data).digest())
    batch = safe_name(batch) if batch else f"{time.strftime('%Y%m%d-%H%M%S')}-{digest.hexdigest()[:8]}"
    folder = (root if root is not None else uploads_root()) / batch
    folder.mkdir(parents=True, exist_ok=True)
    names, used = [], set()
    for index, (name, data) in enumerate(files):
        clean = (f"{index:06d}{Path(name).suffix.lower()}" if generated_names
                 else safe_name(name, default=f"upload{Path(name).suffix.lower()}"))
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
