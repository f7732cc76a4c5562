"""The view-count scaling study: time, memory and quality of a method against the number of views.

For each view count n and each repeat r, views are spaced evenly around the orbit with a seeded
random offset (repeat 0 starts at view 0); every (n, r) run goes through the run cache, so a
stopped study keeps what is done and a rerun only computes what is missing.

Time and memory are fitted with three models (least squares):
- ``nlogn``: a·n·log n + b (the seed study's claim),
- ``quadratic``: a·n + b·n² + c (frame attention and heads are linear in n, global attention is
  quadratic in the number of tokens, hence in n),
- ``flops``: a·F(n) + b with F the analytic FLOP count of the architecture (when the method
  offers one).
The best model is the one with the lowest BIC (residual error penalised by parameter count).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_VIEW_COUNTS = (1, 3, 5, 8, 10, 15, 20)


@dataclass
class ScalingPoint:
    views: int
    repeat: int
    view_ids: list[int]
    seconds: float
    peak_memory_mb: float
    key: str
    cached: bool
    scores: dict | None = None


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


def run_study(scene, method_name: str, view_counts: list[int], repeats: int, options, progress,
              store=None, seed: int = 0, on_point: Callable[[ScalingPoint], None] | None = None,
              flops: Callable[[int], float] | None = None) -> ScalingResult:
    """Run (or read from the cache) every (n, repeat) point; ``on_point`` sees each as it finishes.

    Quality is unavailable when the method ran on random weights (its typed weights kind says
    so; such runs are then not scored at all, which keeps a timing study fast) or the scene has
    no ground truth; points then carry no scores. ``core.progress.Stopped`` ends the study
    early with ``stopped=True`` and the finished points kept.
    """
    from core.errors import UserError
    from core.progress import Stopped
    from core.runner import is_random, run_method

    counts = [int(c) for c in view_counts if 1 <= int(c) <= scene.num_views]
    if not counts:
        raise UserError(f"no view count within 1..{scene.num_views}")
    jobs = [(n, r) for n in counts for r in range(max(1, repeats))]
    result = ScalingResult(method=method_name)
    done: list[tuple[int, float]] = []
    for index, (n, r) in enumerate(jobs):
        left = estimate_remaining(done, [m for m, _ in jobs[index:]], flops)
        eta = f", about {left:.0f} s left" if left is not None else ""
        views = study_views(scene.num_views, n, r, seed)
        try:
            progress(index / len(jobs), f"{n} views, subset {r + 1}/{max(1, repeats)}{eta}")
            run = run_method(scene, method_name, views, options, progress.sub(index / len(jobs),
                             (index + 1) / len(jobs)), store, score_random_weights=False)
        except Stopped:
            result.stopped = True
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
                             run.cached, scores)
        result.points.append(point)
        done.append((n, point.seconds))
        if on_point is not None:
            on_point(point)
    if not result.stopped:
        progress(1.0, "study complete")
    return result


def vggt_flops_model(scene, options) -> Callable[[int], float]:
    """``n -> FLOPs`` of one VGGT forward on ``n`` views of ``scene`` with ``options`` (VGGTOptions):
    the configuration that will run (tiny for random-tiny, VGGT-1B otherwise), the heads the
    branch needs, at the network size of the scene's first image."""
    from core.models.vggt import VGGTConfig, vggt_flops
    from core.models.vggt.processing import preprocess_images

    config = VGGTConfig.tiny() if options.weights == "random-tiny" else VGGTConfig()
    h, w = preprocess_images([scene.images[0]], options.preprocess)[1][0].network_hw
    heads = ("camera", "depth") + (("point",) if options.branch == "point map" else ())
    return lambda n: vggt_flops(n, h, w, config, heads=heads)["total"]


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


def register(subparsers) -> None:
    """``python -m core scaling``: the study from the command line, one JSON line per point, then the fits."""
    parser = subparsers.add_parser("scaling", help="VGGT time/memory/quality against the number of views")
    parser.add_argument("--scene", required=True)
    parser.add_argument("--views", type=int, nargs="+", default=list(DEFAULT_VIEW_COUNTS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--option", action="append", metavar="KEY=VALUE",
                        help="VGGT option, e.g. weights=random-tiny (or weights=random-full: VGGT-1B's "
                             "real cost, timing only); every VGGT option also has its flag below")
    from core.cli import add_option_flags_lazily

    def vggt_options() -> type:
        from core.models.vggt.method import VGGTOptions

        return VGGTOptions

    add_option_flags_lazily(parser, vggt_options, "VGGT options (also as --option key=value)")
    parser.set_defaults(func=_cli)


def _cli(args) -> int:
    import json
    from dataclasses import asdict

    from core.cli import CliError, load_scene
    from core.models import registry
    from core.options import from_namespace
    from core.progress import to_stderr
    from core.store.cache import RunStore

    scene = load_scene(args.scene)
    method = registry.get("vggt")
    options = from_namespace(method.options_type, args, args.option)
    ready = method.availability(options)
    if not ready.ok:
        raise CliError(f"VGGT cannot run: {ready.message()} (or pass --option weights=random-full, or "
                       "random-tiny, for timing only)")
    flops = vggt_flops_model(scene, options)
    store = RunStore(args.cache) if args.cache else RunStore()

    def emit(point: ScalingPoint) -> None:
        print(json.dumps({"kind": "point", **asdict(point)}, default=str), flush=True)

    result = run_study(scene, "vggt", args.views, args.repeats, options, to_stderr(), store, args.seed, emit, flops)
    n = [p.views for p in result.points]
    for quantity, values in (("seconds", [p.seconds for p in result.points]),
                             ("peak_memory_mb", [p.peak_memory_mb for p in result.points])):
        fits = fit_models(n, values, flops)
        best = best_fit(fits)
        for fit in fits:
            print(json.dumps({"kind": "fit", "quantity": quantity, "model": fit.formula,
                              "coefficients": fit.coefficients, "rmse": fit.rmse, "bic": fit.bic,
                              "residuals": fit.residuals, "best": fit is best}), flush=True)
    print(json.dumps({"kind": "summary", "quality_available": result.quality_available,
                      "quality_note": result.quality_note, "rows": summary_table(result)}), flush=True)
    return 0
