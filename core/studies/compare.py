"""Comparing stored runs of one scene: what the Compare page and the leaderboard compute.

No Streamlit here. A stored run (:class:`core.store.cache.RunRecord`) becomes a
:class:`ComparedRun` with a readable label (method label, the options that tell its runs apart,
the weights kind; an imported run's file name: :func:`core.models.registry.run_label`), its
scores read through :class:`core.eval.scores.Scores`, and its cost (seconds, MB). On a list of them:

- :func:`filter_runs` by method, weights kind and view count (random weights out by default);
- :func:`refs_text` / :func:`parse_refs` / :func:`resolve_refs`: the URL form of a selection;
- :func:`error_cloud` and :func:`shared_scale`: each run's aligned points (normalised frame: the
  ground truth in the unit sphere) with their distance to the ground truth, and one colour range
  for all of them;
- :func:`depth_error_maps`: per-pixel relative depth error of a run's depth maps;
- :func:`pareto_front`: the runs no other run beats on both cost and quality;
- :func:`views_series`: quality against the number of views, per method label.

Every score is described once in :data:`SCORES` (title, unit, better direction).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from core import geometry
from core.eval.scores import Scores, ScoresFormatError, threshold_key
from core.models import registry
from core.options import RANDOM_WEIGHTS
from core.store.cache import RunRecord, RunStore

TAU = 0.01  # the F-score threshold shown (normalised units), as in the leaderboard
NO_VALUE = "—"


@dataclass(frozen=True)
class ScoreSpec:
    """One comparable number of a run: ``key`` (as in :meth:`ComparedRun.value`), display title,
    unit, whether lower is better, and a one-line help."""

    key: str
    title: str
    unit: str
    lower_is_better: bool
    help: str

    @property
    def arrow(self) -> str:
        return "↓" if self.lower_is_better else "↑"

    @property
    def direction(self) -> str:
        """``"↓ lower is better"`` or ``"↑ higher is better"``."""
        return f"{self.arrow} {'lower' if self.lower_is_better else 'higher'} is better"


SCORES: tuple[ScoreSpec, ...] = (
    ScoreSpec("chamfer", "Chamfer", "normalised units", True,
              "accuracy + completeness: mean nearest-point distance both ways (ground truth in the unit sphere)"),
    ScoreSpec("emd", "EMD", "normalised units", True, "earth mover's distance: exact optimal transport, mean distance"),
    ScoreSpec("accuracy", "Accuracy", "normalised units", True, "mean distance from the prediction to the ground truth"),
    ScoreSpec("completeness", "Completeness", "normalised units", True,
              "mean distance from the ground truth to the prediction"),
    ScoreSpec("fscore", f"F-score @ {threshold_key(TAU)}", "fraction", False,
              f"harmonic mean of precision and recall at distance {threshold_key(TAU)}"),
    ScoreSpec("auc30", "Pose AUC@30", "fraction", False,
              "area under the relative-pose accuracy curve up to 30° (runs with cameras)"),
    ScoreSpec("abs_rel", "Depth AbsRel", "fraction", True,
              "mean |d − d*| / d* over object pixels after per-view median scaling (runs with depth maps)"),
    ScoreSpec("delta1", "Depth δ<1.25", "fraction", False,
              "share of object pixels whose depth ratio to the truth is below 1.25 (runs with depth maps)"),
)
COSTS: tuple[ScoreSpec, ...] = (
    ScoreSpec("seconds", "Time", "s", True, "wall time of the method's run (model loading excluded)"),
    ScoreSpec("peak_memory_mb", "Peak memory", "MB", True, "peak memory of the run (RSS on CPU, allocator peak on CUDA)"),
)
SPECS = {spec.key: spec for spec in SCORES + COSTS}


def family_of(method: str) -> str | None:
    return registry.get(method).family if method in registry.METHOD_MODULES else None


@dataclass(frozen=True)
class ComparedRun:
    """One stored run of a scene as the comparison sees it.

    Attributes:
        record: the stored run; method / key: its method name and store key.
        label: :func:`core.models.registry.run_label`; views: number of input views (0 for an
            imported file without views).
        weights_kind: ``pretrained`` | ``random-tiny`` | ``random-full`` | ``trained-here`` | None.
        seconds: wall time (s); peak_memory_mb: peak memory (MB, 2**20 bytes); parameters_m:
            parameters (millions); None when not recorded, not positive, or the run is an imported
            file (reading a file is no method's cost).
        scores: the run's :class:`Scores` (None when never scored or unreadable; ``scores.scored``
            False when the protocol refused it).
        problem: why the stored evaluation could not be read, or ''.
    """

    record: RunRecord
    method: str
    key: str
    label: str
    family: str | None
    views: int
    weights_kind: str | None
    seconds: float | None
    peak_memory_mb: float | None
    parameters_m: float | None
    scores: Scores | None
    problem: str = ""

    @property
    def random(self) -> bool:
        return self.weights_kind in RANDOM_WEIGHTS

    @property
    def ref(self) -> str:
        """``method/key``: how the run is named in a URL."""
        return f"{self.method}/{self.key}"

    @property
    def scored(self) -> bool:
        return self.scores is not None and self.scores.scored

    @property
    def file(self) -> str | None:
        """The imported file's name (imported runs only)."""
        return (self.record.meta.get("options") or {}).get("file") if self.method == "imported" else None

    def value(self, key: str) -> float | None:
        """The number ``key`` of :data:`SPECS` (None when the run lacks it)."""
        if key in ("seconds", "peak_memory_mb"):
            return getattr(self, key)
        if not self.scored:
            return None
        s = self.scores
        if key == "fscore":
            return s.fscore_at(TAU)
        if key == "auc30":
            return s.auc30
        if key in ("abs_rel", "delta1"):
            return getattr(s.depth, key) if s.depth is not None and s.depth.available else None
        return getattr(s, key)

    @property
    def views_text(self) -> str:
        return f"{self.views} view{'s' if self.views != 1 else ''}" if self.views else "no views"

    def short(self) -> str:
        """``label · N views · key[:6]`` (unique enough for a chart legend)."""
        return f"{self.label} · {self.views_text} · {self.key[:6]}"


