"""The view-count scaling study: time, memory and quality of multi-view methods against the number of views.

Every registered discriminative method that takes more than one view can be studied
(:func:`multi_view_methods`), several in one run: for each view count n and each repeat r the
methods run back to back (interleaved, so machine load during the study affects them all
alike). Views are spaced evenly around the orbit with a seeded random offset (repeat 0 starts
at view 0), the same views for every method; every (method, n, r) run goes through the run
cache, so a stopped study keeps what is done and a rerun only computes what is missing.

Time and memory are fitted per method with three models (least squares):
- ``nlogn``: a·n·log n + b (the seed study's claim),
- ``quadratic``: a·n + b·n² + c (frame attention and heads are linear in n, global attention is
  quadratic in the number of tokens, hence in n),
- ``flops``: a·F(n) + b with F the analytic FLOP count of the architecture (when the method
  offers one: :meth:`core.models.registry.Method.flops`).
The best model is the one with the lowest BIC (residual error penalised by parameter count).

A study runs as one job on Ray (``scaling`` kind: :func:`core.jobs.client.scaling_spec`,
:func:`core.jobs.tasks.scaling_job`): its runs go back to back in one worker, as they must for
their times to compare (separate run jobs would run side by side and share the CPUs); the job's
result is :func:`results_to_json` of what :func:`run_studies` returns, and the same study asked
again attaches to it or, once done, is answered from the cached runs. The command line is
:mod:`core.studies.scaling_cli`.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_VIEW_COUNTS = (1, 3, 5, 8, 10, 15, 20)


@dataclass
class ScalingPoint:
    """One run of the study: ``views`` views (ids ``view_ids``) of subset ``repeat``; seconds and
    peak memory (MB) as the runner measured them; the run's cache key; its scores (a stored
    evaluation dict) when it was scored; ``method``: the registered method that ran."""

    views: int
    repeat: int
    view_ids: list[int]
    seconds: float
    peak_memory_mb: float
    key: str
    cached: bool
    scores: dict | None = None
    method: str = ""


@dataclass
class ModelFit:
    name: str
    formula: str
    coefficients: dict
    predictions: list[float]
    residuals: list[float]
    rmse: float
    bic: float


@dataclass
class ScalingResult:
    """One method's points (in the order they ran), whether they carry quality scores (and why
    not), and whether the study was stopped before its last point."""

    method: str
    points: list[ScalingPoint] = field(default_factory=list)
    quality_available: bool = True
    quality_note: str = ""
    stopped: bool = False


def study_views(num_views: int, count: int, repeat: int, seed: int = 0) -> list[int]:
    """Views of repeat ``repeat``: ``count`` evenly spaced, offset by a seeded fraction of a step."""
    if not 1 <= count <= num_views:
        raise ValueError(f"view count {count} is outside 1..{num_views}")
    offset = 0.0 if repeat == 0 else float(np.random.default_rng([seed, count, repeat]).random())
    step = num_views / count
    return sorted({int(math.floor((i + offset) * step)) % num_views for i in range(count)})


def design_matrix(model: str, n: np.ndarray, flops: Callable[[int], float] | None = None) -> np.ndarray:
    n = np.asarray(n, dtype=np.float64)
    if model == "nlogn":
        return np.stack([n * np.log(np.maximum(n, 1.0)), np.ones_like(n)], axis=1)
    if model == "quadratic":
        return np.stack([n, n**2, np.ones_like(n)], axis=1)
    if model == "flops":
        if flops is None:
            raise ValueError("the flops model needs a FLOP-count function")
        return np.stack([np.array([flops(int(v)) for v in n]), np.ones_like(n)], axis=1)
    raise ValueError(f"unknown model {model!r}")


FORMULAS = {"nlogn": ("a·n·log n + b", ("a", "b")), "quadratic": ("a·n + b·n² + c", ("a", "b", "c")),
            "flops": ("a·FLOPs(n) + b", ("a", "b"))}


def fit_models(n: list[int], y: list[float], flops: Callable[[int], float] | None = None) -> list[ModelFit]:
    """Least-squares fits of the scaling models (those with fewer parameters than distinct n)."""
    n_arr = np.asarray(n, dtype=np.float64)
    y_arr = np.asarray(y, dtype=np.float64)
    distinct = len(set(n))
    fits = []
    for name in ("nlogn", "quadratic", "flops"):
        if name == "flops" and flops is None:
            continue
        formula, names = FORMULAS[name]
        if distinct < len(names):
            continue
        a = design_matrix(name, n_arr, flops)
        coef, *_ = np.linalg.lstsq(a, y_arr, rcond=None)
        pred = a @ coef
        resid = y_arr - pred
        sse = float(np.sum(resid**2))
        rmse = math.sqrt(sse / len(y_arr))
        if len(y_arr) > len(names):
            bic = len(y_arr) * math.log(max(sse / len(y_arr), 1e-300)) + len(names) * math.log(len(y_arr))
        else:  # as many points as parameters: an exact interpolation is no evidence for the model
            bic = math.inf
        fits.append(ModelFit(name, formula, dict(zip(names, coef.tolist())), pred.tolist(), resid.tolist(), rmse, bic))
    return fits


def best_fit(fits: list[ModelFit]) -> ModelFit | None:
    """Lowest BIC; None when no model has more points than parameters."""
    finite = [f for f in fits if math.isfinite(f.bic)]
    return min(finite, key=lambda f: f.bic) if finite else None


def predict(fit: ModelFit, n: int, flops: Callable[[int], float] | None = None) -> float:
    row = design_matrix(fit.name, np.array([n]), flops)[0]
    return float(row @ np.array(list(fit.coefficients.values())))


def estimate_remaining(done: list[tuple[int, float]], todo: list[int],
                       flops: Callable[[int], float] | None = None) -> float | None:
    """Seconds left for the ``todo`` view counts from a fit to the finished (n, seconds) points."""
    if not done or not todo:
        return None
    n, y = zip(*done)
    fits = fit_models(list(n), list(y), flops)
    fit = best_fit(fits)
    if fit is None:  # one distinct n so far: assume time proportional to n
        per_view = float(np.mean([s / v for v, s in done]))
        return per_view * sum(todo)
    return float(sum(max(predict(fit, v, flops), 0.0) for v in todo))


def multi_view_methods() -> list[str]:
    """Registered discriminative methods that take more than one view (registry order; imports
    their modules)."""
    from core.models import registry

    return [name for name in registry.names("discriminative")
            if registry.get(name).max_views is None or registry.get(name).max_views > 1]


def flops_model(method_name: str, options, scene) -> Callable[[int], float] | None:
    """``n -> FLOPs`` of one forward of ``method_name`` with ``options`` on ``n`` pictures the
    size of ``scene``'s first image (see :meth:`core.models.registry.Method.flops`); None when
    the method has no FLOP model."""
    from core.models import registry

    method = registry.get(method_name)
    height, width = scene.images[0].shape[:2]
    if method.flops(options, 1, height, width) is None:
        return None
    return lambda n: float(method.flops(options, int(n), height, width))


def check_study(scene, methods: dict, view_counts: list[int]) -> tuple[dict, list[int]]:
    """Validated ``({method: options}, view counts)`` before anything runs: each method is a
    multi-view method, its options parse (:mod:`core.options`, a dict or an instance), it can run
    here, and every view count is one it accepts (counts outside 1..scene.num_views are dropped).
    Raises :class:`core.errors.UserError` naming the method and what is wrong."""
    from core.errors import OptionError, UserError
    from core.models import registry

    if not methods:
        raise UserError("choose at least one method")
    known = multi_view_methods()
    counts = sorted({int(c) for c in view_counts if 1 <= int(c) <= scene.num_views})
    if not counts:
        raise UserError(f"no view count within 1..{scene.num_views}")
    parsed = {}
    for name, options in methods.items():
        if name not in known:
            raise UserError(f"{name!r} is not a multi-view method; choose from {', '.join(known)}")
        method = registry.get(name)
        try:
            parsed[name] = method.parse_options(options)
        except OptionError as error:
            raise OptionError(f"{name}: {error}") from None
        ready = method.availability(parsed[name])
        if not ready.ok:
            raise registry.CannotRun(f"{method.label} cannot run: {ready.message()}")
        bad = [c for c in counts if c < method.min_views or (method.max_views is not None and c > method.max_views)]
        if bad:
            high = method.max_views if method.max_views is not None else "any"
            raise UserError(f"{method.label} takes {method.min_views}..{high} views; drop the view count(s) {bad}")
    return parsed, counts


def run_studies(scene, methods: dict, view_counts: list[int], repeats: int, progress, store=None, seed: int = 0,
                on_point: Callable[[ScalingPoint], None] | None = None) -> dict[str, ScalingResult]:
    """The study of several methods measured back to back: ``{method: ScalingResult}``.

    Args:
        methods: ``{registered method name: its options}`` (instance or dict; validated by
            :func:`check_study` before anything runs).
        view_counts: the n to measure; repeats: subsets per n (see :func:`study_views`).
        on_point: sees each point as it finishes (``point.method`` names its method).

    Runs go in the order n, subset, method (every method at n before any at the next n). A
    method's quality is unavailable when it ran on random weights (its typed weights kind says
    so; such runs are then not scored at all, which keeps a timing study fast) or the scene has
    no ground truth; its points then carry no scores. ``core.progress.Stopped`` ends the study
    early with ``stopped=True`` on every result and the finished points kept.
    """
    from core.progress import Stopped
    from core.runner import is_random, run_method

    parsed, counts = check_study(scene, methods, view_counts)
    repeats = max(1, int(repeats))
    flops = {name: flops_model(name, options, scene) for name, options in parsed.items()}
    jobs = [(n, r, name) for n in counts for r in range(repeats) for name in parsed]
    prior = study_estimates(scene, parsed, counts, store)
    results = {name: ScalingResult(method=name) for name in parsed}
    done: dict[str, list[tuple[int, float]]] = {name: [] for name in parsed}
    stopped = False
    for index, (n, r, name) in enumerate(jobs):
        left = _remaining(done, jobs[index:], flops, prior)
        eta = f", about {left:.0f} s left" if left is not None else ""
        views = study_views(scene.num_views, n, r, seed)
        result = results[name]
        started = time.perf_counter()
        try:
            progress(index / len(jobs), f"{name}: {n} views, subset {r + 1}/{repeats}{eta}")
            run = run_method(scene, name, views, parsed[name], progress.sub(index / len(jobs),
                             (index + 1) / len(jobs)), store, score_random_weights=False)
        except Stopped:
            stopped = True
            break
        recon = run.recon
        if is_random(recon):
            result.quality_available = False
            result.quality_note = "random weights: timing only, quality not measured"
        elif not scene.has_ground_truth:
            result.quality_available = False
            result.quality_note = "the scene has no ground truth"
        scores = run.evaluation if result.quality_available and run.evaluation and "error" not in run.evaluation \
            else None
        point = ScalingPoint(n, r, views, float(recon.seconds), recon.peak_memory_bytes / 2**20, run.key,
                             run.cached, scores, name)
        result.points.append(point)
        # The ETA learns from wall time (model loading and storing included); a cached run
        # took no time now, so its recorded time stands for what a fresh one would take.
        done[name].append((n, point.seconds if run.cached else time.perf_counter() - started))
        if on_point is not None:
            on_point(point)
    for result in results.values():
        result.stopped = stopped
    if not stopped:
        progress(1.0, "study complete")
    return results


def study_estimates(scene, methods: dict, counts: list[int], store=None) -> dict[tuple[str, int], float | None]:
    """``{(method, n): estimated seconds of one run}`` from the cost model
    (:func:`core.studies.cost.estimate`); None where it has no estimate."""
    from core.studies import cost

    out = {}
    for name, options in methods.items():
        for n in counts:
            try:
                out[(name, n)] = cost.estimate(name, options, n, scene, store).seconds
            except Exception:  # noqa: BLE001 -- an ETA must never stop the study
                out[(name, n)] = None
    return out


def _remaining(done: dict[str, list[tuple[int, float]]], jobs: list[tuple[int, int, str]],
               flops: dict[str, Callable[[int], float] | None],
               prior: dict[tuple[str, int], float | None] | None = None) -> float | None:
    """Seconds left for ``jobs`` (n, subset, method): each method's fit to its finished points
    (wall time), or the cost model's estimates (``prior``) before its first point, summed; None
    when a method has neither."""
    total = 0.0
    for name, points in done.items():
        todo = [n for n, _, m in jobs if m == name]
        if not todo:
            continue
        left = estimate_remaining(points, todo, flops.get(name))
        if left is None and prior is not None and all(prior.get((name, n)) is not None for n in todo):
            left = sum(prior[(name, n)] for n in todo)
        if left is None:
            return None
        total += left
    return total


def run_study(scene, method_name: str, view_counts: list[int], repeats: int, options, progress,
              store=None, seed: int = 0, on_point: Callable[[ScalingPoint], None] | None = None) -> ScalingResult:
    """:func:`run_studies` of one method."""
    return run_studies(scene, {method_name: options}, view_counts, repeats, progress, store, seed,
                       on_point)[method_name]


def planned_runs(scene, parsed: dict, counts: list[int], repeats: int, seed: int = 0) -> list[tuple[str, list[int], str]]:
    """``(method, view ids, run key)`` of every run of the study, in the order
    :func:`run_studies` makes them (``parsed``/``counts``: as :func:`check_study` returns)."""
    from core.models import registry
    from core.runner import key_for

    out = []
    for n in counts:
        for r in range(max(1, int(repeats))):
            views = study_views(scene.num_views, n, r, seed)
            for name, options in parsed.items():
                out.append((name, views, key_for(scene, registry.get(name), views, options)))
    return out


def results_to_json(results: dict[str, ScalingResult]) -> dict:
    """``{method: ScalingResult}`` as JSON-able dicts (a job's result); :func:`results_from_json`
    reads them back."""
    from dataclasses import asdict

    return {name: asdict(result) for name, result in results.items()}


def results_from_json(data: dict) -> dict[str, ScalingResult]:
    """The inverse of :func:`results_to_json`."""
    out = {}
    for name, result in data.items():
        points = [ScalingPoint(**point) for point in result["points"]]
        out[name] = ScalingResult(**{**result, "points": points})
    return out


QUANTITIES = {"seconds": "Time (s)", "peak_memory_mb": "Peak memory (MB)"}


@dataclass
class Curve:
    """One method's measured quantity against n, its fits and its best fit over ``1..max(n)``.

    ``views``/``values``: ``[P]`` per point (``quantity`` in the unit of ``QUANTITIES``);
    ``fits``: :func:`fit_models`; ``best``: :func:`best_fit` (None: undecided); ``grid``:
    ``1..max(views)``; ``fitted``: the best fit at each grid n (None when undecided).
    """

    method: str
    quantity: str
    views: list[int]
    values: list[float]
    fits: list[ModelFit]
    best: ModelFit | None
    grid: list[int]
    fitted: list[float] | None


def curves(result: ScalingResult, flops: Callable[[int], float] | None = None) -> dict[str, Curve]:
    """``{quantity: Curve}`` for time (``seconds``) and peak memory (``peak_memory_mb``) of
    ``result``'s points, fitted with ``flops`` (the method's :func:`flops_model`) when given."""
    n = [p.views for p in result.points]
    grid = list(range(1, max(n) + 1)) if n else []
    out = {}
    for quantity in QUANTITIES:
        values = [float(getattr(p, quantity)) for p in result.points]
        fits = fit_models(n, values, flops) if n else []
        best = best_fit(fits)
        fitted = [predict(best, g, flops) for g in grid] if best is not None else None
        out[quantity] = Curve(result.method, quantity, n, values, fits, best, grid, fitted)
    return out


# The score columns of summary_table, in order: column name -> its value in a scored run's Scores.
QUALITY_COLUMNS = {"chamfer": lambda s: s.chamfer, "emd": lambda s: s.emd, "fscore@0.01": lambda s: s.fscore_at(0.01)}


def summary_table(result: ScalingResult) -> list[dict]:
    """One row per view count: mean and spread (population std) of time (s), peak memory (MB) and,
    when quality is available, of Chamfer, EMD and F-score at tau = 0.01 (normalised units) over
    the subsets whose run was scored."""
    from core.eval.scores import Scores

    rows = []
    for n in sorted({p.views for p in result.points}):
        pts = [p for p in result.points if p.views == n]
        row = {"views": n, "subsets": len(pts),
               "seconds": float(np.mean([p.seconds for p in pts])),
               "seconds_std": float(np.std([p.seconds for p in pts])),
               "peak_memory_mb": float(np.mean([p.peak_memory_mb for p in pts]))}
        if result.quality_available:
            scored = [s for s in (Scores.from_json(p.scores) for p in pts if p.scores) if s.scored]
            for key, getter in QUALITY_COLUMNS.items():
                values = [v for v in map(getter, scored) if v is not None]
                if values:
                    row[key] = float(np.mean(values))
                    row[f"{key}_std"] = float(np.std(values))
        rows.append(row)
    return rows


def cli_options(method_names: list[str], assignments: list[str] | None, args=None) -> dict:
    """``{method: options}`` from ``--option [METHOD.]key=value`` strings (a prefixed value wins
    over an unprefixed one) and, for a single method, its per-option flags in ``args``; each
    validated by :mod:`core.options` (an error names the method)."""
    import argparse

    from core.cli import CliError
    from core.errors import OptionError
    from core.models import registry
    from core.options import from_namespace

    shared, own = [], {name: [] for name in method_names}
    for text in assignments or []:
        key, sep, value = text.partition("=")
        prefix, dot, option_name = key.partition(".")
        if not sep or not dot:
            shared.append(text)
        elif prefix.strip() in own:
            own[prefix.strip()].append(f"{option_name}={value}")
        else:
            raise CliError(f"option {text!r} names {prefix.strip()!r}, which is not a chosen --method "
                           f"({', '.join(method_names)})")
    out = {}
    for name in method_names:
        method = registry.get(name)
        flags = args if args is not None and len(method_names) == 1 else argparse.Namespace()
        try:
            options = from_namespace(method.options_type, flags, shared + own[name])
            method.check_options(options)
        except OptionError as error:
            raise OptionError(f"{name}: {error}") from None
        out[name] = options
    return out
