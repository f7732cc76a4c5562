"""Small camera-geometry helpers shared by the learned multi-view methods (DUSt3R, Fast3R).

Everything here is a pure function on tensors/arrays:

- ``signed_log1p`` / ``signed_expm1``: the translation parametrisation of the DUSt3R aligner;
- quaternions in XYZW order (``quat_to_rotmat``, ``rotmat_to_quat``, ``quat_normalize``);
- ``weighted_similarity``: weighted Umeyama/Kabsch registration (s, R, t) of two point sets;
- ``pixel_grid`` and ``weiszfeld_focal``: robust focal estimation from a camera-frame pointmap;
- ``pnp_ransac``: OpenCV ``solvePnPRansac`` (SQPNP) wrapper returning a camera-to-world pose.

Conventions: OpenCV cameras (x right, y down, z forward); pixel (row v, column u) at integer
coordinates; "cam2world" 4x4 matrices take camera coordinates to world coordinates.
"""
from __future__ import annotations

import logging
from typing import Sequence

import cv2
import numpy as np
import torch

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- parametrisation
def signed_log1p(x: torch.Tensor) -> torch.Tensor:
    """sign(x)·log(1 + |x|), elementwise (any shape)."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def signed_expm1(x: torch.Tensor) -> torch.Tensor:
    """sign(x)·(exp(|x|) − 1), the inverse of :func:`signed_log1p`."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


# --------------------------------------------------------------------------- quaternions
def quat_normalize(q: torch.Tensor) -> torch.Tensor:
    """q / |q| over the last axis ([...,4])."""
    return q / torch.norm(q, dim=-1, keepdim=True)


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternions [...,4] in XYZW order -> rotation matrices [...,3,3] (no normalisation)."""
    x, y, z, w = q.unbind(-1)
    xx, yy, zz, ww = x * x, y * y, z * z, w * w
    xy, zw, xz, yw, yz, xw = x * y, z * w, x * z, y * w, y * z, x * w
    rows = (
        xx - yy - zz + ww, 2 * (xy - zw), 2 * (xz + yw),
        2 * (xy + zw), -xx + yy - zz + ww, 2 * (yz - xw),
        2 * (xz - yw), 2 * (yz + xw), -xx - yy + zz + ww,
    )
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def rotmat_to_quat(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [...,3,3] -> unit quaternions [...,4] (XYZW).

    Numerically robust branch selection on the largest of (R00, R11, R22, trace); the
    sign is the one this construction yields (q and −q are the same rotation).
    """
    batch = R.shape[:-2]
    M = R.reshape(-1, 3, 3)
    diag = torch.diagonal(M, dim1=-2, dim2=-1)
    trace = diag.sum(-1)
    decision = torch.cat([diag, trace[:, None]], dim=-1)
    choice = decision.argmax(-1)
    q = torch.empty((M.shape[0], 4), dtype=M.dtype, device=M.device)
    for n in range(M.shape[0]):
        c = int(choice[n])
        m = M[n]
        if c == 3:
            q[n, 0] = m[2, 1] - m[1, 2]
            q[n, 1] = m[0, 2] - m[2, 0]
            q[n, 2] = m[1, 0] - m[0, 1]
            q[n, 3] = 1 + trace[n]
        else:
            i, j = c, (c + 1) % 3
            k = (j + 1) % 3
            q[n, i] = 1 - trace[n] + 2 * m[i, i]
            q[n, j] = m[j, i] + m[i, j]
            q[n, k] = m[k, i] + m[i, k]
            q[n, 3] = m[k, j] - m[j, k]
    q = q / torch.norm(q, dim=-1, keepdim=True)
    return q.reshape(batch + (4,))


def rotation_angle_deg(R1: np.ndarray, R2: np.ndarray) -> np.ndarray:
    """Angle in degrees of R1ᵀ·R2 for rotation matrices [...,3,3] (float64 numpy)."""
    R = np.swapaxes(np.asarray(R1, np.float64), -1, -2) @ np.asarray(R2, np.float64)
    cos = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


