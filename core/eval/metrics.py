"""The evaluation protocol (DESIGN.md "Evaluation"): crop, normalise, align, score.

Units: every distance is in the *normalised* frame, where the ground-truth object points are
translated and scaled to fit the unit sphere (bounding-box centre at the origin, farthest
point at radius 1). Angles are in degrees.

Protocol, for a Reconstruction against a Scene with ground-truth points:
1. drop non-finite points; optional confidence filter (drop the lowest percentile);
2. normalise the ground truth; coarse alignment of the prediction: Sim(3) Umeyama on camera
   centres when both sides have cameras (the first camera's pose for 1-2 views), and a
   global search (centroid + RMS scale + 28 candidate rotations, each refined by coarse ICP)
   that survives arbitrary rotation and scale; the better of the two by trimmed Chamfer;
3. crop to the ground-truth bounding box grown by ``crop_margin`` (after the coarse alignment,
   since the prediction lives in its own frame), then multi-scale ICP with scale (open3d),
   redone rigidly when it would change the coarse scale by more than ``MAX_ICP_SCALE_CHANGE``;
4. scores on seeded random subsamples: Chamfer (mean nearest distance prediction -> ground
   truth plus ground truth -> prediction, each query set subsampled, searched against the
   other full cloud), exact EMD (POT, uniform weights, ``emd_points`` per side), precision /
   recall / F-score at each tau, camera errors (RRA/RTA/AUC@30 over all view pairs) and depth
   errors (AbsRel, delta < 1.25 after per-view median scaling) where available.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

from core import geometry
from core.data.scene import Reconstruction, Scene
from core.eval.scores import Scores, threshold_key
from core.errors import UserError
from core.options import option

log = logging.getLogger(__name__)

METRICS_VERSION = "2"
AlignmentMode = Literal["auto", "cameras", "global", "none"]
MAX_ICP_SCALE_CHANGE = 1.5  # ICP may change the coarse alignment's scale by at most this factor


class EvaluationError(UserError):
    """The reconstruction cannot be scored (too few points, NaNs only, no ground truth...)."""


@dataclass
class EvaluationOptions:
    """Options of :func:`evaluate` (defaults = the protocol ReconBench reports)."""

    sample_points: int = option(10_000, "query points per direction for Chamfer / F-score",
                                min=1, max=1_000_000, step=1_000)
    emd_points: int = option(2_048, "points per side for exact EMD (cost grows ~n^3)",
                             min=16, max=8_192, step=256)
    taus: tuple[float, ...] = option((0.005, 0.01, 0.02, 0.05), "F-score thresholds (normalised units)",
                                     min=1e-6, max=10.0, advanced=True)
    seed: int = option(0, "seed of the subsamples", min=0, advanced=True)
    crop_margin: float = option(0.10, "crop to the ground truth's box grown by this fraction",
                                min=0.0, max=10.0, step=0.05, advanced=True)
    confidence_percentile: float = option(0.0, "drop this percentage of the least confident points",
                                          min=0.0, max=100.0, step=5.0)
    alignment: AlignmentMode = option("auto", "auto: cameras when both sides have them, else a global "
                                          "search; none: score in the given frame", advanced=True)
    icp: bool = option(True, "refine the alignment with multi-scale ICP", advanced=True)
    icp_distances: tuple[float, ...] = option((0.2, 0.1, 0.05, 0.025), "ICP correspondence "
                                              "distances, coarse to fine (normalised units)",
                                              min=1e-6, max=10.0, advanced=True)
    min_points: int = option(10, "refuse to score fewer points than this", min=1, advanced=True)


# --------------------------------------------------------------------------- plain scores
def _as_points(points: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise EvaluationError(f"{name} must be an Nx3 array, got shape {list(points.shape)}")
    if len(points) == 0:
        raise EvaluationError(f"{name} is empty")
    if not np.isfinite(points).all():
        raise EvaluationError(f"{name} contains NaN or infinite coordinates")
    return points


def nearest_distances(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """``[N]`` Euclidean distance from each of ``queries [N,3]`` to its nearest of ``references [M,3]``."""
    distances, _ = cKDTree(references).query(queries, k=1, workers=-1)
    return distances


def chamfer_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Chamfer distance: mean nearest L2 distance P->Q plus mean Q->P (no alignment or subsampling)."""
    p = _as_points(p, "P")
    q = _as_points(q, "Q")
    return float(nearest_distances(p, q).mean() + nearest_distances(q, p).mean())