def compare_run(record: RunRecord) -> ComparedRun:
    meta = record.meta
    scores, problem = None, ""
    if record.evaluation is not None:
        try:
            scores = Scores.from_json(record.evaluation)
        except ScoresFormatError as error:
            problem = f"unreadable evaluation: {error}"
    measured = record.method != "imported"  # an imported file's reading time is no method's cost
    memory = meta.get("peak_memory_bytes") if measured else None
    seconds = meta.get("seconds") if measured else None
    parameters = meta.get("parameter_count")
    return ComparedRun(
        record=record, method=record.method, key=record.key, label=registry.run_label(record.method, meta),
        family=family_of(record.method), views=len(meta.get("view_ids") or []),
        weights_kind=meta.get("weights_kind"), seconds=seconds if seconds and seconds > 0 else None,
        peak_memory_mb=memory / 2**20 if memory and memory > 0 else None,
        parameters_m=parameters / 1e6 if parameters else None, scores=scores, problem=problem)


def compared_runs(store: RunStore, scene) -> list[ComparedRun]:
    """The stored runs of ``scene`` (newest first), as :class:`ComparedRun`: every run stored under
    the name when ``scene`` is a name; for a :class:`core.data.scene.Scene`, those made against its
    ground truth and those of unknown ground truth (as :func:`core.runner.leaderboard`)."""
    if isinstance(scene, str):
        return [compare_run(record) for record in store.runs(scene)]
    from core.data.fingerprint import ground_truth_fingerprint

    return [compare_run(record) for record in store.runs(scene.name, ground_truth=ground_truth_fingerprint(scene))]


def filter_runs(runs: list[ComparedRun], methods: list[str] | None = None, weights: list[str | None] | None = None,
                views: list[int] | None = None, include_random: bool = False) -> list[ComparedRun]:
    """The runs whose method name is in ``methods``, weights kind in ``weights`` and view count in
    ``views`` (None: any); random-weight runs only when ``include_random``."""
    return [r for r in runs
            if (methods is None or r.method in methods) and (weights is None or r.weights_kind in weights)
            and (views is None or r.views in views) and (include_random or not r.random)]


# --------------------------------------------------------------------------- URL form
def refs_text(runs: list[ComparedRun]) -> str:
    """The selection as one query-parameter value: ``"colmap/b85a…,lmnet/0546…"``."""
    return ",".join(r.ref for r in runs)


def parse_refs(text: str | None) -> list[str]:
    """``method/key`` items of a query-parameter value, in order, without repeats or blanks."""
    out: list[str] = []
    for item in (text or "").split(","):
        item = item.strip()
        if item and item not in out:
            out.append(item)
    return out


def resolve_refs(refs: list[str], runs: list[ComparedRun]) -> tuple[list[ComparedRun], list[str]]:
    """``(runs named by refs, in that order; refs that name no run of the list)``."""
    by_ref = {r.ref: r for r in runs}
    return [by_ref[x] for x in refs if x in by_ref], [x for x in refs if x not in by_ref]


