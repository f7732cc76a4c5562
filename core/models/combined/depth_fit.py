"""Relative inverse depth -> depth: a robust scale-and-shift fit against a reference.

Depth Anything predicts disparity ``d`` known up to an affine map. With reference depths
``z`` on some pixels (the scene's depth map, its points seen in the view, or a VGGT run's
depth) we fit, in inverse-depth space,

    1 / z  ≈  scale * d + shift

robustly (RANSAC on pairs for a start, then iteratively reweighted least squares with Huber
weights), and convert every pixel to ``depth = 1 / (scale * d + shift)`` (0 where that is not
positive). The residual is reported as the median absolute relative depth error on the
reference pixels used.
"""
from __future__ import annotations

import logging
import typing
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from core import geometry
from core.errors import UserError

log = logging.getLogger(__name__)

MIN_SAMPLES = 20


class NoDepthReference(UserError):
    """No reference depth is available for a view (or too few samples in it, or a constant disparity
    on them); the user picks another reference or the relative mode."""


@dataclass
class ScaleShiftFit:
    """Result of :func:`fit_inverse_depth`: ``1/z ≈ scale * d + shift``.

    Attributes:
        scale, shift: the affine map from disparity to inverse depth (1 / world units).
        samples: reference pixels used; inliers: those kept by the robust fit.
        median_rel_error: median |z_fit - z_ref| / z_ref over the inliers.
        median_abs_residual: median |1/z_ref - (scale d + shift)| over all samples (1 / units).
    """

    scale: float
    shift: float
    samples: int
    inliers: int
    median_rel_error: float
    median_abs_residual: float

    def as_dict(self) -> dict:
        return asdict(self)


def _weighted_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    sw = w.sum()
    mx, my = (w @ x) / sw, (w @ y) / sw
    var = w @ (x - mx) ** 2
    if var <= 0:
        raise NoDepthReference("the disparity is constant on the reference pixels; scale cannot be fitted")
    slope = (w @ ((x - mx) * (y - my))) / var
    return float(slope), float(my - slope * mx)


def fit_inverse_depth(disparity: np.ndarray, reference_depth: np.ndarray, valid: np.ndarray | None = None,
                      iterations: int = 20, ransac_trials: int = 200, seed: int = 0,
                      max_samples: int = 200_000) -> ScaleShiftFit:
    """Fit ``1/reference_depth ≈ scale * disparity + shift`` robustly.

    Args:
        disparity: ``[H,W]`` relative inverse depth (any positive scale).
        reference_depth: ``[H,W]`` z-depth in world units, 0 or non-finite = no reference.
        valid: optional ``bool [H,W]`` restricting the pixels used (e.g. the object mask).
        max_samples: at most this many reference pixels are used (seeded subsample).
    Raises:
        NoDepthReference: fewer than ``MIN_SAMPLES`` usable pixels, or constant disparity.
    """
    d = np.asarray(disparity, dtype=np.float64)
    z = np.asarray(reference_depth, dtype=np.float64)
    ok = np.isfinite(z) & (z > 0) & np.isfinite(d)
    if valid is not None:
        ok &= valid
    x, zr = d[ok], z[ok]
    if len(x) < MIN_SAMPLES:
        raise NoDepthReference(f"only {len(x)} reference depth samples (need {MIN_SAMPLES})")
    rng = np.random.default_rng(seed)
    if len(x) > max_samples:
        pick = rng.choice(len(x), size=max_samples, replace=False)
        x, zr = x[pick], zr[pick]
    y = 1.0 / zr
    # normalise for conditioning
    x_mu, x_sd = x.mean(), x.std()
    y_mu, y_sd = y.mean(), y.std()
    if x_sd <= 0:
        raise NoDepthReference("the disparity is constant on the reference pixels; scale cannot be fitted")
    y_sd = y_sd if y_sd > 0 else 1.0
    xn, yn = (x - x_mu) / x_sd, (y - y_mu) / y_sd
    # RANSAC on pairs: the line with the smallest median absolute residual (scored on <= 4,000 samples)
    probe = rng.choice(len(xn), size=min(len(xn), 4000), replace=False)
    xp, yp = xn[probe], yn[probe]
    best, best_cost = (1.0, 0.0), np.inf
    for _ in range(ransac_trials):
        i, j = rng.integers(0, len(xp), size=2)
        if abs(xp[i] - xp[j]) < 1e-9:
            continue
        slope = (yp[i] - yp[j]) / (xp[i] - xp[j])
        intercept = yp[i] - slope * xp[i]
        cost = np.median(np.abs(yp - slope * xp - intercept))
        if cost < best_cost:
            best, best_cost = (slope, intercept), cost
    slope, intercept = best
    weights = np.ones_like(xn)
    for _ in range(iterations):
        residual = yn - slope * xn - intercept
        sigma = 1.4826 * np.median(np.abs(residual)) + 1e-12
        cutoff = 1.345 * sigma
        a = np.abs(residual)
        weights = np.where(a <= cutoff, 1.0, cutoff / np.maximum(a, 1e-300))
        weights[a > 5 * sigma] = 0.0  # gross outliers (occlusions, bad references) out
        if weights.sum() < MIN_SAMPLES // 2:
            weights = np.ones_like(xn)
        new_slope, new_intercept = _weighted_line(xn, yn, weights)
        converged = abs(new_slope - slope) < 1e-10 and abs(new_intercept - intercept) < 1e-10
        slope, intercept = new_slope, new_intercept
        if converged:
            break
    scale = slope * y_sd / x_sd
    shift = y_mu + y_sd * intercept - scale * x_mu
    inverse = scale * x + shift
    inliers = weights > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(1.0 / inverse - zr) / zr
    rel = rel[inliers & np.isfinite(rel) & (inverse > 0)]
    return ScaleShiftFit(scale=float(scale), shift=float(shift), samples=int(len(x)), inliers=int(inliers.sum()),
                         median_rel_error=float(np.median(rel)) if len(rel) else float("nan"),
                         median_abs_residual=float(np.median(np.abs(y - inverse))))


