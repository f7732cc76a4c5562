"""Content-addressed store of runs: ``cache/runs/<scene>/<method>/<key>/``.

Each run folder holds ``reconstruction.npz`` + ``meta.json`` (see :class:`core.data.scene.Reconstruction`)
and, once scored, ``evaluation.json`` (the evaluation with the default options) and
``evaluations/<variant>.json`` (``{"options": ..., "scores": ...}``, one per other set of
evaluation options: several evaluations of one run coexist and never overwrite each other). The
key hashes the method's name and version, its options, the input view ids, the input images'
bytes and the scene's ground-truth fingerprint (:mod:`core.data.fingerprint`), so equal inputs
share a key and any change gives a new one. A run folder appears complete or not at all: it is
written under a temporary name (``.tmp-*``) in the same directory and renamed into place; an
interrupted write leaves nothing behind but the staging folder, which :meth:`RunStore.clean_staging`
removes once it is older than an hour.

A damaged run folder (``meta.json`` that is not a UTF-8 JSON object, an ``evaluation.json`` that is
not one, a ``reconstruction.npz`` that is not a readable archive) never breaks a listing: it is
skipped by :meth:`RunStore.runs`, reported by :meth:`RunStore.damaged` and removed by
:meth:`RunStore.repair`; :func:`core.runner.run_method` treats it as missing and recomputes it.

Runs stored before ground-truth fingerprints existed keep their keys and are read as they are;
their ground-truth version is ``unknown`` (:data:`core.data.fingerprint.UNKNOWN`). A request for
such a run computes it again under the new key (nothing is migrated silently).

The root is ``$RECONBENCH_CACHE`` when set, else ``cache/`` at the repository root.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from core.data.scene import Reconstruction, atomic_write_bytes, infer_weights_kind, to_json
from core.errors import ReconBenchError
from core.store.swap import aside_target, recover_swaps

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
            images: Iterable[np.ndarray | bytes], ground_truth: str | None = None) -> str:
    """Hex digest (20 chars) of everything a run's output and scores depend on.

    ``ground_truth`` is the scene's ground-truth fingerprint
    (:func:`core.data.fingerprint.ground_truth_fingerprint`); None gives the keys of runs stored
    before fingerprints existed."""
    digest = hashlib.sha256()
    header = {"method": method, "version": version, "options": options, "views": [int(v) for v in view_ids]}
    if ground_truth is not None:
        header["ground_truth"] = ground_truth
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for image in images:
        data = image if isinstance(image, (bytes, bytearray)) else np.ascontiguousarray(image).tobytes()
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()[:20]


STAGING_PREFIX = ".tmp-"
STAGING_MAX_AGE_S = 3600.0  # staging folders older than this are leftovers of a dead process


class DamagedRun(ReconBenchError):
    """A run folder whose files cannot be read as a run (the message says which file and why)."""


@dataclass(frozen=True)
class DamagedRecord:
    """A run folder that :meth:`RunStore.runs` skipped, and why."""

    scene: str
    method: str
    key: str
    path: Path
    reason: str


def evaluation_variant(options: dict | None) -> str | None:
    """The name of a stored evaluation: None for the default options, else 12 hex digits of the
    options' hash (``evaluations/<variant>.json``)."""
    if not options:
        return None
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _read_json_object(path: Path) -> dict:
    """A JSON object from ``path``; raises DamagedRun for unreadable bytes, bad UTF-8, bad JSON
    or JSON that is not an object."""
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise DamagedRun(f"{path.name}: unreadable ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise DamagedRun(f"{path.name}: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise DamagedRun(f"{path.name}: not JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(value, dict):
        raise DamagedRun(f"{path.name}: holds a JSON {type(value).__name__}, not an object")
    return value


def read_run_folder(folder: Path) -> tuple[dict, dict | None, dict[str, dict]]:
    """``(meta, default evaluation or None, {variant: {"options", "scores"}})`` of a run folder.

    Cheap checks only (JSON files, and that ``reconstruction.npz`` opens as a zip archive with a
    ``points`` array); :meth:`RunStore.load_run` reads the arrays. Raises :class:`DamagedRun`."""
    meta = _read_json_object(folder / "meta.json")
    if not isinstance(meta.get("method"), str) or not isinstance(meta.get("view_ids", []), list):
        raise DamagedRun("meta.json: no method name or a malformed view list")
    npz = folder / "reconstruction.npz"
    try:
        with zipfile.ZipFile(npz) as archive:
            if "points.npy" not in archive.namelist():
                raise DamagedRun("reconstruction.npz: no points array")
    except (OSError, zipfile.BadZipFile, ValueError) as error:
        raise DamagedRun(f"reconstruction.npz: not a readable archive ({error})") from None
    evaluation_path = folder / "evaluation.json"
    evaluation = _read_json_object(evaluation_path) if evaluation_path.is_file() else None
    variants: dict[str, dict] = {}
    for path in sorted((folder / "evaluations").glob("*.json")):
        variant = _read_json_object(path)
        if not isinstance(variant.get("scores"), dict):
            raise DamagedRun(f"evaluations/{path.name}: no scores object")
        variants[path.stem] = variant
    return meta, evaluation, variants


@dataclass(frozen=True)
class RunRecord:
    """One stored run: where it is, its metadata and (if scored) its evaluation(s).

    ``evaluation`` is the evaluation with the default options; ``evaluations`` maps each other
    variant (:func:`evaluation_variant`) to ``{"options": dict, "scores": dict}``."""

    scene: str
    method: str
    key: str
    path: Path
    meta: dict
    evaluation: dict | None
    evaluations: dict = field(default_factory=dict)

    @property
    def ground_truth(self) -> str | None:
        """The full ground-truth fingerprint the run was made against (None for older runs)."""
        extra = self.meta.get("extra")
        value = extra.get("ground_truth") if isinstance(extra, dict) else None
        return value if isinstance(value, str) else None

    @property
    def gt_version(self) -> str:
        """12 hex digits of :attr:`ground_truth`, or ``unknown`` for runs stored before it."""
        from core.data.fingerprint import UNKNOWN

        return self.ground_truth[:12] if self.ground_truth else UNKNOWN

    def load(self) -> Reconstruction:
        return Reconstruction.load(self.path)


def latest_runs(records: Iterable[RunRecord], methods: Iterable[str]) -> dict[str, RunRecord]:
    """The most recently written run of each of ``methods`` among ``records`` (by the
    modification time of its ``meta.json``); methods without a run are absent."""
    wanted = set(methods)
    latest: dict[str, tuple[float, RunRecord]] = {}
    for record in records:
        if record.method not in wanted:
            continue
        try:
            written = (record.path / "meta.json").stat().st_mtime
        except OSError:
            continue
        if record.method not in latest or written > latest[record.method][0]:
            latest[record.method] = (written, record)
    return {method: record for method, (_, record) in latest.items()}


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

    def load_run(self, scene: str, method: str, key: str) -> tuple[Reconstruction, dict | None]:
        """``(reconstruction, default evaluation or None)`` of a stored run, every file read in
        full; raises :class:`DamagedRun` when any of them is unreadable (the caller recomputes)."""
        folder = self.run_dir(scene, method, key)
        _, evaluation, _ = read_run_folder(folder)
        try:
            recon = Reconstruction.load(folder)
        except Exception as error:  # numpy/zipfile/dataclass raise many types for a corrupt run
            raise DamagedRun(f"reconstruction: {type(error).__name__}: {str(error)[:200]}") from None
        return recon, evaluation

    def discard(self, scene: str, method: str, key: str) -> None:
        """Remove a (damaged) run folder: renamed to a staging name first, so that a listing
        never sees it half removed."""
        folder = self.run_dir(scene, method, key)
        if not folder.exists():
            return
        doomed = folder.parent / f"{STAGING_PREFIX}discard-{key}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(folder, doomed)
        except OSError:
            doomed = folder
        shutil.rmtree(doomed, ignore_errors=True)

    def save(self, scene: str, key: str, recon: Reconstruction, evaluation: dict | None = None,
             evaluation_options: dict | None = None) -> Path:
        """Store ``recon`` (and its evaluation, made with ``evaluation_options``: None = the
        defaults) atomically; returns the run folder.

        If the key is already stored, the existing run is kept (same inputs, same result).
        """
        final = self.run_dir(scene, recon.method, key)
        if (final / "meta.json").is_file():
            if evaluation is not None:
                self.save_evaluation(scene, recon.method, key, evaluation, evaluation_options)
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f"{STAGING_PREFIX}{key}-{uuid.uuid4().hex[:8]}"
        try:
            recon.save(staging)
            if evaluation is not None:
                variant = evaluation_variant(evaluation_options)
                if variant is None:
                    atomic_write_bytes(staging / "evaluation.json", to_json(evaluation).encode())
                else:
                    atomic_write_bytes(staging / "evaluations" / f"{variant}.json",
                                       to_json({"options": evaluation_options, "scores": evaluation}).encode())
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

    def save_evaluation(self, scene: str, method: str, key: str, evaluation: dict,
                        options: dict | None = None) -> None:
        """Store an evaluation of a stored run: ``evaluation.json`` for the default options
        (``options`` None or empty), else ``evaluations/<variant>.json`` with the options; an
        evaluation with other options never replaces another one."""
        folder = self.run_dir(scene, method, key)
        if not (folder / "meta.json").is_file():
            raise FileNotFoundError(f"no stored run {folder}")
        variant = evaluation_variant(options)
        if variant is None:
            atomic_write_bytes(folder / "evaluation.json", to_json(evaluation).encode())
        else:
            atomic_write_bytes(folder / "evaluations" / f"{variant}.json",
                               to_json({"options": options, "scores": evaluation}).encode())

    def delete(self, scene: str, method: str, key: str) -> None:
        shutil.rmtree(self.run_dir(scene, method, key), ignore_errors=True)

    def _run_folders(self, scene: str | None):
        """``(scene name, method, folder)`` of every run folder (complete or not, no staging)."""
        base = self.root / "runs"
        scenes = [safe_name(scene)] if scene is not None else (
            sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else [])
        for scene_name in scenes:
            scene_dir = base / scene_name
            if not scene_dir.is_dir():
                continue
            for method_dir in sorted(p for p in scene_dir.iterdir() if p.is_dir()):
                if method_dir.name.startswith(STAGING_PREFIX):
                    continue
                for folder in sorted(p for p in method_dir.iterdir() if p.is_dir()):
                    if not folder.name.startswith(STAGING_PREFIX):
                        yield scene_name, method_dir.name, folder

    def _scan(self, scene: str | None) -> tuple[list[RunRecord], list[DamagedRecord]]:
        records, damaged = [], []
        for scene_name, method, folder in self._run_folders(scene):
            try:
                meta, evaluation, variants = read_run_folder(folder)
                meta["weights_kind"] = infer_weights_kind(meta)
                mtime = folder.stat().st_mtime
            except DamagedRun as error:
                damaged.append(DamagedRecord(scene_name, method, folder.name, folder, str(error)))
                continue
            except OSError as error:  # removed while listing
                log.info("run %s vanished while listing: %s", folder, error)
                continue
            records.append((mtime, RunRecord(scene_name, method, folder.name, folder, meta, evaluation, variants)))
        records.sort(key=lambda item: item[0], reverse=True)
        return [record for _, record in records], damaged

    def runs(self, scene: str | None = None, ground_truth: str | None = None) -> list[RunRecord]:
        """All complete runs (of one scene, or all), newest first by folder modification time.

        ``ground_truth`` (a fingerprint) keeps the runs made against that ground truth and the
        runs of unknown ground truth (stored before fingerprints), dropping those made against
        another. Damaged folders are skipped (see :meth:`damaged`)."""
        records, damaged = self._scan(scene)
        for item in damaged:
            log.warning("skipping damaged run %s: %s", item.path, item.reason)
        if ground_truth is not None:
            records = [r for r in records if r.ground_truth in (None, ground_truth)]
        return records

    def damaged(self, scene: str | None = None, deep: bool = False) -> list[DamagedRecord]:
        """Run folders that cannot be read. ``deep`` also reads every reconstruction's arrays
        (slow on a large store); otherwise only the JSON files and the archive's directory."""
        records, damaged = self._scan(scene)
        if deep:
            for record in records:
                try:
                    self.load_run(record.scene, record.method, record.key)
                except DamagedRun as error:
                    damaged.append(DamagedRecord(record.scene, record.method, record.key, record.path, str(error)))
        return damaged

    def repair(self, scene: str | None = None, deep: bool = False) -> list[DamagedRecord]:
        """Remove the damaged run folders (a later request computes them again); returns them."""
        removed = self.damaged(scene, deep)
        for item in removed:
            self.discard(item.scene, item.method, item.key)
        return removed

    def clean_staging(self, max_age_s: float = STAGING_MAX_AGE_S, now: float | None = None) -> list[Path]:
        """Remove staging leftovers (``.tmp-*`` folders and ``.*.tmp`` files of atomic writes) under
        the store older than ``max_age_s`` seconds (younger ones may belong to a live write).

        First, at any age, the swaps a crash interrupted are finished
        (:func:`core.store.swap.recover_swaps`): a scene or run folder renamed aside
        (``.tmp-old-*``) whose replacement never got in is put back, one whose replacement is
        complete is removed; an aside is never removed by age. Returns what was removed (the
        asides put back are logged)."""
        if not self.root.is_dir():
            return []
        now = time.time() if now is None else now
        recoveries = recover_swaps(self.root, recursive=True)
        removed = [item.aside for item in recoveries if item.action == "removed"]
        for path in list(self.root.rglob(f"{STAGING_PREFIX}*")) + list(self.root.rglob(".*.tmp")):
            try:
                if aside_target(path) is not None or now - path.lstat().st_mtime < max_age_s:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
            except OSError:  # removed concurrently
                continue
        if removed:
            log.info("removed %d staging leftover(s) under %s", len(removed), self.root)
        return removed

    def snapshot(self) -> dict[str, float]:
        """{relative path: mtime} of every file under the store (tests compare before/after)."""
        if not self.root.exists():
            return {}
        return {str(p.relative_to(self.root)): p.stat().st_mtime for p in self.root.rglob("*") if p.is_file()}