# --------------------------------------------------------------------------- errors in 3-D and depth
@dataclass(frozen=True)
class ErrorCloud:
    """A run's aligned points ``float32 [K,3]`` in the normalised ground-truth frame and their
    distance to the ground truth ``float32 [K]`` (normalised units); ``total`` = the run's finite
    points before subsampling and the crop."""

    points: np.ndarray
    errors: np.ndarray
    total: int


def error_cloud(scene, run: ComparedRun, max_points: int = 20_000, seed: int = 0) -> ErrorCloud | None:
    """The scored run's points aligned with its stored Sim(3) and cropped as when it was scored
    (:func:`core.eval.metrics.overlay_from_scores`), on a seeded subsample of ``max_points``
    finite points; None when the run is not scored."""
    from core.eval import metrics

    if not run.scored:
        return None
    recon = run.record.load()
    points = np.asarray(recon.points)
    finite = np.flatnonzero(np.isfinite(points).all(axis=1))
    keep = finite[metrics.subsample_indices(len(finite), max_points, seed)]
    light = replace(recon, points=points[keep], colors=None, confidence=None, source_view=None)
    overlay = metrics.overlay_from_scores(scene, light, run.record.evaluation)
    return ErrorCloud(overlay.aligned_points, overlay.point_errors, len(finite))


def normalised_ground_truth(scene, max_points: int = 15_000, seed: int = 1) -> np.ndarray:
    """``float32 [M,3]``: a seeded subsample of the scene's ground truth in the normalised frame."""
    from core.eval import metrics

    gt = scene.gt_points[metrics.subsample_indices(len(scene.gt_points), max_points, seed)]
    return geometry.transform_points(metrics.normalization_transform(scene.gt_points),
                                     gt.astype(np.float64)).astype(np.float32)


def shared_scale(values: list[np.ndarray], percentile: float = 95.0) -> float:
    """One colour range top for several runs' errors: the ``percentile`` of all of them pooled
    (each run weighted by its number of values); 1.0 when there is nothing finite and positive."""
    pooled = np.concatenate([np.asarray(v, np.float64).ravel() for v in values]) if values else np.zeros(0)
    pooled = pooled[np.isfinite(pooled)]
    top = float(np.percentile(pooled, percentile)) if len(pooled) else 0.0
    return top if top > 0 else 1.0