def disparity_to_depth(disparity: np.ndarray, scale: float, shift: float, max_depth: float | None = None
                       ) -> np.ndarray:
    """``float32 [H,W]`` depth ``1 / (scale d + shift)``; 0 where not positive/finite or beyond ``max_depth``."""
    inverse = scale * np.asarray(disparity, dtype=np.float64) + shift
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(inverse > 1e-12, 1.0 / inverse, 0.0)
    depth[~np.isfinite(depth)] = 0.0
    if max_depth is not None:
        depth[depth > max_depth] = 0.0
    return depth.astype(np.float32)


def relative_depth(disparity: np.ndarray) -> np.ndarray:
    """Depth for the explicit *relative* mode: disparity normalised to [0,1] (2nd-98th percentile)
    mapped to inverse depth in [0.1, 1]; depth in [1, 10] *arbitrary* units, shape distorted by the
    unknown shift."""
    d = np.asarray(disparity, dtype=np.float64)
    lo, hi = np.percentile(d, [2, 98])
    normalised = np.clip((d - lo) / max(hi - lo, 1e-12), 0, 1)
    return (1.0 / (0.1 + 0.9 * normalised)).astype(np.float32)


# --------------------------------------------------------------------------- references
@dataclass
class DepthReference:
    """Known depths of a view: ``depth float32 [H,W]`` (0 = unknown), what it is, and its frame.

    ``frame`` is ``scene`` (the scene's world units) or ``vggt:<run key>`` (that run's own scale).
    """

    depth: np.ndarray
    label: str
    kind: str
    frame: str = "scene"

    @property
    def samples(self) -> int:
        return int(np.count_nonzero(self.depth > 0))


def scene_depth_reference(scene, view: int) -> DepthReference | None:
    """The scene's own depth map of ``view`` (ground truth or COLMAP), if it has one."""
    if scene.depths is None or not np.any(scene.depths[view] > 0):
        return None
    return DepthReference(scene.depths[view].astype(np.float32), "the scene's depth map", "scene depth")


