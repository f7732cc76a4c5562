"""What a job does inside a Ray worker: one remote function, one handler per kind of job.

:func:`execute` (the task the manager starts) reports to the manager, runs the kind's handler
with a :class:`~core.progress.Progress` wired to the manager (throttled, cancel-aware) and a
store whose writes first ask the manager for the commit (so a cancelled job stores nothing),
and returns an outcome dict ``{"state": "done" | "failed" | "cancelled", "error", "result",
"folders", "files"}``. A kind that stores one result per step (``GATE_EVERY_WRITE``: the scaling
study) asks before each write whether it was cancelled instead, so a cancel stores nothing
further and the steps already stored stay. A :class:`~core.errors.UserError` fails the job with its one-line message; any
other exception is a bug and propagates (the manager records it).

Where the worker does not share the store's disk (spec ``shared_disk`` false), the handler
computes into a private temporary store and returns the written folders as bytes
(``folders``: ``{path relative to the store: {file: bytes}}``, from the result's ``run_dir`` /
``run_dirs``; single files added to a stored run, from its ``files``, in ``files``: ``{path:
bytes}``); the manager writes them into the real store (:func:`core.jobs.manager.write_folders`,
:func:`core.jobs.manager.write_files`). The scene travels the same way
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
    """A run store that asks ``gate()`` before its first write (``every_write``: before each
    write); ``gate`` returning False raises :class:`Stopped` (the job was cancelled: nothing
    (further) is written)."""

    def __init__(self, root, gate, every_write: bool = False) -> None:
        super().__init__(root)
        self._gate = gate
        self._open = False
        self._every_write = every_write

    def _check(self) -> None:
        if not self._open:
            if not self._gate():
                raise Stopped("cancelled before storing")
            self._open = not self._every_write

    def save(self, *args, **kwargs):
        self._check()
        return super().save(*args, **kwargs)

    def save_evaluation(self, *args, **kwargs):
        self._check()
        return super().save_evaluation(*args, **kwargs)

    def begin_write(self) -> None:
        """Ask for the commit now, for a handler that writes outside :meth:`save` (a prepared
        scene's folder); raises :class:`Stopped` when the job was cancelled."""
        self._check()


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


def scaling_job(payload: dict, progress: Progress, store: RunStore, scratch: Path) -> dict:
    """The view-count scaling study (:func:`core.studies.scaling.run_studies`) in one worker, its
    runs back to back as on one machine (so their times compare). The result is what the page
    and the CLI render (:func:`core.studies.scaling.results_to_json`) plus the stored run
    folders (``run_dirs``). A cancel stops before the next run is stored; the finished runs stay
    in the store (a rerun of the study takes them from there)."""
    from core.studies import scaling

    scene = _scene(payload, scratch)
    results = scaling.run_studies(scene, payload["methods"], payload["view_counts"], payload["repeats"],
                                  progress, store, seed=payload["seed"])
    if any(result.stopped for result in results.values()):
        raise Stopped("study cancelled")
    run_dirs = sorted({str(store.run_dir(scene.name, point.method, point.key).relative_to(store.root))
                       for result in results.values() for point in result.points})
    return {"scene": scene.name, "methods": payload["methods"], "results": scaling.results_to_json(results),
            "run_dirs": run_dirs}


def score_job(payload: dict, progress: Progress, store: RunStore, scratch: Path) -> dict:
    """Score a stored run (:func:`core.runner.evaluate_run`) and store its evaluation beside it.
    Without a shared disk the run folder travels in ``run_files`` and the evaluation file comes
    back in ``files``."""
    from core import options as opts
    from core.eval import metrics
    from core.runner import evaluate_run, evaluation_options_dict
    from core.store.cache import evaluation_variant

    scene = _scene(payload, scratch)
    method, key = payload["method"], payload["key"]
    folder = store.run_dir(scene.name, method, key)
    if payload.get("run_files"):
        unpack_folder(payload["run_files"], folder)
    if not store.has(scene.name, method, key):
        raise UserError(f"run {method}/{key} of {scene.name} is not stored (deleted meanwhile?)")
    options = opts.parse(metrics.EvaluationOptions, payload["options"]) if payload.get("options") else None
    progress(0.0, f"scoring {method} run {key[:8]}")
    evaluation = evaluate_run(scene, store, method, key, options)
    progress(1.0, "scored")
    variant = evaluation_variant(evaluation_options_dict(options))
    written = folder / "evaluation.json" if variant is None else folder / "evaluations" / f"{variant}.json"
    return {"scene": scene.name, "method": method, "key": key, "evaluation": evaluation.scores,
            "files": [str(written.relative_to(store.root))]}


def lmnet_train_job(payload: dict, progress: Progress, store: RunStore, scratch: Path) -> dict:
    """3D-LMNet training (:func:`core.models.lmnet.train.train`), resumed from the run folder's
    ``last.pt`` unless ``payload["restart"]``. Progress is steps over the total; a cancel stops
    at the next step with the last complete checkpoint (``last.pt``) kept, so a resubmit resumes
    from it. The run folder must be on a disk the worker shares."""
    from core.models.lmnet.train import TrainOptions, train

    options = TrainOptions(**payload["options"])
    try:
        return train(options, resume=not payload.get("restart", False), progress=progress)
    except ValueError as error:      # a bad size or configuration (DataError is a UserError already)
        raise UserError(str(error)) from None


def clean_training(spec: dict) -> None:
    """After a training job failed or was cancelled: remove half-written files (``*.tmp``) of its run
    folder, and the folder itself when the job created it and it holds no complete checkpoint
    (``last.pt``). A folder holding a checkpoint (this job's or an earlier one), or that another
    training holds (:func:`core.models.lmnet.train.exclusive`), is never removed."""
    from core.models.lmnet.train import RunFolderBusy, exclusive

    out = Path(spec["payload"]["options"]["out"])
    if not out.is_dir():
        return
    try:
        with exclusive(out):        # another training writing the folder keeps it as it is
            for leftover in out.glob("*.tmp"):
                leftover.unlink(missing_ok=True)
            remove = spec["payload"].get("created_folder") and not (out / "last.pt").is_file()
    except RunFolderBusy:
        return
    if remove:
        shutil.rmtree(out, ignore_errors=True)


def prepare_job(payload: dict, progress: Progress, store: RunStore, scratch: Path) -> dict:
    """Prepare a scene (:func:`core.data.prepare.pipeline.prepare`) from the images of the payload
    (compressed files decoded here and checked against the pixels' SHA-256 the key was made from,
    or pixels: :func:`decode_views`) into ``<store root>/<payload["folder"]>``: a prepare job's
    store is the scene's parent folder (without a shared disk, a private one, whose scene folder
    goes back as ``run_dir`` and is swapped into place by the manager, ``spec["replace_folders"]``).
    The staging folder is named ``.tmp-<key>-…`` (the manager removes it when the worker dies); the
    commit is asked right before the finished scene replaces the folder, so a cancelled job writes
    nothing. The result is the ``prepare`` CLI's JSON report (``scene``: the scene folder; no crop
    box)."""
    import json

    from core import options as opts
    from core.data.prepare.pipeline import PrepareOptions, prepare
    from core.data.scene import to_json

    images = decode_views(payload)
    result = prepare(images, payload["names"], Path(store.root) / payload["folder"],
                     scene_name=payload["scene_name"], options=opts.parse(PrepareOptions, payload["options"]),
                     progress=progress, is_video=payload["is_video"], provenance=payload["provenance"],
                     staging_prefix=f".tmp-{payload['key']}-", before_swap=store.begin_write)
    report = json.loads(to_json({k: v for k, v in result.report.items() if k != "crop"}))
    return {"scene": payload["out"], **report, "run_dir": payload["folder"]}


def decode_views(payload: dict) -> list:
    """The ``uint8 HxWx3`` views of a prepare payload: each of ``views`` that is a file's bytes
    decoded (:func:`core.data.scene.read_image`) and checked against its ``pixels`` SHA-256 and
    the payload's ``shape`` (the others are pixels already); raises DatasetError naming the first
    view that decodes differently (another image library on this node)."""
    import hashlib

    from core.data.prepare import DatasetError
    from core.data.scene import read_image

    images = []
    for data, expected, name in zip(payload["views"], payload["pixels"], payload["names"]):
        if not isinstance(data, (bytes, bytearray)):
            images.append(data)
            continue
        image = read_image(data)
        if list(image.shape) != list(payload["shape"]) or hashlib.sha256(image.tobytes()).hexdigest() != expected:
            raise DatasetError(f"{name} decodes to other pixels on this worker than where it was submitted "
                               f"({image.shape[1]}x{image.shape[0]}): use the same Pillow version on both")
        images.append(image)
    return images


def attention_job(payload: dict, progress: Progress, store: RunStore, scratch: Path) -> dict:
    """The attention viewer's capture (:func:`core.studies.attention.capture_session`, one VGGT
    forward keeping every captured global layer's queries and keys) on the payload's view pixels,
    stored as ``attention/<key>`` (:func:`core.studies.attention_store.store_session`: staged as
    ``.tmp-<key>-*``, the commit asked first, so a cancelled job stores nothing). A capture already
    stored under the key is not computed again (``cached``)."""
    from types import SimpleNamespace

    from core.studies import attention_store
    from core.studies.attention import capture_session

    key, views = payload["key"], [int(v) for v in payload["view_ids"]]
    relative = attention_store.relative_folder(key)
    result = {"key": key, "scene": payload["scene_name"], "views": views, "weights": payload["weights"],
              "run_dir": relative}
    if attention_store.is_complete(Path(store.root) / relative):
        return {**result, "cached": True}
    session = capture_session(SimpleNamespace(images=dict(zip(views, payload["images"]))), views,
                              weights=payload["weights"], checkpoint_path=payload["checkpoint_path"],
                              preprocess=payload["preprocess"], layers=payload["layers"],
                              half_precision_keys=payload["half"], progress=progress,
                              checkpoint=payload["checkpoint"])
    attention_store.store_session(session, store.root, key, payload["scene_name"], before_write=store.begin_write)
    return {**result, "cached": False, "layers": session.layers, "heads": session.heads,
            "seconds": session.seconds, "capture_bytes": session.capture_bytes}


def _capture_inputs(payload: dict, store: RunStore):
    """``float32 [S,3,H',W']`` network inputs of a stored capture: the payload's (no shared disk)
    or the capture folder's ``inputs.npy``; UserError when the capture is no longer stored."""
    import numpy as np

    from core.studies import attention_store

    if payload.get("inputs") is not None:
        return payload["inputs"]
    path = Path(store.root) / attention_store.relative_folder(payload["capture"]) / "inputs.npy"
    if not path.is_file():
        raise UserError(f"the attention capture {payload['capture']} is no longer stored: run the capture again")
    return np.load(path)


def attribution_job(payload: dict, progress: Progress, store: RunStore, scratch: Path) -> dict:
    """The gradient attribution of a clicked pixel (:func:`core.studies.attribution.attribute`) on a
    stored capture's inputs, written beside the capture
    (``attention/<capture>/attributions/<key>.npz``, :func:`core.studies.attention_store.write_attribution`;
    without a shared disk the file comes back in ``files``). The result names the file and the
    attribution's choices; the maps are in the file."""
    from core.studies import attention_store
    from core.studies.attention import vggt_model
    from core.studies.attribution import attribute

    inputs = _capture_inputs(payload, store)
    progress(0.05, "loading VGGT")
    model = vggt_model(payload["weights"], payload["checkpoint"], payload["checkpoint_path"])
    progress(0.2, "forward and backward pass")
    pixel = (int(payload["pixel"][0]), int(payload["pixel"][1]))
    result = attribute(model, inputs, int(payload["frame"]), pixel, payload["target"], int(payload["layer"]),
                       bool(payload["checkpointing"]))
    progress(0.95, "storing the maps")
    relative = attention_store.attribution_file(payload["capture"], payload["key"])
    store.begin_write()
    attention_store.write_attribution(result, Path(store.root) / relative)
    return {"capture": payload["capture"], "key": payload["key"], "frame": result.frame, "pixel": list(pixel),
            "target": result.target, "layer": result.layer, "checkpointing": bool(payload["checkpointing"]),
            "value": result.value, "seconds": result.seconds, "file": relative, "files": [relative]}


def tracks_job(payload: dict, progress: Progress, store: RunStore, scratch: Path) -> dict:
    """The tracking head's tracks of clicked pixels (:func:`core.studies.attention.track_points`) on
    a stored capture's inputs; the tracks (small) are the result (nothing is stored)."""
    from core.studies import attention_store
    from core.studies.attention import track_points, tracking_model

    inputs = _capture_inputs(payload, store)
    progress(0.05, "loading VGGT with its tracking head")
    model = tracking_model(payload["weights"], payload["checkpoint"], payload["checkpoint_path"])
    tracks = track_points(model, inputs, int(payload["frame"]), payload["points"], progress=progress)
    return {"capture": payload["capture"], "key": payload["key"], "tracks": attention_store.tracks_to_json(tracks)}


HANDLERS = {"run": run_job, "evaluate": evaluate_job, "scaling": scaling_job, "score": score_job,
            "lmnet-train": lmnet_train_job, "prepare": prepare_job, "attention": attention_job,
            "attribution": attribution_job, "tracks": tracks_job}
# Kinds that store one result per step, each asking whether the job was cancelled meanwhile.
GATE_EVERY_WRITE = {"scaling"}
# What the manager does, besides removing ``.tmp-<key>*`` staging, after a kind's job failed.
CLEANERS = {"lmnet-train": clean_training}


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
        if spec["kind"] in GATE_EVERY_WRITE:
            store = GatedStore(root, lambda: not ray.get(manager.stop_asked.remote(job_id)), every_write=True)
        else:
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
        if not shared:
            folders = [result["run_dir"]] if result.get("run_dir") else []
            folders += result.get("run_dirs") or []
            outcome["folders"] = {d: read_folder(root / d) for d in folders if (root / d).is_dir()}
            outcome["files"] = {f: (root / f).read_bytes() for f in result.get("files") or []}
        return outcome
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