# --------------------------------------------------------------------------- registration
def weighted_similarity(
    x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None, with_scale: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted Umeyama: (s, R, t) minimising Σ_k w_k ‖s·R·x_k + t − y_k‖².

    Args:
        x, y: corresponding points, any shape [...,3] (flattened to [K,3]), same dtype.
        weights: [...] non-negative weights (flattened to [K]) or None for uniform weights.
        with_scale: estimate s (else s = 1).
    Returns:
        s (0-d tensor), R [3,3] (a rotation, det +1), t [3], in the dtype of x.
    """
    x = x.reshape(-1, 3)
    y = y.reshape(-1, 3)
    if weights is None:
        w = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=x.dtype, device=x.device)
    else:
        w = weights.reshape(-1).to(x.dtype)
        w = w / w.sum()
    xmean = (w[:, None] * x).sum(0, keepdim=True)
    ymean = (w[:, None] * y).sum(0, keepdim=True)
    xc, yc = x - xmean, y - ymean
    M = torch.einsum("k,ki,kj->ij", w, yc, xc)  # Σ w y xᵀ
    U, D, Vt = torch.linalg.svd(M)
    flip = bool(torch.det(U) * torch.det(Vt) < 0)
    sign = torch.ones(3, dtype=x.dtype, device=x.device)
    if flip:
        sign[-1] = -1.0
    R = (U * sign[None, :]) @ Vt
    if with_scale:
        s = (D * sign).sum() / (w * xc.square().sum(-1)).sum()
    else:
        s = torch.ones((), dtype=x.dtype, device=x.device)
    t = (ymean - (s * R @ xmean.T).T).reshape(3)
    return s, R, t


def similarity_to_4x4(s: float | torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """[[s·R, t], [0, 1]] as a float32 4x4 tensor (t is not multiplied by s)."""
    out = torch.eye(4, dtype=torch.float32, device=R.device)
    out[:3, :3] = R * s
    out[:3, 3] = t.reshape(3)
    return out


def apply_transform(T: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Apply 4x4 transforms to points: T [4,4] with pts [...,3], or T [B,4,4] with pts [B,K,3].

    Computed as pts·R^T + t (row vectors).
    """
    if T.ndim == 2:
        return pts @ T[:3, :3].transpose(-1, -2) + T[:3, 3]
    return pts @ T[:, :3, :3].transpose(-1, -2) + T[:, None, :3, 3]


# --------------------------------------------------------------------------- focal
def pixel_grid(H: int, W: int) -> np.ndarray:
    """[H,W,2] float32 grid of (u, v) = (column, row) integer pixel coordinates."""
    v, u = np.mgrid[:H, :W]
    return np.stack([u, v], axis=-1).astype(np.float32)


def weiszfeld_focal(
    pts3d: torch.Tensor,
    mask: torch.Tensor | None = None,
    pp: Sequence[float] | None = None,
    niter: int = 10,
    mean_normalise: bool = True,
    min_focal: float = 0.0,
) -> float:
    """Focal (pixels) of a pinhole camera seeing pointmap ``pts3d`` in its own frame.

    Minimises Σ ‖p − f·(x/z, y/z)‖ over the (masked) pixels, p = (u − cx, v − cy) with u, v
    integer pixel indices: start from the least-squares f = mean(⟨xy/z, p⟩)/mean(|xy/z|²), then
    ``niter`` reweightings by 1/max(‖p − f·xy/z‖, 1e-8) (iteratively reweighted least squares,
    Weiszfeld). Computed in the dtype of ``pts3d``; the result is clipped to ≥ min_focal·S/(2·tan 30°),
    S = max(H, W) (i.e. to ≥ 0 by default). Points with z = 0 contribute xy/z = 0.

    Args:
        pts3d: [H,W,3] points in the camera frame (OpenCV).
        mask: optional [H,W] bool, pixels to use.
        pp: principal point (cx, cy); default (W/2, H/2).
        niter: number of reweightings (DUSt3R's aligner 10, Fast3R's pose estimation 100).
        mean_normalise: the reweighted ratios use means (True, DUSt3R) or sums (False, Fast3R);
            the same value up to rounding. The starting value always uses means.
    """
    H, W, three = pts3d.shape
    if three != 3:
        raise ValueError(f"pts3d must be [H,W,3], got {tuple(pts3d.shape)}")
    if pp is None:
        pp_t = torch.tensor((W / 2, H / 2), device=pts3d.device)
    else:
        pp_t = torch.as_tensor(pp, dtype=torch.float32, device=pts3d.device)
    grid = torch.from_numpy(pixel_grid(H, W)).to(pts3d.device)
    pixels = (grid - pp_t).to(pts3d.dtype)
    if mask is not None:
        pts = pts3d[mask]
        pixels = pixels[mask]
        if pts.shape[0] == 0:
            return float(max(H, W) / (2 * np.tan(np.deg2rad(60) / 2)))
    else:
        pts = pts3d.reshape(-1, 3)
        pixels = pixels.reshape(-1, 2)
    reduce = (lambda a: a.mean()) if mean_normalise else (lambda a: a.sum())
    xy_over_z = (pts[:, :2] / pts[:, 2:3]).nan_to_num(posinf=0, neginf=0)
    dot_xy_px = (xy_over_z * pixels).sum(-1)
    dot_xy_xy = xy_over_z.square().sum(-1)
    focal = dot_xy_px.mean() / dot_xy_xy.mean()
    for _ in range(niter):
        dist = (pixels - focal * xy_over_z).norm(dim=-1)
        w = dist.clip(min=1e-8).reciprocal()
        focal = reduce(w * dot_xy_px) / reduce(w * dot_xy_xy)
    focal_base = max(H, W) / (2 * np.tan(np.deg2rad(60) / 2))
    return float(focal.clip(min=min_focal * focal_base))


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
        pp: principal point (cx, cy); default (W/2, H/2).
    Returns:
        (focal, cam2world [4,4] float32 numpy) or None when no candidate succeeds. cam2world is the
        float32 inverse of [R|t] (world -> camera) found by OpenCV.
    """
    pts = np.asarray(pts3d.detach().cpu().numpy() if torch.is_tensor(pts3d) else pts3d, np.float32)
    msk = np.asarray(mask.detach().cpu().numpy() if torch.is_tensor(mask) else mask, bool)
    if msk.sum() < 4:
        return None
    H, W, _ = pts.shape
    pixels = pixel_grid(H, W)
    if focal is None:
        candidates = list(focal_candidates(H, W, n_focal_candidates))
    else:
        candidates = [focal]
    cx, cy = (W / 2, H / 2) if pp is None else (float(pp[0]), float(pp[1]))
    obj = np.ascontiguousarray(pts[msk])
    img = np.ascontiguousarray(pixels[msk])
    best = None
    for f in candidates:
        K = np.float32([(f, 0, cx), (0, f, cy), (0, 0, 1)])
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
    R = cv2.Rodrigues(rvec)[0]
    w2c = torch.eye(4, dtype=torch.float32)
    w2c[:3, :3] = torch.from_numpy(R)
    w2c[:3, 3] = torch.from_numpy(tvec).reshape(3)
    cam2world = torch.linalg.inv(w2c).numpy()
    return f, cam2world


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid 4x4 transforms [...,4,4] (float64 numpy): [Rᵀ, −Rᵀt]."""
    T = np.asarray(T, np.float64)
    out = np.zeros_like(T)
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, t)
    out[..., 3, 3] = 1.0
    return out


def focal_candidates(H: int, W: int, n: int = 21) -> np.ndarray:
    """The n focals tried when none is known: geometric from S/2 to 3S, S = max(H, W)."""
    S = max(H, W)
    return np.geomspace(S / 2, S * 3, n)


__all__ = [
    "signed_log1p", "signed_expm1", "quat_normalize", "quat_to_rotmat", "rotmat_to_quat",
    "rotation_angle_deg", "weighted_similarity", "similarity_to_4x4", "apply_transform",
    "pixel_grid", "weiszfeld_focal", "pnp_ransac", "invert_pose", "focal_candidates",
]
