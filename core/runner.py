"""Running a method or importing a file, through the cache, then scoring: what pages and CLI call.

``run_method`` looks the run up in the cache by its key and computes only when missing;
``import_file`` stores an imported reconstruction; ``evaluate_run`` scores a stored run and
saves ``evaluation.json`` beside it. Nothing is written unless the step succeeded.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from core.eval import metrics
from core.store.cache import RunStore, run_key
from core.data.importers import read_reconstruction
from core.models import registry
from core.progress import Progress, silent
from core.data.scene import Reconstruction, Scene

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    recon: Reconstruction
    scene: str
    method: str
    key: str
    cached: bool
    evaluation: dict | None = None


def options_dict(options) -> dict:
    return dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options or {})


def key_for(scene: Scene, method: registry.Method, view_ids: list[int], options) -> str:
    return run_key(method.name, method.version, options_dict(options), view_ids,
                   [scene.images[i] for i in view_ids])


def run_method(scene: Scene, method_name: str, view_ids: list[int], options=None,
               progress: Progress | None = None, store: RunStore | None = None,
               evaluate: bool = True) -> RunResult:
    """Run (or fetch from the cache) ``method_name`` on ``view_ids`` of ``scene``.

    Raises ValueError for bad views/options, ``core.progress.Stopped`` when stopped (nothing
    stored), and whatever the method raises for bad input.
    """
    method = registry.get(method_name)
    options = options if options is not None else method.default_options()
    if isinstance(options, dict):
        options = registry.options_from_dict(method.options_type, options)
    view_ids = [int(v) for v in view_ids]
    if any(v < 0 or v >= scene.num_views for v in view_ids):
        raise ValueError(f"view ids must be in 0..{scene.num_views - 1}; got {view_ids}")
    method.check_views(view_ids)
    store = store or RunStore()
    progress = progress or silent()
    key = key_for(scene, method, view_ids, options)
    if store.has(scene.name, method.name, key):
        record = store.load(scene.name, method.name, key)
        evaluation = _stored_evaluation(store, scene.name, method.name, key)
        return RunResult(record, scene.name, method.name, key, cached=True, evaluation=evaluation)
    available = method.availability(options)
    if not available.ok:
        raise RuntimeError(f"{method.label} cannot run: {available.message()}")
    recon = method.run(scene, view_ids, options, progress.sub(0.0, 0.9))
    recon.view_ids = view_ids
    recon.version = method.version
    recon.options = options_dict(options)
    evaluation = None
    if evaluate and scene.has_ground_truth:
        try:
            evaluation = metrics.evaluate(scene, recon, progress=progress.sub(0.9, 1.0)).scores
        except metrics.EvaluationError as error:
            evaluation = {"error": str(error)}
    store.save(scene.name, key, recon, evaluation)
    return RunResult(recon, scene.name, method.name, key, cached=False, evaluation=evaluation)


def _stored_evaluation(store: RunStore, scene: str, method: str, key: str) -> dict | None:
    import json

    path = store.run_dir(scene, method, key) / "evaluation.json"
    return json.loads(path.read_text()) if path.is_file() else None


def import_file(scene: Scene, data: bytes, file_name: str, view_ids: list[int] | None = None,
                store: RunStore | None = None, options: metrics.EvaluationOptions | None = None,
                progress=None) -> tuple[RunResult, metrics.Evaluation]:
    """Read, score and store an imported reconstruction.

    The file is read and scored before anything is written, so a bad file (unreadable, empty,
    NaN-only, too few points) raises ``ReconstructionFileError`` / ``EvaluationError`` and leaves
    the cache untouched.
    """
    store = store or RunStore()
    recon = read_reconstruction(data, file_name, view_ids)
    evaluation = metrics.evaluate(scene, recon, options, progress=progress)
    key = run_key("imported", recon.version, {"sha256": recon.options["sha256"], "views": view_ids},
                  [], [])
    store.save(scene.name, key, recon, evaluation.scores)
    return RunResult(recon, scene.name, "imported", key, cached=False, evaluation=evaluation.scores), evaluation


def evaluate_run(scene: Scene, store: RunStore, method: str, key: str,
                 options: metrics.EvaluationOptions | None = None) -> metrics.Evaluation:
    """Score a stored run against the scene and save ``evaluation.json`` beside it."""
    recon = store.load(scene.name, method, key)
    evaluation = metrics.evaluate(scene, recon, options)
    store.save_evaluation(scene.name, method, key, evaluation.scores)
    return evaluation


def leaderboard(store: RunStore, scene: str, tau: str = "0.01") -> list[dict]:
    """One row per stored run of ``scene``: method, views, time, memory, size and its scores."""
    rows = []
    for record in store.runs(scene):
        meta, ev = record.meta, record.evaluation or {}
        rows.append({
            "method": record.method,
            "views": len(meta.get("view_ids") or []) or None,
            "chamfer": ev.get("chamfer"),
            "emd": ev.get("emd"),
            f"F@{tau}": (ev.get("fscore") or {}).get(tau),
            "accuracy": ev.get("accuracy"),
            "completeness": ev.get("completeness"),
            "auc30": (ev.get("cameras") or {}).get("auc30"),
            "seconds": meta.get("seconds"),
            "peak_memory_mb": (meta.get("peak_memory_bytes") or 0) / 2**20 or None,
            "parameters_m": (meta.get("parameter_count") or 0) / 1e6 or None,
            "device": meta.get("device"),
            "notes": "; ".join(meta.get("notes") or []) + (f" (not scored: {ev['error']})" if "error" in ev else ""),
            "key": record.key,
        })
    return rows
