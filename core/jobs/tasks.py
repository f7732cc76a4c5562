"""What a job does inside a Ray worker: one remote function, one handler per kind of job.

:func:`execute` (the task the manager starts) reports to the manager, runs the kind's handler
with a :class:`~core.progress.Progress` wired to the manager (throttled, cancel-aware) and a
store whose writes first ask the manager for the commit (so a cancelled job stores nothing),
and returns an outcome dict ``{"state": "done" | "failed" | "cancelled", "error", "result",
"folders"}``. A :class:`~core.errors.UserError` fails the job with its one-line message; any
other exception is a bug and propagates (the manager records it).

Where the worker does not share the store's disk (spec ``shared_disk`` false), the handler
computes into a private temporary store and returns the written folders as bytes
(``folders``: ``{path relative to the store: {file: bytes}}``); the manager writes them into
the real store (:func:`core.jobs.manager.write_folders`). The scene travels the same way
(``scene_files``).

Models stay warm per worker: Ray reuses worker processes, and the runner's model cache
(:mod:`core.models.model_cache`) is per process, so a second job with the same model on the
same worker does not load it again (``result["model_was_warm"]`` says which happened).
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import ray

from core.errors import UserError
from core.progress import Progress, Stopped
from core.store.cache import RunStore

REPORT_EVERY_S = 0.5


class GatedStore(RunStore):
    """A run store that asks ``gate()`` before every write; ``gate`` returning False raises
    :class:`Stopped` (the job was cancelled: nothing is written)."""

    def __init__(self, root, gate) -> None:
        super().__init__(root)
        self._gate = gate
        self._open = False

    def _check(self) -> None:
        if not self._open:
            if not self._gate():
                raise Stopped("cancelled before storing")
            self._open = True

    def save(self, *args, **kwargs):
        self._check()
        return super().save(*args, **kwargs)

    def save_evaluation(self, *args, **kwargs):
        self._check()
        return super().save_evaluation(*args, **kwargs)


def read_folder(folder: Path) -> dict[str, bytes]:
    """``{relative file path: bytes}`` of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def unpack_folder(files: dict[str, bytes], folder: Path) -> Path:
    """Write ``files`` (as :func:`read_folder` returns) under ``folder``; returns ``folder``."""
    for name, data in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return folder


def _scene(payload: dict, scratch: Path):
    from core.data.scene import Scene

    if payload.get("scene_files"):
        return Scene.load(unpack_folder(payload["scene_files"], scratch / "scene"))
    return Scene.load(payload["scene"])


def run_job(payload: dict, progress: Progress, store: RunStore, scratch: Path) -> dict:
    """A method run (:func:`core.runner.run_method`); the result is the CLI's JSON summary."""
    from core.models import model_cache, registry
    from core.runner import resolve_device, run_method

    scene = _scene(payload, scratch)
    method = registry.get(payload["method"])
    options = method.parse_options(payload.get("options") or {})
    device = resolve_device(options.device) if hasattr(options, "device") else "cpu"
    warm = (method.name, method.version, method.model_key(options), device) in model_cache.held()
    result = run_method(scene, method.name, payload["views"], options, progress, store,
                        evaluate=payload.get("evaluate", True),
                        score_random_weights=payload.get("score_random_weights", True))
    recon = result.recon
    return {"method": method.name, "scene": scene.name, "key": result.key, "cached": result.cached,
            "views": recon.view_ids, "points": int(len(recon.points)), "seconds": recon.seconds,
            "peak_memory_bytes": recon.peak_memory_bytes, "parameter_count": recon.parameter_count,
            "weights_kind": recon.weights_kind, "notes": recon.notes, "evaluation": result.evaluation,
            "model_was_warm": warm and not result.cached,
            "run_dir": str(store.run_dir(scene.name, method.name, result.key).relative_to(store.root))}


def evaluate_job(payload: dict, progress: Progress, store: RunStore, scratch: Path) -> dict:
    """Score and store an imported reconstruction file (:func:`core.runner.import_file`)."""
    from core import options as opts
    from core.eval import metrics
    from core.runner import import_file

    scene = _scene(payload, scratch)
    options = opts.parse(metrics.EvaluationOptions, payload["options"]) if payload.get("options") else None
    result, _ = import_file(scene, payload["data"], payload["file_name"], payload.get("views"),
                            store=store, options=options, progress=progress)
    return {"method": "imported", "scene": scene.name, "key": result.key, "evaluation": result.evaluation,
            "run_dir": str(store.run_dir(scene.name, "imported", result.key).relative_to(store.root))}


HANDLERS = {"run": run_job, "evaluate": evaluate_job}


def _reporter(manager, job_id: str) -> Progress:
    """Progress that forwards to the manager at most every REPORT_EVERY_S (and at 100 %) and
    stops when the manager says the job was cancelled."""
    last = [0.0]
    progress: Progress

    def forward(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last[0] >= REPORT_EVERY_S or fraction >= 1.0:
            last[0] = now
            if ray.get(manager.report.remote(job_id, fraction, message)):
                progress.request_stop()

    progress = Progress(forward)
    return progress


@ray.remote(max_retries=0)
def execute(spec: dict, job_id: str, manager) -> dict:
    """Run one job (``spec["kind"]`` selects the handler); see the module docstring."""
    worker = {"pid": os.getpid(), "node": socket.gethostname()}
    if ray.get(manager.started.remote(job_id, worker)):
        return {"state": "cancelled"}
    shared = spec.get("shared_disk", True)
    scratch = Path(tempfile.mkdtemp(prefix="rb-job-"))
    try:
        root = Path(spec["store"]) if shared else scratch / "store"
        store = GatedStore(root, lambda: ray.get(manager.commit.remote(job_id)))
        progress = _reporter(manager, job_id)
        try:
            result = HANDLERS[spec["kind"]](spec["payload"], progress, store, scratch)
        except Stopped:
            return {"state": "cancelled"}
        except UserError as error:
            return {"state": "failed", "error": str(error)}
        result["worker"] = worker
        outcome = {"state": "done", "result": result}
        if not shared and result.get("run_dir") and (root / result["run_dir"]).is_dir():
            outcome["folders"] = {result["run_dir"]: read_folder(root / result["run_dir"])}
        return outcome
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
