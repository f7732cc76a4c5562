"""The CO3Dv2 camera-pose protocol, as VGGT's evaluation scores it (``--protocol co3d-pose``).

Per sequence:

1. ``frames`` frames (10 by default) are drawn without replacement with a fixed, recorded seed
   (:func:`sample_frames`: ``numpy.random.default_rng(seed).choice``, then sorted into capture
   order); the method sees only those frames.
2. For every pair ``i < j`` of the evaluated frames the relative pose is ``E_i E_j^-1``
   (``cam_i_from_cam_j``, ``E`` = OpenCV ``cam_from_world``), for the ground truth and for the
   prediction. It does not depend on either side's world frame or scale, so no alignment is done.
3. RRE = the angle of ``R_gt^T R_pred`` (degrees, [0, 180]); RTE = the angle between the two
   relative translations with the sign ignored, ``arccos(|cos|)`` in [0, 90] degrees (VGGT's
   formula folds the direction ambiguity this way; a zero-length translation scores 90).
4. AUC@30 = the mean of the cumulative normalised ``numpy.histogram`` of ``max(RRE, RTE)`` over
   the bins ``0, 1, ..., 30`` (numpy's last bin includes 30; errors above 30 fall outside), i.e.
   VGGT's ``calculate_auc_np``. The ``torch.histc(bins=31, max=30)`` variant found in some training
   code has 31 bins of width 30/31 and gives other numbers; it is not used here.
5. RRA@t / RTA@t = the fraction of pairs with RRE / RTE strictly below ``t`` for t = 5, 15, 30.
6. Aggregation over sequences (:func:`aggregate`): ``per-category`` pools the pairs of each
   category, scores each category, and averages the categories' scores (VGGT's table);
   ``pooled`` scores all pairs together (pi3's variant).

Scores are fractions in [0, 1] under the keys ``auc30``, ``rra5``, ``rra15``, ``rra30``, ``rta5``,
``rta15``, ``rta30``; the per-pair errors come with them.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from core import geometry
from core.errors import UserError
from core.options import option

PROTOCOL = "co3d-pose"
THRESHOLDS = (5, 15, 30)
AUC_MAX_DEG = 30
Aggregation = Literal["per-category", "pooled"]


class PoseProtocolError(UserError):
    """The prediction cannot be scored with the pose protocol (frames, views or cameras wrong)."""


@dataclass
class Co3dPoseOptions:
    """Options of the CO3D pose protocol (defaults = VGGT's evaluation)."""

    frames: int = option(10, "frames drawn per sequence", min=2, max=10_000)
    seed: int = option(0, "seed of the frame draw (recorded with the scores)", min=0)
    aggregation: Aggregation = option("per-category", "per-category: mean over categories of "
                                      "per-category scores (VGGT); pooled: all pairs together (pi3)")


# ----------------------------------------------------------------------------- the protocol's pieces
def sample_frames(num_views: int, count: int, seed: int) -> list[int]:
    """``count`` distinct view indices of ``num_views``, drawn with ``seed``, in ascending order."""
    if not 2 <= count <= num_views:
        raise PoseProtocolError(f"the pose protocol draws {count} frames but the sequence has {num_views}")
    drawn = np.random.default_rng(seed).choice(num_views, size=count, replace=False)
    return sorted(int(v) for v in drawn)


def pair_indices(count: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs ``i < j`` of ``count`` frames, row-major (``(0,1), (0,2), ..., (1,2), ...``)."""
    return np.triu_indices(count, k=1)


def relative_poses(cam_from_world: np.ndarray) -> np.ndarray:
    """``[P,4,4]`` relative poses ``E_i E_j^-1`` (``cam_i_from_cam_j``) of every pair ``i < j``.

    Args:
        cam_from_world: ``[V,4,4]`` or ``[V,3,4]`` OpenCV extrinsics.
    """
    cams = geometry.as_4x4(cam_from_world)
    i, j = pair_indices(len(cams))
    return geometry.relative_pose(cams[j], cams[i])  # relative_pose(a, b) = E_b E_a^-1


def rotation_errors_deg(rotation_gt: np.ndarray, rotation_pred: np.ndarray) -> np.ndarray:
    """``[P]`` angle of ``R_gt^T R_pred`` in degrees, [0, 180]."""
    return geometry.rotation_angle_deg(rotation_gt, rotation_pred)


def translation_errors_deg(translation_gt: np.ndarray, translation_pred: np.ndarray) -> np.ndarray:
    """``[P]`` angle between the translation directions with the sign ignored, in [0, 90] degrees.

    ``arccos(|t_gt . t_pred| / (|t_gt| |t_pred|))``; a zero-length vector on either side gives 90.
    """
    t_gt = np.asarray(translation_gt, np.float64)
    t_pred = np.asarray(translation_pred, np.float64)
    norms = np.linalg.norm(t_gt, axis=-1) * np.linalg.norm(t_pred, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.abs(np.sum(t_gt * t_pred, axis=-1)) / norms
    cos = np.where(norms > 0, np.clip(np.nan_to_num(cos, nan=0.0), 0.0, 1.0), 0.0)
    return np.degrees(np.arccos(cos))


def pair_errors(pred_cam_from_world: np.ndarray, gt_cam_from_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rre [P], rte [P])`` in degrees over the pairs :func:`pair_indices` of the same V views."""
    pred, gt = relative_poses(pred_cam_from_world), relative_poses(gt_cam_from_world)
    return (rotation_errors_deg(gt[:, :3, :3], pred[:, :3, :3]),
            translation_errors_deg(gt[:, :3, 3], pred[:, :3, 3]))


def auc(rre: np.ndarray, rte: np.ndarray, max_threshold: int = AUC_MAX_DEG) -> float:
    """AUC@``max_threshold``: mean of the cumulative normalised ``np.histogram`` of ``max(RRE, RTE)``
    over the integer bins ``0 .. max_threshold`` (the last bin includes its upper edge)."""
    worst = np.maximum(np.asarray(rre, np.float64), np.asarray(rte, np.float64))
    if len(worst) == 0:
        raise PoseProtocolError("no pairs to score")
    histogram, _ = np.histogram(worst, bins=np.arange(max_threshold + 1))
    return float(np.mean(np.cumsum(histogram / len(worst))))


def scores(rre: np.ndarray, rte: np.ndarray) -> dict:
    """``auc30`` and ``rra{t}`` / ``rta{t}`` (strict ``<``) as fractions, plus ``pairs``."""
    rre, rte = np.asarray(rre, np.float64), np.asarray(rte, np.float64)
    out = {"pairs": int(len(rre)), "auc30": auc(rre, rte)}
    for t in THRESHOLDS:
        out[f"rra{t}"] = float(np.mean(rre < t))
        out[f"rta{t}"] = float(np.mean(rte < t))
    return out


def aggregate(sequences: list[dict], aggregation: Aggregation = "per-category") -> dict:
    """Scores over several sequences.

    Args:
        sequences: dicts with ``category`` and the per-pair ``rre_deg`` / ``rte_deg`` lists (what
            :func:`evaluate_sequence` returns).
        aggregation: ``per-category`` (pool each category's pairs, score, average the categories'
            scores: VGGT) or ``pooled`` (score all pairs together: pi3).
    Returns:
        the score keys of :func:`scores`, ``aggregation``, and ``categories`` {name: scores}.
    """
    if not sequences:
        raise PoseProtocolError("no sequences to aggregate")
    by_category: dict[str, tuple[list, list]] = {}
    for seq in sequences:
        rre, rte = by_category.setdefault(str(seq["category"]), ([], []))
        rre.extend(seq["rre_deg"])
        rte.extend(seq["rte_deg"])
    categories = {name: scores(rre, rte) for name, (rre, rte) in sorted(by_category.items())}
    if aggregation == "pooled":
        out = scores([e for rre, _ in by_category.values() for e in rre],
                     [e for _, rte in by_category.values() for e in rte])
    elif aggregation == "per-category":
        keys = [k for k in next(iter(categories.values())) if k != "pairs"]
        out = {k: float(np.mean([c[k] for c in categories.values()])) for k in keys}
        out["pairs"] = int(sum(c["pairs"] for c in categories.values()))
    else:
        raise PoseProtocolError(f"unknown aggregation {aggregation!r}; use per-category or pooled")
    return {**out, "aggregation": aggregation, "categories": categories}


# ----------------------------------------------------------------------------- one scene
def resolve_views(scene, frame_count: int, view_ids: list[int] | None, options: Co3dPoseOptions) -> list[int]:
    """The scene views of a prediction's ``frame_count`` frames.

    ``view_ids`` when given (one per frame, in order); else every view when the file has one
    frame per view; else the protocol's draw when the file has ``options.frames`` frames.
    """
    n = scene.num_views
    if view_ids is not None:
        views = [int(v) for v in view_ids]
        if len(views) != frame_count:
            raise PoseProtocolError(f"the prediction has {frame_count} frames but --views lists {len(views)}")
        bad = [v for v in views if not 0 <= v < n]
        if bad:
            raise PoseProtocolError(f"view {bad[0]} is outside the scene's {n} views (0..{n - 1})")
        if len(set(views)) != len(views):
            raise PoseProtocolError("--views lists a view twice")
        return views
    if frame_count == n:
        return list(range(n))
    if frame_count == options.frames:
        return sample_frames(n, options.frames, options.seed)
    raise PoseProtocolError(
        f"the prediction has {frame_count} frames, the scene {n} views and the protocol draws {options.frames}: "
        f"give --views (the draw with seed {options.seed} is "
        f"{' '.join(map(str, sample_frames(n, min(options.frames, n), options.seed)))})")


def evaluate_sequence(scene, pred_cam_from_world: np.ndarray, views: list[int],
                      options: Co3dPoseOptions | None = None) -> dict:
    """Score predicted cameras of ``views`` of one scene (a CO3D sequence) against its cameras.

    Args:
        scene: a :class:`core.data.scene.Scene`; its provenance's ``category`` / ``sequence`` (set by
            the CO3D importer) label the result.
        pred_cam_from_world: ``[V,4,4]`` or ``[V,3,4]`` OpenCV extrinsics, one per entry of ``views``.
        views: scene view indices of the predicted frames, in order.
    Returns:
        JSON-ready dict: the scores (:func:`aggregate` over this one sequence), ``rre_deg`` /
        ``rte_deg`` per pair with ``pairs_views`` (scene view ids ``[i, j]``), the frame draw and
        the protocol's choices.
    """
    options = options or Co3dPoseOptions()
    pred = geometry.as_4x4(pred_cam_from_world)
    if len(pred) != len(views):
        raise PoseProtocolError(f"{len(pred)} predicted cameras for {len(views)} views")
    if len(views) < 2:
        raise PoseProtocolError("the pose protocol needs at least 2 frames")
    if not np.isfinite(pred).all():
        raise PoseProtocolError("the predicted cameras hold NaN or infinite values")
    gt = scene.cam_from_world[views]
    if not np.isfinite(gt).all():
        missing = [v for v, ok in zip(views, np.isfinite(gt).all(axis=(1, 2))) if not ok]
        raise PoseProtocolError(f"scene views {missing} have no ground-truth camera")
    rre, rte = pair_errors(pred, gt)
    i, j = pair_indices(len(views))
    provenance = scene.provenance or {}
    category = str(provenance.get("category") or scene.name)
    sequence = {"category": category, "rre_deg": rre.tolist(), "rte_deg": rte.tolist()}
    drawn = sample_frames(scene.num_views, options.frames, options.seed) if scene.num_views >= options.frames else None
    return {
        "protocol": PROTOCOL, **aggregate([sequence], options.aggregation),
        "scene": scene.name, "category": category, "sequence": provenance.get("sequence"),
        "views": list(views), "frame_names": [scene.image_names[v] for v in views],
        "frame_draw": {"frames": options.frames, "seed": options.seed, "drawn": drawn,
                       "views_are_the_draw": drawn == sorted(views)},
        "pairs_views": [[int(views[a]), int(views[b])] for a, b in zip(i, j)],
        "rre_deg": sequence["rre_deg"], "rte_deg": sequence["rte_deg"],
        "relative_pose": "E_i E_j^-1 (cam_i_from_cam_j), pairs i < j",
        "auc_histogram": "numpy.histogram over bins 0,1,...,30 (not torch.histc)",
        "options": asdict(options),
    }


# ----------------------------------------------------------------------------- command line
def add_arguments(parser) -> None:
    """``python -m core evaluate --protocol co3d-pose`` flags (prefixed: ``--seed`` is taken)."""
    group = parser.add_argument_group("co3d-pose protocol")
    group.add_argument("--pose-frames", dest="pose__frames", type=int, metavar="INT",
                       help="frames drawn per sequence (default 10)")
    group.add_argument("--pose-seed", dest="pose__seed", type=int, metavar="INT",
                       help="seed of the frame draw (default 0)")
    group.add_argument("--pose-aggregation", dest="pose__aggregation", choices=("per-category", "pooled"),
                       help="over categories (VGGT, default) or all pairs pooled (pi3)")


def options_from_args(args) -> Co3dPoseOptions:
    from core import options as option_surface

    values = {name: getattr(args, f"pose__{name}", None) for name in ("frames", "seed", "aggregation")}
    return option_surface.parse(Co3dPoseOptions, {k: v for k, v in values.items() if v is not None})


def evaluate_cli(args) -> int:
    """``python -m core evaluate --scene S --reconstruction FILE.npz --protocol co3d-pose [--views ...]``."""
    from core.cli import load_scene
    from core.data.importers import read_vggt_cameras
    from core.data.scene import to_json

    options = options_from_args(args)
    scene = load_scene(args.scene)
    path = Path(args.reconstruction)
    if not path.is_file():
        raise PoseProtocolError(f"no such file: {path}")
    if path.suffix.lower() != ".npz":
        raise PoseProtocolError(f"{path.name}: the pose protocol reads a VGGT-style .npz with extrinsic [S,3,4]")
    cams, _ = read_vggt_cameras(path.read_bytes(), path.name)
    views = resolve_views(scene, len(cams), args.views, options)
    print(to_json(evaluate_sequence(scene, cams, views, options)))
    sys.stdout.flush()
    return 0
