"""The DTU MVS evaluation (``PointCompareMain.m`` of the official MATLAB code and its Python port).

Everything is in millimetres, in the frame of the scan's STL reference points. For a predicted
point cloud ``X [N,3]`` and the STL points ``S [M,3]`` of scan ``n``, with ``ObsMask``, ``BB``
(2x3), ``Res`` and the plane ``P`` of ``ObsMask{n}_10.mat`` / ``Plane{n}.mat`` (stored by the
importer in the scene folder, :class:`core.data.datasets.dtu.DtuEvalData`):

1. **Thinning to 0.2 mm** (``downsample_mm``): the points are visited in the order
   ``np.random.default_rng(seed).permutation(N)``; a visited point that is still alive is kept
   and every point within distance ``<= 0.2`` of it is dropped (points already dropped are
   skipped and drop nothing). The kept points are at least 0.2 mm apart (strictly more) and every
   dropped point lies within 0.2 mm of a kept one. This is the Python port's greedy radius
   thinning, with a recorded seed where the port shuffles with an unseeded generator (MATLAB's
   ``reducePts_haa`` does the same with ``randperm``), so results vary with the seed by a
   fraction of a percent on real clouds.
2. **Inbound box**: keep ``BB0 − 60 ≤ p < BB1 + 120`` on all three axes (``patch_mm`` = 60; the
   box is asymmetric, as in both codes).
3. **Observation mask**: voxel index ``round((p − BB0)/Res)`` with numpy's rounding (half to
   even, as the port; MATLAB's ``round`` goes half away from zero, which differs only for points
   exactly half-way between voxel centres); an index outside the mask array counts as outside.
4. **Accuracy**: mean distance from the inbound points inside the mask to their nearest STL
   point, over the distances ``< 20`` mm (``max_dist_mm``).
5. **Completeness**: mean distance from the STL points above the plane (``P·[x, 1] > 0``) to
   their nearest inbound predicted point (mask or not), over the distances ``< 20`` mm.
6. **Overall** = (accuracy + completeness) / 2.

Alignment: the official protocol does none (``align="none"``, the default, for a file already in
the scan's frame). A reconstruction in a method's own frame is first mapped by the least-squares
Sim(3) (Umeyama, :func:`core.geometry.umeyama`) from its camera centres to the scan's
(``cameras``), then optionally refined by multi-scale ICP with scale against the STL points
(``cameras+icp``, :func:`core.eval.metrics.icp`); the JSON states which was used.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

from core import geometry
from core.data.datasets.dtu import DtuEvalData
from core.data.scene import Reconstruction, Scene
from core.eval.metrics import EvaluationError
from core.options import option

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "1"
DtuAlignment = Literal["none", "cameras", "cameras+icp"]
ICP_POINTS = 50_000  # points per side the ICP refinement uses (seeded subsamples)


@dataclass
class DtuOptions:
    """Options of the DTU protocol (defaults = the official evaluation)."""

    align: DtuAlignment = option("none", "none: the file is in the scan's frame (the official protocol); "
                                         "cameras: Sim(3) from its camera centres to the scan's; "
                                         "cameras+icp: then ICP against the STL points")
    seed: int = option(0, "seed of the thinning order", min=0)
    downsample_mm: float = option(0.2, "thin the prediction to this spacing (mm)", min=0.0, max=100.0,
                                  advanced=True)
    patch_mm: float = option(60.0, "inbound box: BB0 - patch <= p < BB1 + 2 patch (mm)", min=0.0,
                             max=1000.0, advanced=True)
    max_dist_mm: float = option(20.0, "distances from this value up are left out of both means (mm)",
                                min=1e-6, max=1000.0, advanced=True)
    icp_distances_mm: tuple[float, ...] = option((8.0, 4.0, 2.0, 1.0), "ICP correspondence distances of "
                                                 "cameras+icp, coarse to fine (mm)", min=1e-6, max=1000.0,
                                                 advanced=True)


# --------------------------------------------------------------------------- steps
def downsample(points: np.ndarray, radius: float, seed: int = 0, chunk: int = 65_536) -> np.ndarray:
    """Indices of the points the greedy radius thinning keeps (step 1 of the module docstring).

    Args:
        points: ``[N,3]`` (mm).
        radius: a kept point drops the others within distance ``<= radius``; 0 keeps everything.
        seed: the visiting order is ``np.random.default_rng(seed).permutation(N)``.
    Returns:
        ``int64 [K]`` indices into ``points``, in visiting order.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    n = len(points)
    order = np.random.default_rng(seed).permutation(n)
    if radius <= 0 or n == 0:
        return order
    visited = points[order]
    tree = cKDTree(visited)
    alive = np.ones(n, dtype=bool)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        candidates = np.flatnonzero(alive[start:stop]) + start  # those dropped already cannot be kept
        neighbours = tree.query_ball_point(visited[candidates], radius, workers=-1)
        for i, near in zip(candidates, neighbours):
            if alive[i]:
                alive[near] = False
                alive[i] = True
    return order[alive]


