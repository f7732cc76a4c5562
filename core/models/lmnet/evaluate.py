"""Test-split evaluation with 3D-LMNet's protocol, and the "mean training shape" baseline.

Protocol (3D-LMNet, Mandikal et al. 2018, as reproduced here): the prediction and the ground
truth are each translated to their bounding-box centre and scaled so that the longest side of
their bounding box is 1 (unit box), subsampled to 1,024 points (seeded), the prediction is
aligned to the ground truth by point-to-point ICP (rigid, no scale; open3d through
:func:`core.eval.metrics.icp`), then scored:

- Chamfer: mean nearest L2 distance pred->gt plus gt->pred (:func:`core.eval.metrics.chamfer_distance`);
- EMD: exact optimal transport, mean matched distance (:func:`core.eval.metrics.earth_movers_distance`);
- F-score at ``tau`` (fraction of points within ``tau`` both ways, harmonic mean).

All distances are in unit-box units (the object's longest side = 1).

Baseline: the "mean training shape" is the training shape with the lowest mean Chamfer distance
to all other training shapes (a medoid, i.e. the Fréchet mean restricted to the training set),
predicted for every test image.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.eval import metrics

from . import data as lm_data
from .modeling import LMNet

log = logging.getLogger(__name__)

ICP_DISTANCES = (0.1, 0.05, 0.02)


@dataclass
class EvalOptions:
    points: int = 1024
    views: tuple = (3, 15)
    seed: int = 0
    tau: float = 0.02
    icp: bool = True
    max_shapes: int = 0          # 0 = the whole split


def to_unit_box(points: np.ndarray) -> np.ndarray:
    """``[N,3]`` translated to the bounding-box centre and scaled so the longest side is 1."""
    points = np.asarray(points, dtype=np.float64)
    lo, hi = points.min(0), points.max(0)
    extent = float((hi - lo).max())
    if extent <= 0:
        raise metrics.EvaluationError("a point cloud has zero extent")
    return (points - (lo + hi) / 2) / extent


def score_pair(pred: np.ndarray, gt: np.ndarray, options: EvalOptions, seed: int) -> dict:
    """Chamfer, EMD and F-score of one prediction against one ground truth (the protocol above)."""
    p = metrics.subsample(to_unit_box(pred), options.points, seed)
    g = metrics.subsample(to_unit_box(gt), options.points, seed + 1)
    if options.icp:
        transform, _, _ = metrics.icp(p, g, np.eye(4), ICP_DISTANCES, with_scale=False)
        p = p @ transform[:3, :3].T + transform[:3, 3]
    d_pg = metrics.nearest_distances(p, g)
    d_gp = metrics.nearest_distances(g, p)
    _, _, fscore = metrics.precision_recall_fscore(d_pg, d_gp, options.tau)
    return {"chamfer": float(d_pg.mean() + d_gp.mean()), "emd": metrics.earth_movers_distance(p, g),
            "fscore": fscore}


def mean_training_shape(data_root: Path | str, points: int = 512, seed: int = 0) -> tuple[np.ndarray, str]:
    """The medoid training cloud under Chamfer (unit box): ``(points [P,3] float32, "<synset>/<model>")``.

    Pairwise Chamfer distances between seeded ``points``-subsamples of every training cloud.
    The choice is cached in ``DATA/mean_shape.json`` (it takes minutes on a busy CPU).
    """
    entries = lm_data.list_models(data_root, "train")
    cache = Path(data_root) / "mean_shape.json"
    if cache.is_file():
        stored = json.loads(cache.read_text())
        match = [e for e in entries if e.key == stored.get("key")]
        if match and stored.get("points") == points and stored.get("seed") == seed \
                and stored.get("train_shapes") == len(entries):
            return match[0].points(), match[0].key
    clouds = torch.from_numpy(np.stack([metrics.subsample(to_unit_box(e.points()), points, seed)
                                        for e in entries]))
    n = len(clouds)
    cost = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        d = torch.cdist(clouds[i].expand(n, -1, -1), clouds)          # [n,P,P]
        cost[i] = d.min(2).values.mean(1) + d.min(1).values.mean(1)
    best = int(cost.mean(1).argmin())
    try:
        cache.write_text(json.dumps({"key": entries[best].key, "points": points, "seed": seed,
                                     "train_shapes": len(entries)}))
    except OSError:
        log.warning("could not cache the mean shape in %s", cache)
    return entries[best].points(), entries[best].key


def _summarise(rows: list[dict], key: str) -> dict:
    out = {}
    for name in ("chamfer", "emd", "fscore"):
        out[name] = float(np.mean([r[key][name] for r in rows]))
    return out


def evaluate(models: dict[str, LMNet], data_root: Path | str, split: str = "test",
             options: EvalOptions | None = None, baseline: bool = True, progress=None) -> dict:
    """Score each named model (and the mean-shape baseline) on ``split``.

    Returns ``{"overall": {name: {chamfer, emd, fscore}}, "per_category": {synset: {...}},
    "count": images scored, "protocol": {...}, "mean_shape": key}``.
    """
    from .train import _images

    options = options or EvalOptions()
    entries = lm_data.list_models(data_root, split)
    if options.max_shapes:
        entries = entries[: options.max_shapes]
    names = list(models)
    mean_shape = key = None
    if baseline:
        mean_shape, key = mean_training_shape(data_root, seed=options.seed)
        names.append("mean shape")
    rows = []
    for number, entry in enumerate(entries):
        gt = entry.points()
        missing = [entry.rendering(v) for v in options.views if not entry.rendering(v).is_file()]
        if missing:
            raise lm_data.DataError(f"shape {entry.key}: missing rendering {missing[0]}")
        images = np.stack([lm_data.load_rendering(entry.rendering(v)) for v in options.views])
        preds = {}
        for name, model in models.items():
            model.eval()
            with torch.no_grad():
                preds[name] = model(_images(images, model.config, None, 0)).numpy()
        for k, view in enumerate(options.views):
            seed = options.seed + 1000 * number + view
            row = {"shape": entry.key, "synset": entry.synset, "view": view}
            for name in models:
                row[name] = score_pair(preds[name][k], gt, options, seed)
            if baseline:
                row["mean shape"] = score_pair(mean_shape, gt, options, seed)
            rows.append(row)
        if progress is not None:
            progress((number + 1) / len(entries), f"scored {entry.key}")
    per_category = {}
    for synset in sorted({r["synset"] for r in rows}):
        sel = [r for r in rows if r["synset"] == synset]
        per_category[synset] = {name: _summarise(sel, name) for name in names}
    return {"overall": {name: _summarise(rows, name) for name in names}, "per_category": per_category,
            "count": len(rows), "shapes": len(entries), "mean_shape": key,
            "protocol": {"points": options.points, "views": list(options.views), "icp": options.icp,
                         "icp_distances": list(ICP_DISTANCES), "tau": options.tau, "seed": options.seed,
                         "units": "unit box (longest bounding-box side = 1)", "split": split}}


def results_table(result: dict) -> str:
    """A Markdown table of ``result["overall"]``."""
    lines = [f"| model | Chamfer | EMD | F-score@{result['protocol']['tau']:g} |", "|---|---|---|---|"]
    for name, s in result["overall"].items():
        lines.append(f"| {name} | {s['chamfer']:.4f} | {s['emd']:.4f} | {s['fscore']:.3f} |")
    return "\n".join(lines)


def save_result(result: dict, path: Path | str) -> None:
    Path(path).write_text(json.dumps(result, indent=1))