def visible_points_depth(points: np.ndarray, intrinsics: np.ndarray, cam_from_world: np.ndarray,
                         image_size: tuple[int, int], cell: int = 4, tolerance: float = 0.02) -> np.ndarray:
    """Sparse depth ``float32 [H,W]`` of the ``points [M,3]`` a camera sees (z-buffered per cell).

    A point is kept when it is in front of the camera, inside the image, and within
    ``tolerance`` (relative) of the nearest point falling into its ``cell x cell`` pixel block,
    which drops the far side of the object.
    """
    h, w = image_size
    depth = np.zeros((h, w), dtype=np.float32)
    if points is None or len(points) == 0 or not np.isfinite(cam_from_world).all():
        return depth
    uv, z = geometry.project(points, intrinsics, cam_from_world)
    col = np.round(uv[:, 0])
    row = np.round(uv[:, 1])
    ok = (z > 0) & np.isfinite(col) & np.isfinite(row) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    col, row, z = col[ok].astype(int), row[ok].astype(int), z[ok]
    if len(z) == 0:
        return depth
    cells = (row // cell) * ((w + cell - 1) // cell) + col // cell
    nearest = np.full(cells.max() + 1, np.inf)
    np.minimum.at(nearest, cells, z)
    keep = z <= nearest[cells] * (1 + tolerance)
    order = np.argsort(-z[keep])  # nearer points written last
    depth[row[keep][order], col[keep][order]] = z[keep][order]
    return depth


def colmap_points_seen(model_folder, image_name: str) -> np.ndarray | None:
    """``float64 [M,3]`` world points of a COLMAP sparse model observed by image ``image_name``.

    Reads the model (binary or text) with pycolmap; None when the folder, or the image in it, is missing.
    """
    from pathlib import Path

    folder = Path(model_folder)
    if not folder.is_dir():
        return None
    try:
        import pycolmap

        model = pycolmap.Reconstruction(str(folder))
    except Exception as error:  # an unreadable model is no reference
        log.warning("cannot read the COLMAP model %s: %s", folder, error)
        return None
    image = model.find_image_with_name(image_name)
    if image is None:
        return None
    points = [p.xyz for p in model.points3D.values()
              if any(e.image_id == image.image_id for e in p.track.elements)]
    return np.asarray(points, dtype=np.float64).reshape(-1, 3)


def colmap_sparse_reference(scene, view: int) -> DepthReference | None:
    """COLMAP's sparse points observed in ``view`` (from ``<scene folder>/sparse/0``), projected with the
    scene's camera (the scene stays in COLMAP's world frame)."""
    if scene.path is None or not np.isfinite(scene.cam_from_world[view]).all():
        return None
    from pathlib import Path

    points = colmap_points_seen(Path(scene.path) / "sparse" / "0", scene.image_names[view])
    if points is None or len(points) == 0:
        return None
    depth = visible_points_depth(points, scene.intrinsics[view], scene.cam_from_world[view], scene.image_size,
                                 cell=1, tolerance=np.inf)
    n = int(np.count_nonzero(depth))
    if n < MIN_SAMPLES:
        return None
    return DepthReference(depth, f"COLMAP's sparse points seen in the view ({n:,})", "colmap sparse")


def scene_points_reference(scene, view: int) -> DepthReference | None:
    """The scene's points (COLMAP / ground-truth cloud) seen in ``view``, if any are."""
    if not scene.has_ground_truth or not np.isfinite(scene.cam_from_world[view]).all():
        return None
    depth = visible_points_depth(scene.gt_points, scene.intrinsics[view], scene.cam_from_world[view],
                                 scene.image_size)
    n = int(np.count_nonzero(depth))
    if n < MIN_SAMPLES:
        return None
    return DepthReference(depth, f"the scene's 3-D points seen in the view ({n:,} pixels)", "scene points")


def stored_vggt_run(scene, view: int, store=None):
    """(key, Reconstruction) of the newest stored VGGT run of ``scene`` that includes ``view``, or None."""
    from core.store.cache import RunStore

    store = store or RunStore()
    for record in store.runs(scene.name):
        if record.method != "vggt" or view not in (record.meta.get("view_ids") or []):
            continue
        try:
            recon = record.load()
        except Exception as error:  # an unreadable run must not break the pipeline
            log.warning("skipping VGGT run %s: %s", record.key, error)
            continue
        if recon.depth_maps is not None:
            return record.key, recon
    return None


def vggt_depth_in_view(recon, view: int, image_size: tuple[int, int]) -> np.ndarray:
    """The VGGT run's depth of ``view`` resampled (nearest) to the scene's original pixels."""
    import cv2

    index = recon.view_ids.index(view)
    depth = np.asarray(recon.depth_maps[index], dtype=np.float32)
    h, w = image_size
    transforms = (recon.extra or {}).get("transforms")
    if transforms:
        t = transforms[index]
        network = geometry.resize_crop_pixels(geometry.pixel_grid(h, w), t["scale"], t["offset"]).astype(np.float32)
        out = cv2.remap(depth, network[..., 0], network[..., 1], interpolation=cv2.INTER_NEAREST,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # nearest network pixel
    else:
        out = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
    out[~np.isfinite(out)] = 0
    return out.astype(np.float32)


def vggt_reference(scene, view: int, store=None) -> DepthReference | None:
    found = stored_vggt_run(scene, view, store)
    if found is None:
        return None
    key, recon = found
    depth = vggt_depth_in_view(recon, view, scene.image_size)
    return DepthReference(depth, f"VGGT's depth (stored run {key[:8]}, VGGT's own scale)", "vggt",
                          frame=f"vggt:{key}")


ReferenceChoice = Literal["auto", "scene depth", "colmap sparse", "scene points", "vggt", "none (relative depth)"]
REFERENCE_CHOICES: tuple[str, ...] = typing.get_args(ReferenceChoice)


def find_reference(scene, view: int, choice: ReferenceChoice = "auto", store=None) -> DepthReference | None:
    """The depth reference for ``view`` by ``choice`` (``auto``: scene depth, COLMAP sparse, scene points, VGGT).

    Returns None for ``none (relative depth)``. Raises :class:`NoDepthReference` with a clear
    message when the chosen (or any, for ``auto``) reference is missing.
    """
    if choice == "none (relative depth)":
        return None
    finders = {"scene depth": lambda: scene_depth_reference(scene, view),
               "colmap sparse": lambda: colmap_sparse_reference(scene, view),
               "scene points": lambda: scene_points_reference(scene, view),
               "vggt": lambda: vggt_reference(scene, view, store)}
    if choice not in REFERENCE_CHOICES:
        raise ValueError(f"unknown depth reference {choice!r}; choose one of {', '.join(REFERENCE_CHOICES)}")
    order = list(finders) if choice == "auto" else [choice]
    for name in order:
        found = finders[name]()
        if found is not None:
            return found
    if choice == "auto":
        raise NoDepthReference(
            f"view {view} has no depth reference: the scene has no depth map, COLMAP points or 3-D points "
            "seen in it and no stored VGGT run includes it. Run VGGT on this view first, or choose the depth reference "
            "'none (relative depth)' for an unscaled cloud.")
    raise NoDepthReference(f"view {view} has no {choice} reference; choose another depth reference "
                           "or 'none (relative depth)'")