def inbound(points: np.ndarray, bb: np.ndarray, patch: float) -> np.ndarray:
    """``bool [N]``: ``BB0 − patch ≤ p < BB1 + 2·patch`` on every axis (``bb [2,3]``, mm)."""
    bb = np.asarray(bb, dtype=np.float64).reshape(2, 3)
    return np.all((points >= bb[0] - patch) & (points < bb[1] + 2 * patch), axis=1)


def in_observation_mask(points: np.ndarray, data: DtuEvalData) -> np.ndarray:
    """``bool [N]``: the voxel ``round((p − BB0)/Res)`` (half to even) exists and is observed."""
    index = np.rint((np.asarray(points, dtype=np.float64) - data.bb[0]) / data.res).astype(np.int64)
    inside = np.all((index >= 0) & (index < np.array(data.obs_mask.shape)), axis=1)
    out = np.zeros(len(index), dtype=bool)
    i = index[inside]
    out[inside] = data.obs_mask[i[:, 0], i[:, 1], i[:, 2]] != 0
    return out


def above_plane(points: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """``bool [N]``: ``P·[x, 1] > 0`` (the object's side of the table plane ``P [4]``)."""
    plane = np.asarray(plane, dtype=np.float64).reshape(4)
    return np.asarray(points, dtype=np.float64) @ plane[:3] + plane[3] > 0


def _capped_mean(distances: np.ndarray, max_dist: float, what: str) -> tuple[float, int]:
    kept = distances[distances < max_dist]
    if len(kept) == 0:
        raise EvaluationError(f"DTU {what}: no distance below {max_dist:g} mm; is the reconstruction in the "
                              "scan's frame (millimetres)? Otherwise use --align cameras")
    return float(kept.mean()), int(len(kept))


def score_points(points: np.ndarray, stl_points: np.ndarray, data: DtuEvalData,
                 options: DtuOptions | None = None) -> dict:
    """Steps 1-6 of the module docstring on points already in the scan's frame.

    Args:
        points: ``[N,3]`` predicted points (mm, scan frame); non-finite rows are dropped first.
        stl_points: ``[M,3]`` the STL reference points (mm).
        data: the scan's observation mask, box, resolution and plane.
    Returns:
        ``accuracy_mm``, ``completeness_mm``, ``overall_mm`` and ``counts`` (points at each step).
    Raises:
        EvaluationError: no predicted point survives a step, or no distance is below the cut.
    """
    options = options or DtuOptions()
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    finite = np.isfinite(points).all(axis=1)
    points = points[finite]
    if len(points) == 0:
        raise EvaluationError("DTU: the reconstruction has no finite point")
    stl = np.asarray(stl_points, dtype=np.float64).reshape(-1, 3)
    thinned = points[downsample(points, options.downsample_mm, options.seed)]
    data_in = thinned[inbound(thinned, data.bb, options.patch_mm)]
    if len(data_in) == 0:
        raise EvaluationError(f"DTU: none of the {len(points)} points lies in the evaluation box of scan "
                              f"{data.scan}; is the reconstruction in the scan's frame (millimetres)? "
                              "Otherwise use --align cameras")
    data_obs = data_in[in_observation_mask(data_in, data)]
    if len(data_obs) == 0:
        raise EvaluationError(f"DTU: no point lies inside scan {data.scan}'s observation mask")
    to_stl, _ = cKDTree(stl).query(data_obs, k=1, distance_upper_bound=options.max_dist_mm, workers=-1)
    accuracy, accuracy_count = _capped_mean(to_stl, options.max_dist_mm, "accuracy")
    stl_above = stl[above_plane(stl, data.plane)]
    if len(stl_above) == 0:
        raise EvaluationError(f"DTU: no STL point of scan {data.scan} lies above its plane P")
    to_pred, _ = cKDTree(data_in).query(stl_above, k=1, distance_upper_bound=options.max_dist_mm, workers=-1)
    completeness, completeness_count = _capped_mean(to_pred, options.max_dist_mm, "completeness")
    return {
        "accuracy_mm": accuracy,
        "completeness_mm": completeness,
        "overall_mm": (accuracy + completeness) / 2,
        "counts": {"points": int(len(points)), "non_finite_dropped": int((~finite).sum()),
                   "downsampled": int(len(thinned)), "inbound": int(len(data_in)),
                   "in_mask": int(len(data_obs)), "accuracy_used": accuracy_count,
                   "stl": int(len(stl)), "stl_above_plane": int(len(stl_above)),
                   "completeness_used": completeness_count},
    }


# --------------------------------------------------------------------------- alignment
def camera_sim3(recon: Reconstruction, scene: Scene) -> np.ndarray:
    """Sim(3) ``[4,4]`` from the reconstruction's frame to the scan's: Umeyama on camera centres.

    Needs the reconstruction's ``cam_from_world [V,4,4]`` with ``view_ids`` (the scene views they
    are) and at least 3 non-collinear centres; EvaluationError otherwise.
    """
    if not recon.has_cameras or len(recon.view_ids) != len(recon.cam_from_world):
        raise EvaluationError("DTU --align cameras needs the reconstruction's cameras and the scene views "
                              "they belong to (e.g. a VGGT predictions.npz with --views)")
    if max(recon.view_ids) >= scene.num_views or min(recon.view_ids) < 0:
        raise EvaluationError(f"DTU: view ids {recon.view_ids} do not fit the scene's {scene.num_views} views")
    pred = geometry.camera_center(np.asarray(recon.cam_from_world, dtype=np.float64))
    gt = scene.camera_centers()[recon.view_ids]
    ok = np.isfinite(pred).all(axis=1) & np.isfinite(gt).all(axis=1)
    pred, gt = pred[ok], gt[ok]
    if len(pred) < 3:
        raise EvaluationError(f"DTU --align cameras needs at least 3 cameras; {len(pred)} are usable")
    spread = np.linalg.svd(pred - pred.mean(axis=0), compute_uv=False)
    if spread[1] <= 1e-9 * max(spread[0], 1e-300):
        raise EvaluationError("DTU --align cameras: the predicted camera centres are collinear")
    return geometry.umeyama(pred, gt)


def align_points(points: np.ndarray, recon: Reconstruction, scene: Scene, options: DtuOptions
                 ) -> tuple[np.ndarray, dict]:
    """Points ``[N,3]`` mapped into the scan's frame as ``options.align`` says, and the record of it."""
    if options.align == "none":
        return points, {"mode": "none"}
    transform = camera_sim3(recon, scene)
    record: dict = {"mode": options.align}
    if options.align == "cameras+icp":
        from core.eval.metrics import icp, subsample

        source = subsample(geometry.transform_points(transform, points), ICP_POINTS, options.seed)
        target = subsample(np.asarray(scene.gt_points, dtype=np.float64), ICP_POINTS, options.seed + 1)
        refine, fitness, rmse = icp(source, target, np.eye(4), tuple(options.icp_distances_mm))
        transform = refine @ transform
        record.update({"icp_fitness": fitness, "icp_rmse_mm": rmse,
                       "icp_distances_mm": list(options.icp_distances_mm)})
    scale, rotation, translation = geometry.sim3_parts(transform)
    record.update({"scale": scale, "rotation": rotation.tolist(), "translation_mm": translation.tolist()})
    return geometry.transform_points(transform, points), record


# --------------------------------------------------------------------------- entry points
def evaluate(scene: Scene, recon: Reconstruction, data: DtuEvalData, options: DtuOptions | None = None) -> dict:
    """The DTU protocol on one reconstruction of an imported DTU scene: the JSON object the CLI prints."""
    options = options or DtuOptions()
    if not scene.has_ground_truth:
        raise EvaluationError(f"scene {scene.name} has no STL points (gt_points)")
    points, alignment = align_points(np.asarray(recon.points, dtype=np.float64), recon, scene, options)
    scores = score_points(points, scene.gt_points, data, options)
    return {"protocol": "dtu", "protocol_version": PROTOCOL_VERSION, "scan": data.scan,
            **scores, "alignment": alignment, "units": "mm",
            "parameters": {"downsample_mm": options.downsample_mm, "seed": options.seed,
                           "inbound": f"BB0 - {options.patch_mm:g} <= p < BB1 + {2 * options.patch_mm:g}",
                           "mask_index": "round half to even of (p - BB0) / Res",
                           "max_dist_mm": options.max_dist_mm, "distance_cut": "distances >= max_dist_mm "
                                                                               "left out of both means"}}


def evaluate_cli(args) -> int:
    """``python -m core evaluate --scene SCENE --reconstruction FILE --protocol dtu [--align ...]``.

    Reads ``args.scene``, ``args.reconstruction``, ``args.views`` (scene views of a predictions
    file's frames) and the option flags ``--align`` / ``--seed`` (``opt__align``, ``opt__seed``);
    prints the JSON of :func:`evaluate`. Returns the exit status.
    """
    from core import options as option_surface
    from core.cli import CliError, load_scene
    from core.data.importers import read_reconstruction
    from core.data.scene import to_json

    options = option_surface.from_namespace(DtuOptions, args)
    scene = load_scene(args.scene)
    data = DtuEvalData.load(Path(args.scene))
    path = Path(args.reconstruction)
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    recon = read_reconstruction(path.read_bytes(), path.name, getattr(args, "views", None))
    result = evaluate(scene, recon, data, options)
    result["reconstruction"] = path.name
    print(to_json(result))
    return 0
