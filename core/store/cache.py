"""Content-addressed store of runs: ``cache/runs/<scene>/<method>/<key>/``.

Each run folder holds ``reconstruction.npz`` + ``meta.json`` (see :class:`core.data.scene.Reconstruction`)
and, once scored, ``evaluation.json``. The key hashes the method's name and version, its options,
the input view ids and the input images' bytes, so equal inputs share a key and any change gives
a new one. A run folder appears complete or not at all: it is written under a temporary name in
the same directory and renamed into place; an interrupted write leaves nothing behind.

The root is ``$RECONBENCH_CACHE`` when set, else ``cache/`` at the repository root.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from core.data.scene import Reconstruction, atomic_write_bytes, infer_weights_kind, to_json

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_ENV = "RECONBENCH_CACHE"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def cache_root() -> Path:
    value = os.environ.get(CACHE_ENV)
    return Path(value).expanduser() if value else REPO_ROOT / "cache"


def safe_name(name: str, default: str = "unnamed") -> str:
    """A file-system-safe version of ``name``: no separators, no leading dots, at most 80 chars."""
    cleaned = _SAFE.sub("_", Path(str(name)).name).strip("._")
    return cleaned[:80] or default


def run_key(method: str, version: str, options: dict, view_ids: Iterable[int],
            images: Iterable[np.ndarray | bytes]) -> str:
    """Hex digest (20 chars) of everything a run's output depends on."""
    digest = hashlib.sha256()
    header = {"method": method, "version": version, "options": options, "views": [int(v) for v in view_ids]}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for image in images:
        data = image if isinstance(image, (bytes, bytearray)) else np.ascontiguousarray(image).tobytes()
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()[:20]


@dataclass(frozen=True)
class RunRecord:
    """One stored run: where it is, its metadata and (if scored) its evaluation."""

    scene: str
    method: str
    key: str
    path: Path
    meta: dict
    evaluation: dict | None

    def load(self) -> Reconstruction:
        return Reconstruction.load(self.path)


class RunStore:
    """The run cache rooted at ``root`` (default :func:`cache_root`)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root()

    def run_dir(self, scene: str, method: str, key: str) -> Path:
        return self.root / "runs" / safe_name(scene) / safe_name(method) / key

    def has(self, scene: str, method: str, key: str) -> bool:
        return (self.run_dir(scene, method, key) / "meta.json").is_file()

    def load(self, scene: str, method: str, key: str) -> Reconstruction:
        return Reconstruction.load(self.run_dir(scene, method, key))

    def save(self, scene: str, key: str, recon: Reconstruction, evaluation: dict | None = None) -> Path:
        """Store ``recon`` (and its evaluation) atomically; returns the run folder.

        If the key is already stored, the existing run is kept (same inputs, same result).
        """
        final = self.run_dir(scene, recon.method, key)
        if (final / "meta.json").is_file():
            if evaluation is not None:
                self.save_evaluation(scene, recon.method, key, evaluation)
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        try:
            recon.save(staging)
            if evaluation is not None:
                atomic_write_bytes(staging / "evaluation.json", to_json(evaluation).encode())
            try:
                os.rename(staging, final)
            except OSError:
                if not (final / "meta.json").is_file():
                    raise
                log.info("run %s was stored concurrently; keeping the existing one", final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return final

    def save_evaluation(self, scene: str, method: str, key: str, evaluation: dict) -> None:
        folder = self.run_dir(scene, method, key)
        if not (folder / "meta.json").is_file():
            raise FileNotFoundError(f"no stored run {folder}")
        atomic_write_bytes(folder / "evaluation.json", to_json(evaluation).encode())

    def delete(self, scene: str, method: str, key: str) -> None:
        shutil.rmtree(self.run_dir(scene, method, key), ignore_errors=True)

    def runs(self, scene: str | None = None) -> list[RunRecord]:
        """All complete runs (of one scene, or all), newest first by folder modification time."""
        base = self.root / "runs"
        scenes = [safe_name(scene)] if scene is not None else (
            sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else [])
        records = []
        for scene_name in scenes:
            scene_dir = base / scene_name
            if not scene_dir.is_dir():
                continue
            for meta_path in scene_dir.glob("*/*/meta.json"):
                folder = meta_path.parent
                if folder.name.startswith(".tmp-"):
                    continue
                try:
                    meta = json.loads(meta_path.read_text())
                    meta["weights_kind"] = infer_weights_kind(meta)
                    evaluation_path = folder / "evaluation.json"
                    evaluation = json.loads(evaluation_path.read_text()) if evaluation_path.is_file() else None
                except (OSError, json.JSONDecodeError) as error:
                    log.warning("skipping unreadable run %s: %s", folder, error)
                    continue
                records.append(RunRecord(scene_name, folder.parent.name, folder.name, folder, meta, evaluation))
        records.sort(key=lambda r: r.path.stat().st_mtime, reverse=True)
        return records

    def snapshot(self) -> dict[str, float]:
        """{relative path: mtime} of every file under the store (tests compare before/after)."""
        if not self.root.exists():
            return {}
        return {str(p.relative_to(self.root)): p.stat().st_mtime for p in self.root.rglob("*") if p.is_file()}