def earth_movers_distance(p: np.ndarray, q: np.ndarray, max_points: int | None = None, seed: int = 0
                          ) -> float:
    """Exact EMD: mean Euclidean distance under the optimal transport with uniform weights (POT).

    Args:
        p, q: ``[N,3]`` and ``[M,3]``; sizes may differ (mass 1/N and 1/M per point).
        max_points: when given, each side is first subsampled (seeded) to at most this many points.
    """
    import ot

    p = _as_points(p, "P")
    q = _as_points(q, "Q")
    if max_points is not None:
        p = subsample(p, max_points, seed)
        q = subsample(q, max_points, seed)
    cost = ot.dist(p, q, metric="euclidean")
    a = np.full(len(p), 1.0 / len(p))
    b = np.full(len(q), 1.0 / len(q))
    return float(ot.emd2(a, b, cost, numItermax=10_000_000))


def subsample(points: np.ndarray, count: int, seed: int) -> np.ndarray:
    """At most ``count`` rows of ``points``, chosen without replacement by a seeded generator."""
    return points[subsample_indices(len(points), count, seed)]


def subsample_indices(total: int, count: int, seed: int) -> np.ndarray:
    if total <= count:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))


def precision_recall_fscore(pred_to_gt: np.ndarray, gt_to_pred: np.ndarray, tau: float
                            ) -> tuple[float, float, float]:
    """Tanks-and-Temples style scores at distance ``tau`` from nearest distances of both directions."""
    precision = float(np.mean(pred_to_gt < tau))
    recall = float(np.mean(gt_to_pred < tau))
    fscore = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return precision, recall, fscore


# --------------------------------------------------------------------------- camera / depth
def camera_errors(pred_cam_from_world: np.ndarray, gt_cam_from_world: np.ndarray,
                  thresholds: tuple[float, ...] = (5.0, 15.0, 30.0)) -> dict:
    """Relative pose errors over all view pairs (invariant to the frames' similarity).

    Args:
        pred_cam_from_world, gt_cam_from_world: ``[V,4,4]`` for the same views (V >= 2).
    Returns:
        dict with ``pairs``, mean ``rre_deg``/``rte_deg``, ``rra``/``rta`` at each threshold
        (fractions) and ``auc30`` (mean over 1..30 degrees of the fraction of pairs whose
        max(RRE, RTE) is below the threshold).
    """
    pred = np.asarray(pred_cam_from_world, dtype=np.float64)
    gt = np.asarray(gt_cam_from_world, dtype=np.float64)
    ok = np.isfinite(pred).all(axis=(1, 2)) & np.isfinite(gt).all(axis=(1, 2))
    pred, gt = pred[ok], gt[ok]
    if len(pred) < 2:
        return {}
    i, j = np.triu_indices(len(pred), k=1)

    def relative(poses):
        rel = geometry.relative_pose(poses[i], poses[j])  # camera i's frame -> camera j's
        return rel[:, :3, :3], rel[:, :3, 3]

    r_pred, t_pred = relative(pred)
    r_gt, t_gt = relative(gt)
    rre = geometry.rotation_angle_deg(r_gt, r_pred)
    rte = geometry.angle_between_deg(t_gt, t_pred)
    worst = np.maximum(rre, rte)
    out = {"pairs": int(len(i)), "rre_deg": float(rre.mean()), "rte_deg": float(rte.mean()),
           "auc30": float(np.mean([np.mean(worst < t) for t in range(1, 31)]))}
    for t in thresholds:
        out[f"rra@{threshold_key(t)}"] = float(np.mean(rre < t))
        out[f"rta@{threshold_key(t)}"] = float(np.mean(rte < t))
    return out


