"""Running a method through its lifecycle and the run store; importing files; scoring.

:func:`execute` is the method lifecycle, the only place that validates options and views,
checks availability, resolves the device, takes the model from the per-process model cache,
measures time and peak memory, counts parameters and records provenance (method, version,
options, views, device, typed weights kind, checkpoint licences). :func:`run_method` puts the
run key and the store around it: a stored run is returned as it is, a new one is computed,
optionally scored, and stored atomically. Nothing is written unless the step succeeded.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from core import limits
from core import options as opts
from core.data.fingerprint import ground_truth_fingerprint
from core.data.importers import read_reconstruction
from core.data.scene import Reconstruction, Scene
from core.errors import UserError
from core.eval import metrics
from core.eval.scores import Scores, ScoresFormatError, threshold_key
from core.models import model_cache, registry
from core.profiling import measure
from core.progress import Progress, silent
from core.store.cache import DamagedRun, RunStore, run_key

log = logging.getLogger(__name__)

RANDOM_NOTE = "random weights: the geometry and scores are meaningless"


class NoCuda(UserError):
    """CUDA was asked for on a machine without it."""


@dataclass
class RunResult:
    recon: Reconstruction
    scene: str
    method: str
    key: str
    cached: bool
    evaluation: dict | None = None


def resolve_device(choice: str = "auto") -> str:
    """``cpu`` or ``cuda`` for a device option (``auto`` = CUDA when available)."""
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise NoCuda("device 'cuda' was asked for but CUDA is not available here (use auto or cpu)")
    if choice not in ("cpu", "cuda"):
        raise UserError(f"unknown device {choice!r} (choices: auto, cpu, cuda)")
    return choice


def is_random(recon_or_meta) -> bool:
    """True when a run (Reconstruction or stored meta dict) used random weights."""
    kind = recon_or_meta.get("weights_kind") if isinstance(recon_or_meta, dict) else recon_or_meta.weights_kind
    return kind in opts.RANDOM_WEIGHTS


def prepare_call(method: registry.Method, scene: Scene, view_ids, options):
    """Validated ``(options, view_ids)``; raises UserError naming what is wrong."""
    options = method.parse_options(options if options is not None else None)
    opts.refuse_paths_when_hosted(options)
    view_ids = method.check_views(view_ids, scene.num_views)
    # The largest chosen picture bounds the cost (a method that needs equal sizes says so itself).
    height = max((scene.images[v].shape[0] for v in view_ids), default=0)
    width = max((scene.images[v].shape[1] for v in view_ids), default=0)
    limits.check_run_cost(method, options, len(view_ids), height, width)
    return options, view_ids


def load_model(method: registry.Method, options, device: str):
    """``(model, load_seconds)`` from the per-process cache (one copy per model key)."""
    key = (method.name, method.version, method.model_key(options), device)
    model, seconds, _ = model_cache.get(key, lambda: method.load(options, device), method.cost_bytes)
    return model, seconds


def execute(method: registry.Method, scene: Scene, view_ids, options=None,
            progress: Progress | None = None) -> Reconstruction:
    """Run ``method`` on ``view_ids`` of ``scene`` (no store): the whole method lifecycle.

    Raises :class:`UserError` for bad options or views, a method that cannot run here
    (missing checkpoint, no CUDA) or bad input the method detects; ``Stopped`` when stopped.
    """
    progress = progress or silent()
    options, view_ids = prepare_call(method, scene, view_ids, options)
    available = method.availability(options)
    if not available.ok:
        raise registry.CannotRun(f"{method.label} cannot run: {available.message()}")
    # A method without a device option runs where its code runs (COLMAP's CPU wheel, 3D-LMNet).
    device = resolve_device(options.device) if hasattr(options, "device") else "cpu"
    progress(0.0, f"loading {method.label}")
    model, load_seconds = load_model(method, options, device)
    with measure(cuda=device == "cuda") as measured:
        recon = method.predict(model, scene, view_ids, options, progress, device)
    progress.check()
    kind = method.weights_kind(options)
    recon.method = method.name
    recon.version = method.version
    recon.view_ids = list(view_ids)
    recon.options = opts.as_dict(options)
    recon.seconds = measured.seconds
    recon.peak_memory_bytes = measured.peak_memory_bytes
    recon.parameter_count = method.parameter_count(model)
    recon.device = device
    recon.weights_kind = kind
    if kind in opts.RANDOM_WEIGHTS and RANDOM_NOTE not in recon.notes:
        recon.notes.insert(0, RANDOM_NOTE)
    recon.extra["model_load_seconds"] = load_seconds
    licences = method.licences(options)
    if licences:
        recon.extra["licences"] = licences
    return recon


def key_for(scene: Scene, method: registry.Method, view_ids: list[int], options) -> str:
    """The run key: method, version, options, views, the views' pixels and the scene's
    ground-truth fingerprint (a new ground truth never answers with an old score)."""
    return run_key(method.name, method.version, opts.as_dict(options), view_ids,
                   [scene.images[i] for i in view_ids], ground_truth_fingerprint(scene))


def _stored(store: RunStore, scene: str, method: str, key: str) -> tuple[Reconstruction, dict | None] | None:
    """A stored run and its default evaluation, or None when absent or damaged (a damaged
    folder is removed, so that the caller computes and stores it again)."""
    if not store.has(scene, method, key):
        return None
    try:
        return store.load_run(scene, method, key)
    except DamagedRun as error:
        log.warning("stored run %s/%s/%s is damaged (%s); computing it again", scene, method, key, error)
        store.discard(scene, method, key)
        return None


def run_method(scene: Scene, method_name: str, view_ids: list[int], options=None,
               progress: Progress | None = None, store: RunStore | None = None,
               evaluate: bool = True, score_random_weights: bool = True) -> RunResult:
    """Run (or fetch from the store) ``method_name`` on ``view_ids`` of ``scene``.

    ``evaluate`` scores a new run against the ground truth; ``score_random_weights=False``
    skips scoring when the weights are random (the scaling study, which only times them).
    Raises :class:`UserError` for bad input and ``Stopped`` when stopped (nothing stored).
    """
    method = registry.get(method_name)
    options, view_ids = prepare_call(method, scene, view_ids, options)
    store = store or RunStore()
    progress = progress or silent()
    key = key_for(scene, method, view_ids, options)
    stored = _stored(store, scene.name, method.name, key)
    if stored is not None:
        return RunResult(stored[0], scene.name, method.name, key, cached=True, evaluation=stored[1])
    recon = execute(method, scene, view_ids, options, progress.sub(0.0, 0.9))
    recon.extra["ground_truth"] = ground_truth_fingerprint(scene)
    evaluation = None
    wanted = evaluate and (score_random_weights or not is_random(recon))
    if wanted and scene.has_ground_truth:
        try:
            evaluation = metrics.evaluate(scene, recon, progress=progress.sub(0.9, 1.0)).scores
        except metrics.EvaluationError as error:
            evaluation = {"error": str(error)}
    store.save(scene.name, key, recon, evaluation)
    return RunResult(recon, scene.name, method.name, key, cached=False, evaluation=evaluation)


def evaluation_options_dict(options: metrics.EvaluationOptions | None) -> dict | None:
    """None for the default evaluation options (the stored ``evaluation.json``), else the
    options as a dict (a separate stored evaluation, see :func:`core.store.cache.evaluation_variant`)."""
    if options is None:
        return None
    values = opts.as_dict(options)
    return None if values == opts.as_dict(metrics.EvaluationOptions()) else values


def import_file(scene: Scene, data: bytes, file_name: str, view_ids: list[int] | None = None,
                store: RunStore | None = None, options: metrics.EvaluationOptions | None = None,
                progress=None) -> tuple[RunResult, metrics.Evaluation]:
    """Read, score and store an imported reconstruction.

    The file is read and scored before anything is written, so a bad file (unreadable, empty,
    NaN-only, too few points) raises ``ReconstructionFileError`` / ``EvaluationError`` and leaves
    the store untouched.
    """
    store = store or RunStore()
    if view_ids is not None:
        view_ids = registry.check_view_ids(view_ids, scene.num_views)
    recon = read_reconstruction(data, file_name, view_ids)
    evaluation = metrics.evaluate(scene, recon, options, progress=progress)
    fingerprint = ground_truth_fingerprint(scene)
    recon.extra["ground_truth"] = fingerprint
    key = run_key("imported", recon.version, {"sha256": recon.options["sha256"], "views": view_ids},
                  [], [], fingerprint)
    store.save(scene.name, key, recon, evaluation.scores, evaluation_options_dict(options))
    return RunResult(recon, scene.name, "imported", key, cached=False, evaluation=evaluation.scores), evaluation


def evaluate_run(scene: Scene, store: RunStore, method: str, key: str,
                 options: metrics.EvaluationOptions | None = None) -> metrics.Evaluation:
    """Score a stored run against the scene and save ``evaluation.json`` beside it."""
    recon = store.load(scene.name, method, key)
    evaluation = metrics.evaluate(scene, recon, options)
    store.save_evaluation(scene.name, method, key, evaluation.scores, evaluation_options_dict(options))
    return evaluation


def view_ids_text(view_ids: list[int], limit: int = 6) -> str:
    """Scene view ids as short text: ``"0, 14, 28"``; past ``limit`` ids the first three, an
    ellipsis and the last (``"0, 2, 4, …, 40"``)."""
    ids = [str(int(v)) for v in view_ids]
    return ", ".join(ids if len(ids) <= limit else ids[:3] + ["…", ids[-1]])


def leaderboard(store: RunStore, scene: str | Scene, tau: float = 0.01) -> list[dict]:
    """One row per stored run of ``scene``: method, views, time, memory, size and its scores.

    Row keys: method, label (:func:`core.models.registry.run_label`: method label, distinguishing
    options, weights kind; an imported run's file name), views, view_ids (the scene views used,
    as text: :func:`view_ids_text`), weights, chamfer, emd,
    ``F@{tau:g}``, accuracy, completeness, auc30 (normalised units / fractions; None when the run
    is not scored or lacks the measure), seconds,
    peak_memory_mb, parameters_m, device, notes (with why a run was not scored, or why its
    ``evaluation.json`` could not be read), gt_version (12 hex digits of the ground truth the
    run was made against; ``unknown`` for runs stored before it was recorded), key.

    ``scene`` is a name (every run stored under it) or a :class:`Scene` (the runs made against
    its ground truth plus those of unknown ground truth: runs of an earlier object prepared under
    the same name are left out). A run evaluated only with non-default options shows that
    evaluation, with a note.
    """
    rows = []
    if isinstance(scene, Scene):
        records = store.runs(scene.name, ground_truth=ground_truth_fingerprint(scene))
    else:
        records = store.runs(scene)
    for record in records:
        meta = record.meta
        scores, problem = None, ""
        evaluation = record.evaluation
        if evaluation is None and record.evaluations:
            variant = next(iter(record.evaluations.values()))
            evaluation = variant["scores"]
            problem = f" (evaluated with non-default options: {variant.get('options')})"
        if evaluation is not None:
            try:
                scores = Scores.from_json(evaluation)
            except ScoresFormatError as error:
                problem = f" (unreadable evaluation: {error})"
        if scores is not None and not scores.scored:
            problem = f" (not scored: {scores.error})"
        scored = scores if scores is not None and scores.scored else None
        rows.append({
            "method": record.method,
            "label": registry.run_label(record.method, meta),
            "views": len(meta.get("view_ids") or []) or None,
            "view_ids": view_ids_text(meta.get("view_ids") or []) or None,
            "weights": meta.get("weights_kind"),
            "chamfer": scored and scored.chamfer,
            "emd": scored and scored.emd,
            f"F@{threshold_key(tau)}": scored and scored.fscore_at(tau),
            "accuracy": scored and scored.accuracy,
            "completeness": scored and scored.completeness,
            "auc30": scored and scored.auc30,
            "seconds": meta.get("seconds") if record.method != "imported" else None,  # no method ran
            "peak_memory_mb": (meta.get("peak_memory_bytes") or 0) / 2**20 or None,
            "parameters_m": (meta.get("parameter_count") or 0) / 1e6 or None,
            "device": meta.get("device"),
            "notes": "; ".join(meta.get("notes") or []) + problem,
            "gt_version": record.gt_version,
            "key": record.key,
        })
    return rows