def depth_error_maps(scene, recon, max_views: int = 4) -> list[tuple[int, np.ndarray]]:
    """Per-pixel relative depth error of a run's first ``max_views`` depth maps.

    Like :func:`core.eval.metrics.depth_errors`: the ground truth is resized (nearest) to the
    prediction's ``(h, w)``, the prediction is median-scaled per view on the valid object
    pixels, and the error is ``|d − d*| / d*`` (a fraction). Pixels without ground truth, outside
    the object mask or with no valid prediction are NaN.

    Returns:
        ``[(scene view id, float32 [h,w])]``; empty when the run has no depth maps, the scene no
        depths, or the aspect ratios differ by more than 2 %.
    """
    import cv2

    if recon.depth_maps is None or scene.depths is None or not recon.view_ids:
        return []
    out = []
    for index, view in enumerate(recon.view_ids[:max_views]):
        if index >= len(recon.depth_maps) or not 0 <= view < scene.num_views:
            continue
        pred = np.asarray(recon.depth_maps[index], np.float64)
        h, w = pred.shape
        gh, gw = scene.depths.shape[1:]
        if abs(h / w - gh / gw) > 0.02 * gh / gw:
            return []
        gt = cv2.resize(scene.depths[view].astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
        valid = (gt > 0) & np.isfinite(pred) & (pred > 0)
        if scene.masks is not None:
            valid &= cv2.resize(scene.masks[view].astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        error = np.full((h, w), np.nan, np.float32)
        if valid.sum() >= 10:
            scale = np.median(gt[valid]) / np.median(pred[valid])
            error[valid] = np.abs(pred[valid] * scale - gt[valid]) / gt[valid]
        out.append((int(view), error))
    return out


# --------------------------------------------------------------------------- cost against quality
def pareto_front(costs: list[float], qualities: list[float], lower_quality_is_better: bool = True) -> list[int]:
    """Indices of the points no other point dominates (cost no higher and quality no worse, one
    of them strictly better), in increasing cost. Points with a missing (None/NaN) value are
    never on the front."""
    sign = 1.0 if lower_quality_is_better else -1.0
    usable = [i for i, (c, q) in enumerate(zip(costs, qualities))
              if c is not None and q is not None and math.isfinite(c) and math.isfinite(q)]
    front = []
    for i in usable:
        ci, qi = costs[i], sign * qualities[i]
        dominated = any(costs[j] <= ci and sign * qualities[j] <= qi and (costs[j] < ci or sign * qualities[j] < qi)
                        for j in usable if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (costs[i], sign * qualities[i]))


@dataclass(frozen=True)
class ViewsPoint:
    """Quality of one method label at one view count: mean and standard deviation over ``runs`` runs."""

    views: int
    mean: float
    std: float
    runs: int


def views_series(runs: list[ComparedRun], key: str = "chamfer") -> dict[str, list[ViewsPoint]]:
    """``{label: points in increasing view count}`` for every label whose scored runs cover at
    least two different view counts (the number ``key`` of :data:`SPECS`)."""
    grouped: dict[str, dict[int, list[float]]] = {}
    for run in runs:
        value = run.value(key)
        if value is None or not run.views:
            continue
        grouped.setdefault(run.label, {}).setdefault(run.views, []).append(float(value))
    return {label: [ViewsPoint(v, float(np.mean(x)), float(np.std(x)), len(x)) for v, x in sorted(by_views.items())]
            for label, by_views in grouped.items() if len(by_views) >= 2}


def scene_up(scene) -> np.ndarray:
    """Unit vector ``[3]``: the scene's up direction (world frame, also the normalised frame's,
    which only scales and shifts), the mean of the cameras' −y axes (OpenCV y points down)."""
    poses = np.asarray(scene.cam_from_world, np.float64)
    poses = poses[np.isfinite(poses).all(axis=(1, 2))]
    if not len(poses):
        return np.array([0.0, 0.0, 1.0])
    up = -poses[:, 1, :3].mean(axis=0)
    norm = np.linalg.norm(up)
    return up / norm if norm > 1e-9 else np.array([0.0, 0.0, 1.0])


# --------------------------------------------------------------------------- the leaderboard table
@dataclass(frozen=True)
class Column:
    """A leaderboard column: row ``key`` (of :func:`core.runner.leaderboard`), header ``title``,
    ``unit`` ('' when none), ``help`` and a printf ``format`` for numbers (None: text)."""

    key: str
    title: str
    unit: str
    help: str
    format: str | None = None


def leaderboard_columns(tau: float = TAU) -> tuple[Column, ...]:
    """The leaderboard's columns, in order, for F-score threshold ``tau``."""
    by_key = {s.key: s for s in SCORES}
    score = lambda key, fmt, row_key=None: Column(  # noqa: E731
        row_key or key, f"{by_key[key].title} {by_key[key].arrow}", by_key[key].unit,
        f"{by_key[key].help} ({by_key[key].unit}; {by_key[key].direction})", fmt)
    return (
        Column("label", "Run", "", "method · the options that tell its runs apart · weights kind "
               "(an imported run: its file)"),
        Column("views", "Views", "", "number of input views", "%d"),
        Column("view_ids", "Input views", "", "the scene views the run used"),
        score("chamfer", "%.4f"), score("emd", "%.4f"),
        Column(f"F@{threshold_key(tau)}", f"F-score @ {threshold_key(tau)} ↑", "fraction",
               f"harmonic mean of precision and recall at distance {threshold_key(tau)} (fraction; ↑ higher is "
               "better)", "%.3f"),
        score("accuracy", "%.4f"), score("completeness", "%.4f"), score("auc30", "%.3f"),
        Column("seconds", "Time", "s", COSTS[0].help + " (s)", "%.1f s"),
        Column("peak_memory_mb", "Peak memory", "MB", COSTS[1].help + " (MB)", "%.0f MB"),
        Column("parameters_m", "Parameters", "millions", "model parameters (millions)", "%.1f M"),
        Column("device", "Device", "", "where it ran"),
        Column("notes", "Notes", "", "caveats recorded with the run; why it was not scored"),
        Column("key", "Run key", "", "the run's key in the store (cache/runs/<scene>/<method>/<key>)"),
    )


def leaderboard_view(rows: list[dict], include_random: bool = False) -> list[dict]:
    """The rows to show: random-weight runs only when ``include_random``; scored runs by Chamfer
    (best first), then the unscored ones in store order (newest first)."""
    kept = [r for r in rows if include_random or r.get("weights") not in RANDOM_WEIGHTS]
    scored = sorted((r for r in kept if r.get("chamfer") is not None), key=lambda r: r["chamfer"])
    return scored + [r for r in kept if r.get("chamfer") is None]


def leaderboard_csv(rows: list[dict], tau: float = TAU) -> str:
    """The rows as CSV: one column per :func:`leaderboard_columns` entry, headers with units
    (``Time (s)``), numbers unformatted, missing values empty."""
    import csv
    import io

    columns = leaderboard_columns(tau)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([f"{c.title} ({c.unit})" if c.unit else c.title for c in columns])
    for row in rows:
        writer.writerow(["" if row.get(c.key) is None else row[c.key] for c in columns])
    return out.getvalue()