def depth_errors(pred_depths: np.ndarray, gt_depths: np.ndarray, masks: np.ndarray | None = None) -> dict:
    """AbsRel and delta<1.25 after per-view median scaling.

    Args:
        pred_depths: ``[V,h,w]`` predicted z-depth (any scale).
        gt_depths: ``[V,H,W]`` ground truth (0 = invalid), resized to ``(h,w)`` by nearest
            neighbour when the aspect ratios agree (within 2 %); otherwise no score.
        masks: optional ``bool [V,H,W]`` restricting the pixels scored (e.g. the object).
    """
    import cv2

    pred_depths = np.asarray(pred_depths, dtype=np.float64)
    v, h, w = pred_depths.shape
    gh, gw = gt_depths.shape[1:]
    if abs(h / w - gh / gw) > 0.02 * gh / gw:
        return {}
    abs_rel, delta = [], []
    for k in range(v):
        gt = cv2.resize(gt_depths[k].astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
        valid = (gt > 0) & np.isfinite(pred_depths[k]) & (pred_depths[k] > 0)
        if masks is not None:
            valid &= cv2.resize(masks[k].astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        if valid.sum() < 10:
            continue
        p, g = pred_depths[k][valid], gt[valid].astype(np.float64)
        p = p * np.median(g) / np.median(p)
        abs_rel.append(np.mean(np.abs(p - g) / g))
        delta.append(np.mean(np.maximum(p / g, g / p) < 1.25))
    if not abs_rel:
        return {}
    return {"abs_rel": float(np.mean(abs_rel)), "delta1": float(np.mean(delta)), "views": len(abs_rel)}


# --------------------------------------------------------------------------- alignment
def normalization_transform(gt_points: np.ndarray) -> np.ndarray:
    """Sim(3) taking the ground truth into the unit sphere (bounding-box centre -> origin)."""
    gt_points = np.asarray(gt_points, dtype=np.float64)
    centre = (gt_points.min(axis=0) + gt_points.max(axis=0)) / 2
    radius = float(np.linalg.norm(gt_points - centre, axis=1).max())
    if radius <= 0:
        raise EvaluationError("ground truth has zero extent")
    return geometry.sim3_matrix(1.0 / radius, np.eye(3), -centre / radius)


def _octahedral_rotations() -> list[np.ndarray]:
    """The 24 proper rotations mapping coordinate axes onto coordinate axes."""
    import itertools

    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            r = np.zeros((3, 3))
            for row, (col, sign) in enumerate(zip(perm, signs)):
                r[row, col] = sign
            if np.linalg.det(r) > 0:
                out.append(r)
    return out


def _pca_frame(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    if np.linalg.det(vt) < 0:
        vt[2] *= -1
    return vt  # rows = principal axes


def icp(source: np.ndarray, target: np.ndarray, init: np.ndarray, distances: tuple[float, ...],
        with_scale: bool = True, iterations: int = 40) -> tuple[np.ndarray, float, float]:
    """Multi-scale point-to-point ICP (open3d), optionally with scale.

    Returns the refined 4x4 transform (source -> target), and the fitness (fraction of source
    points with a correspondence) and inlier RMSE at the last (finest) distance.
    """
    import open3d as o3d

    def cloud(points):
        pc = o3d.geometry.PointCloud()
        pc.points = o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64))
        return pc

    src, tgt = cloud(source), cloud(target)
    estimation = o3d.pipelines.registration.TransformationEstimationPointToPoint(with_scaling=with_scale)
    criteria = o3d.pipelines.registration.ICPConvergenceCriteria(
        relative_fitness=1e-9, relative_rmse=1e-9, max_iteration=iterations)
    transform = np.asarray(init, dtype=np.float64)
    fitness = rmse = 0.0
    for distance in distances:
        result = o3d.pipelines.registration.registration_icp(src, tgt, distance, transform, estimation, criteria)
        if result.fitness > 0:
            transform = np.asarray(result.transformation)
        fitness, rmse = float(result.fitness), float(result.inlier_rmse)
    return transform, fitness, rmse


def _trimmed_chamfer(source: np.ndarray, target: np.ndarray, target_tree: cKDTree) -> float:
    d_st, _ = target_tree.query(source, k=1, workers=-1)
    d_ts = nearest_distances(target, source)
    trim = lambda d: np.mean(np.sort(d)[: max(1, int(0.9 * len(d)))])  # noqa: E731
    return float(trim(d_st) + trim(d_ts))


def global_alignment(pred: np.ndarray, gt: np.ndarray, seed: int = 0) -> np.ndarray:
    """Coarse Sim(3) pred -> gt without correspondences: centroid, RMS scale, rotation search.

    Candidates: the 24 axis-aligned rotations and the 4 proper PCA-frame alignments, each refined
    by two coarse ICP rounds on 2,000-point subsamples; the best by trimmed Chamfer wins.
    """
    p = subsample(pred, 2000, seed)
    g = subsample(gt, 2000, seed + 1)
    mu_p, mu_g = p.mean(axis=0), g.mean(axis=0)
    rms_p = np.sqrt(np.mean(np.sum((p - mu_p) ** 2, axis=1)))
    rms_g = np.sqrt(np.mean(np.sum((g - mu_g) ** 2, axis=1)))
    scale = rms_g / max(rms_p, 1e-12)
    frame_p, frame_g = _pca_frame(p), _pca_frame(g)
    rotations = _octahedral_rotations()
    for flip in (np.diag([1, 1, 1]), np.diag([-1, -1, 1]), np.diag([-1, 1, -1]), np.diag([1, -1, -1])):
        rotations.append(frame_g.T @ flip @ frame_p)
    tree = cKDTree(g)
    best, best_cost = None, np.inf
    for rotation in rotations:
        init = geometry.sim3_matrix(scale, rotation, mu_g - scale * rotation @ mu_p)
        transform, _, _ = icp(p, g, init, (0.3, 0.15), iterations=15)
        cost = _trimmed_chamfer(geometry.transform_points(transform, p), g, tree)
        if cost < best_cost:
            best, best_cost = transform, cost
    return best


def camera_alignment(recon: Reconstruction, scene: Scene, normalize: np.ndarray) -> np.ndarray | None:
    """Sim(3) from the prediction's frame to the normalised ground-truth frame, from cameras.

    Umeyama on camera centres for >= 3 views with non-collinear centres; otherwise the first
    view's pose, with scale from the two centres' distance (2 views) or 1 (refined by ICP).
    Returns None when either side lacks usable cameras.
    """
    if not recon.has_cameras or not recon.view_ids:
        return None
    gt_poses = scene.cam_from_world[recon.view_ids]
    pred_poses = np.asarray(recon.cam_from_world, dtype=np.float64)
    ok = np.isfinite(gt_poses).all(axis=(1, 2)) & np.isfinite(pred_poses).all(axis=(1, 2))
    if not ok.any():
        return None
    gt_centres = geometry.transform_points(normalize, geometry.camera_center(gt_poses[ok]))
    pred_centres = geometry.camera_center(pred_poses[ok])
    if len(gt_centres) >= 3:
        spread = np.linalg.svd(pred_centres - pred_centres.mean(axis=0), compute_uv=False)
        if spread[1] > 1e-6 * max(spread[0], 1e-12):
            return geometry.umeyama(pred_centres, gt_centres)
    # One or two views: the first camera frames coincide up to a scale about the camera centre.
    norm_scale = geometry.sim3_parts(normalize)[0]
    gt_first, pred_first = gt_poses[ok][0], pred_poses[ok][0]
    if len(gt_centres) >= 2 and np.linalg.norm(pred_centres[1] - pred_centres[0]) > 1e-12:
        scale = (np.linalg.norm(gt_centres[1] - gt_centres[0]) / norm_scale
                 / np.linalg.norm(pred_centres[1] - pred_centres[0]))
    else:  # ratio of median depths: the ground truth's object points against the prediction's
        gt_z = geometry.transform_points(gt_first, scene.gt_points.astype(np.float64))[:, 2]
        pred_z = geometry.transform_points(pred_first, np.asarray(recon.points, np.float64))[:, 2]
        pred_z = pred_z[np.isfinite(pred_z) & (pred_z > 0)]
        scale = float(np.median(gt_z) / np.median(pred_z)) if len(pred_z) else 1.0
    scaling = geometry.sim3_matrix(scale, np.eye(3), np.zeros(3))
    return normalize @ geometry.invert_transform(gt_first) @ scaling @ pred_first


@dataclass
class Alignment:
    transform: np.ndarray              # 4x4 Sim(3): prediction frame -> normalised GT frame
    method: str                        # cameras | global | none | cameras+icp | global+icp
    icp_fitness: float | None = None
    icp_rmse: float | None = None

    def summary(self) -> dict:
        scale, rotation, translation = geometry.sim3_parts(self.transform)
        return {"method": self.method, "scale": scale, "rotation": rotation.tolist(),
                "translation": translation.tolist(), "fitness": self.icp_fitness, "rmse": self.icp_rmse}


# --------------------------------------------------------------------------- the protocol
@dataclass
class Evaluation:
    """Scores of one reconstruction plus what the overlay needs.

    ``scores`` is the JSON object the CLI prints; ``aligned_points [K,3]`` and ``point_errors [K]``
    are the scored prediction points in the normalised frame with their distance to the ground
    truth; ``gt_points [M,3]`` the normalised ground truth.
    """

    scores: dict
    aligned_points: np.ndarray = field(repr=False)
    point_errors: np.ndarray = field(repr=False)
    gt_points: np.ndarray = field(repr=False)
    alignment: Alignment = field(repr=False)

    @property
    def typed(self) -> Scores:
        """``scores`` read through :class:`core.eval.scores.Scores` (typed accessors, same JSON)."""
        return Scores.from_json(self.scores)


def _filter_confidence(points: np.ndarray, confidence: np.ndarray | None, percentile: float) -> np.ndarray:
    if confidence is None or percentile <= 0:
        return np.ones(len(points), dtype=bool)
    return confidence >= np.percentile(confidence, percentile)


def evaluate(scene: Scene, recon: Reconstruction, options: EvaluationOptions | None = None,
             progress=None) -> Evaluation:
    """Run the protocol (module docstring). Raises :class:`EvaluationError` on unusable input."""
    options = options or EvaluationOptions()
    report = progress or (lambda fraction, message="": None)
    if not scene.has_ground_truth:
        raise EvaluationError(f"scene {scene.name!r} has no ground-truth points to score against")
    points = np.asarray(recon.points, dtype=np.float64)
    finite = np.isfinite(points).all(axis=1)
    if not finite.any():
        raise EvaluationError("the reconstruction has no finite points (all NaN or infinite)")
    keep = finite & _filter_confidence(points, recon.confidence, options.confidence_percentile)
    points = points[keep]
    if len(points) < options.min_points:
        raise EvaluationError(f"the reconstruction has {len(points)} usable points; at least "
                              f"{options.min_points} are needed to align and score it")
    normalize = normalization_transform(scene.gt_points)
    gt = geometry.transform_points(normalize, scene.gt_points.astype(np.float64))
    gt_tree = cKDTree(gt)
    report(0.1, "coarse alignment")

    candidates: list[tuple[str, np.ndarray]] = []
    if options.alignment in ("auto", "cameras"):
        by_cameras = camera_alignment(recon, scene, normalize)
        if by_cameras is not None:
            candidates.append(("cameras", by_cameras))
    if options.alignment == "global" or (options.alignment == "auto") or (
            options.alignment == "cameras" and not candidates):
        candidates.append(("global", global_alignment(points, gt, options.seed)))
    if options.alignment == "none":
        candidates.append(("none", np.eye(4)))

    lo, hi = gt.min(axis=0), gt.max(axis=0)
    margin = options.crop_margin * (hi - lo)
    probe = subsample(points, 20_000, options.seed)
    best = None
    for name, transform in candidates:
        report(0.3, f"ICP from the {name} alignment")
        moved = geometry.transform_points(transform, probe)
        inside = np.all((moved >= lo - margin) & (moved <= hi + margin), axis=1)
        source = probe[inside] if inside.sum() >= options.min_points else probe
        fitness = rmse = None
        label = name
        if options.icp and name != "none":
            start_scale = geometry.sim3_parts(transform)[0]
            refined, fitness, rmse = icp(source, gt, transform, options.icp_distances)
            ratio = geometry.sim3_parts(refined)[0] / start_scale
            if not MAX_ICP_SCALE_CHANGE ** -1 <= ratio <= MAX_ICP_SCALE_CHANGE:
                # ICP with scale can shrink a poor match onto one patch of the surface; keep the
                # coarse scale and refine rigidly instead.
                refined, fitness, rmse = icp(source, gt, transform, options.icp_distances, with_scale=False)
                label = name + "+icp(rigid)"
            else:
                label = name + "+icp"
            transform = refined
        cost = _trimmed_chamfer(geometry.transform_points(transform, subsample(source, 4000, 1)),
                                subsample(gt, 4000, 2), gt_tree)
        if best is None or cost < 0.98 * best[0]:  # ties go to the earlier (camera) candidate
            best = (cost, Alignment(transform, label, fitness, rmse))
    alignment = best[1]

    report(0.6, "scoring")
    aligned = geometry.transform_points(alignment.transform, points)
    inside = np.all((aligned >= lo - margin) & (aligned <= hi + margin), axis=1)
    if inside.sum() < options.min_points:
        raise EvaluationError(f"after alignment only {int(inside.sum())} points lie near the object; "
                              "the reconstruction does not overlap the ground truth")
    aligned = aligned[inside]
    pred_query = subsample(aligned, options.sample_points, options.seed)
    gt_query = subsample(gt, options.sample_points, options.seed)
    pred_to_gt, _ = gt_tree.query(pred_query, k=1, workers=-1)
    gt_to_pred = nearest_distances(gt_query, aligned)
    accuracy, completeness = float(pred_to_gt.mean()), float(gt_to_pred.mean())
    emd_n = min(options.emd_points, len(aligned), len(gt))
    report(0.75, f"exact EMD on {emd_n} points")
    emd = earth_movers_distance(aligned, gt, max_points=emd_n, seed=options.seed)
    precision, recall, fscore = {}, {}, {}
    for tau in options.taus:
        key = threshold_key(tau)
        precision[key], recall[key], fscore[key] = precision_recall_fscore(pred_to_gt, gt_to_pred, tau)
    scores = {
        "chamfer": accuracy + completeness, "accuracy": accuracy, "completeness": completeness,
        "emd": emd, "fscore": fscore, "precision": precision, "recall": recall,
        "points_scored": {"prediction": int(len(pred_query)), "ground_truth": int(len(gt_query)),
                          "emd_per_side": int(emd_n), "prediction_after_crop": int(len(aligned)),
                          "prediction_input": int(len(recon.points))},
        "alignment": alignment.summary(),
        "units": "normalised: ground truth scaled into the unit sphere (radius 1)",
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(options).items()},
        "metrics_version": METRICS_VERSION,
    }
    if recon.has_cameras and len(recon.view_ids) >= 2:
        scores["cameras"] = camera_errors(recon.cam_from_world, scene.cam_from_world[recon.view_ids])
    if recon.depth_maps is not None and scene.depths is not None and recon.view_ids:
        masks = scene.masks[recon.view_ids] if scene.masks is not None else None
        scores["depth"] = depth_errors(recon.depth_maps, scene.depths[recon.view_ids], masks)
    report(1.0, "done")
    errors = nearest_distances(aligned, gt) if len(aligned) <= 200_000 else gt_tree.query(aligned)[0]
    return Evaluation(scores=scores, aligned_points=aligned.astype(np.float32),
                      point_errors=errors.astype(np.float32), gt_points=gt.astype(np.float32),
                      alignment=alignment)


