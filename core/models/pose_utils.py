"""DUSt3R/Fast3R camera steps that are method steps, not general geometry.

- ``signed_log1p`` / ``signed_expm1``: the translation parametrisation of DUSt3R's global aligner;
- ``pnp_ransac`` and ``focal_candidates``: OpenCV RANSAC PnP as DUSt3R's aligner initialisation and
  Fast3R's pose estimation run it (SQPNP, the authors' principal point, their focal search).

The geometry these steps use (Umeyama, Weiszfeld focal, pixel grids, pose inversion, quaternions)
is :mod:`core.geometry` / :mod:`core.geometry_torch`. Conventions: OpenCV cameras (x right, y down,
z forward); pixel (row v, column u) at integer coordinates; "cam2world" 4x4 matrices take camera
coordinates to world coordinates.
"""
from __future__ import annotations

import logging
from typing import Sequence

import cv2
import numpy as np
import torch

from core import geometry

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- parametrisation
def signed_log1p(x: torch.Tensor) -> torch.Tensor:
    """sign(x)·log(1 + |x|), elementwise (any shape)."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def signed_expm1(x: torch.Tensor) -> torch.Tensor:
    """sign(x)·(exp(|x|) − 1), the inverse of :func:`signed_log1p`, elementwise.

    Written per sign so that autograd gives the true derivative exp(|x|), 1 at x = 0 (the
    reference's sign(x)·expm1(|x|) gives 0 there: a parameter that rounds to exactly 0 would
    stop moving, a float32 accident); the values are the same bits.
    """
    return torch.where(x >= 0, torch.expm1(x), -torch.expm1(-x))


# --------------------------------------------------------------------------- PnP
def pnp_ransac(
    pts3d: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray,
    focal: float | None,
    pp: Sequence[float] | None = None,
    niter: int = 10,
    reprojection_error: float = 5.0,
    n_focal_candidates: int = 21,
) -> tuple[float, np.ndarray] | None:
    """Camera pose (and focal) from a world-frame pointmap by RANSAC PnP.

    OpenCV ``solvePnPRansac`` with ``SOLVEPNP_SQPNP``, no distortion, ``iterationsCount=niter``,
    ``reprojectionError`` in pixels, on the masked pixels (u, v integer) and their 3-D points, with
    K = [[f,0,cx],[0,f,cy],[0,0,1]] in float32. When ``focal`` is None, ``n_focal_candidates`` focals
    geometrically spaced from S/2 to 3S (S = max(H, W)) are tried and the one with the most inliers
    is kept (the first on ties).

    Args:
        pts3d: [H,W,3] float32 world points of the view's pixels.
        mask: [H,W] bool, pixels to use (fewer than 4 -> failure).
        focal: focal in pixels, or None.
        pp: principal point (cx, cy); default :func:`core.geometry.dust3r_principal_point` (W/2, H/2).
    Returns:
        (focal, cam2world [4,4] float32 numpy) or None when no candidate succeeds. cam2world is the
        inverse of the [R|t] (world -> camera) found by OpenCV (inverted in float64, then float32).
    """
    pts = np.asarray(pts3d.detach().cpu().numpy() if torch.is_tensor(pts3d) else pts3d, np.float32)
    msk = np.asarray(mask.detach().cpu().numpy() if torch.is_tensor(mask) else mask, bool)
    if msk.sum() < 4:
        return None
    H, W, _ = pts.shape
    pixels = geometry.pixel_grid(H, W, np.float32)
    if focal is None:
        candidates = list(focal_candidates(H, W, n_focal_candidates))
    else:
        candidates = [focal]
    obj = np.ascontiguousarray(pts[msk])
    img = np.ascontiguousarray(pixels[msk])
    best = None
    for f in candidates:
        K = geometry.dust3r_intrinsics(f, H, W)
        if pp is not None:
            K[:2, 2] = pp
        K = K.astype(np.float32)
        try:
            ok, rvec, tvec, inliers = cv2.solvePnPRansac(
                obj, img, K, None, iterationsCount=int(niter),
                reprojectionError=float(reprojection_error), flags=cv2.SOLVEPNP_SQPNP)
        except cv2.error as exc:  # degenerate input (e.g. f = 0)
            log.debug("solvePnPRansac failed: %s", exc)
            continue
        if not ok or inliers is None:
            continue
        if best is None or len(inliers) > best[0]:
            best = (len(inliers), rvec, tvec, f)
    if best is None:
        return None
    _, rvec, tvec, f = best
    w2c = np.concatenate([cv2.Rodrigues(rvec)[0], np.asarray(tvec, np.float64).reshape(3, 1)], axis=1)
    return f, geometry.invert_transform(w2c).astype(np.float32)


def focal_candidates(H: int, W: int, n: int = 21) -> np.ndarray:
    """The n focals tried when none is known: geometric from S/2 to 3S, S = max(H, W)."""
    S = max(H, W)
    return np.geomspace(S / 2, S * 3, n)


__all__ = ["signed_log1p", "signed_expm1", "pnp_ransac", "focal_candidates"]