def overlay_from_scores(scene: Scene, recon: Reconstruction, scores: dict) -> Evaluation:
    """Rebuild the aligned cloud and per-point errors of a stored evaluation (no re-alignment).

    Uses the Sim(3) stored in ``scores["alignment"]`` and the same crop as :func:`evaluate`.
    """
    align = scores["alignment"]
    transform = geometry.sim3_matrix(align["scale"], np.asarray(align["rotation"]), np.asarray(align["translation"]))
    gt = geometry.transform_points(normalization_transform(scene.gt_points), scene.gt_points.astype(np.float64))
    points = np.asarray(recon.points, dtype=np.float64)
    points = points[np.isfinite(points).all(axis=1)]
    aligned = geometry.transform_points(transform, points)
    margin = scores.get("options", {}).get("crop_margin", 0.1) * (gt.max(axis=0) - gt.min(axis=0))
    inside = np.all((aligned >= gt.min(axis=0) - margin) & (aligned <= gt.max(axis=0) + margin), axis=1)
    aligned = aligned[inside]
    errors = nearest_distances(aligned, gt) if len(aligned) else np.zeros(0)
    return Evaluation(scores=scores, aligned_points=aligned.astype(np.float32), point_errors=errors.astype(np.float32),
                      gt_points=gt.astype(np.float32), alignment=Alignment(transform, align["method"],
                                                                           align.get("fitness"), align.get("rmse")))
