"""The torch twin of :mod:`core.geometry`: the geometry that torch code needs.

Same function names, argument order and conventions as :mod:`core.geometry` (OpenCV cameras,
``cam_from_world``, pixel centres at integer coordinates, XYZW quaternions; see its docstring).
One difference: every function computes in the dtype and on the device of its tensor inputs
(the numpy library always computes in float64), so float32 code such as DUSt3R's global
alignment keeps its precision and its order of operations; pass float64 tensors for float64
results. Functions of plain numbers (:func:`core.geometry.dust3r_principal_point`) are not
repeated here.
"""
from __future__ import annotations

import torch


# ---------------------------------------------------------------------------- transforms
def as_4x4(transform: torch.Tensor) -> torch.Tensor:
    """``[...,3,4]`` or ``[...,4,4]`` -> ``[...,4,4]`` (bottom row ``[0, 0, 0, 1]``), differentiable.

    Keeps the dtype and device; a ``[...,4,4]`` input is returned as it is (not copied).
    """
    if transform.shape[-2:] == (4, 4):
        return transform
    if transform.shape[-2:] != (3, 4):
        raise ValueError(f"expected a [...,3,4] or [...,4,4] transform, got {tuple(transform.shape)}")
    bottom = torch.zeros(transform.shape[:-2] + (1, 4), dtype=transform.dtype, device=transform.device)
    bottom[..., 0, 3] = 1
    return torch.cat((transform, bottom), dim=-2)


def transform_points(transform: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply ``x -> A x + t`` of a ``[...,4,4]`` or ``[...,3,4]`` transform to ``points [...,N,3]``.

    One ``[4,4]`` transform applies to points of any shape ``[...,3]``; a batch ``[B...,4,4]`` applies
    to ``[B...,N,3]`` (leading axes broadcast). Computed as ``points @ A^T + t`` (row vectors).
    """
    shift = transform[..., :3, 3] if transform.ndim == 2 else transform[..., None, :3, 3]
    return points @ transform[..., :3, :3].transpose(-1, -2) + shift


def invert_transform(transform: torch.Tensor) -> torch.Tensor:
    """Inverse ``[...,4,4]`` of rigid or Sim(3) transforms ``[...,4,4]`` or ``[...,3,4]``
    (``(sR)^-1 = R^T / s``, the scale read from the first column)."""
    linear = transform[..., :3, :3]
    scale_sq = linear[..., :, 0].square().sum(-1)
    inverse_linear = linear.transpose(-1, -2) / scale_sq[..., None, None]
    out = torch.zeros(transform.shape[:-2] + (4, 4), dtype=transform.dtype, device=transform.device)
    out[..., :3, :3] = inverse_linear
    out[..., :3, 3] = -(inverse_linear @ transform[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1
    return out


def sim3_matrix(scale: float | torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """4x4 matrix of ``x -> scale * rotation @ x + translation``, in the rotation's dtype."""
    out = torch.eye(4, dtype=rotation.dtype, device=rotation.device)
    out[:3, :3] = rotation * scale
    out[:3, 3] = translation.reshape(3)
    return out


# ---------------------------------------------------------------------------- projection
def pixel_grid(height: int, width: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``[H,W,2]`` pixel coordinates ``(u, v) = (column, row)`` at integer pixel centres."""
    v, u = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack((u, v), dim=-1).to(dtype)


# ---------------------------------------------------------------------------- estimation
def umeyama_parts(source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
                  with_scale: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted least-squares similarity ``(s, R, t)`` minimising ``sum_k w_k |s R x_k + t - y_k|^2``.

    Twin of :func:`core.geometry.umeyama_parts` (same algorithm), computed in the dtype of
    ``source``.

    Args:
        source, target: ``[...,3]`` corresponding points (flattened to ``[N,3]``).
        weights: optional ``[...]`` non-negative weights (flattened to ``[N]``); uniform when None.
        with_scale: estimate ``s``; otherwise ``s = 1``.
    Returns:
        ``s`` (0-d tensor), ``R [3,3]`` (a rotation), ``t [3]``.
    Raises:
        ValueError: shapes differ, fewer than 3 points, or no positive weight.
    """
    if source.shape != target.shape or source.shape[-1] != 3:
        raise ValueError(f"umeyama needs matching [...,3] tensors, got {tuple(source.shape)} and {tuple(target.shape)}")
    x = source.reshape(-1, 3)
    y = target.reshape(-1, 3).to(x.dtype)
    if weights is None:
        w = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    else:
        w = weights.reshape(-1).to(x.dtype)
    total = w.sum()
    if x.shape[0] < 3 or not float(total) > 0:
        raise ValueError("umeyama needs at least 3 correspondences with positive weight")
    w = w / total
    mean_x = (w[:, None] * x).sum(0)
    mean_y = (w[:, None] * y).sum(0)
    xc, yc = x - mean_x, y - mean_y
    covariance = torch.einsum("k,ki,kj->ij", w, yc, xc)
    u, singular, vt = torch.linalg.svd(covariance)
    sign = torch.ones(3, dtype=x.dtype, device=x.device)
    if torch.det(u) * torch.det(vt) < 0:
        sign[2] = -1.0
    rotation = (u * sign) @ vt
    if with_scale:
        scale = (singular * sign).sum() / (w * xc.square().sum(-1)).sum()
    else:
        scale = torch.ones((), dtype=x.dtype, device=x.device)
    return scale, rotation, mean_y - scale * rotation @ mean_x


def focal_from_point_map(points: torch.Tensor, principal_point: tuple[float, float],
                         mask: torch.Tensor | None = None, iterations: int = 10) -> float:
    """Focal (pixels) of a pinhole camera that sees a camera-frame point map, Weiszfeld's estimate.

    Twin of :func:`core.geometry.focal_from_point_map` (same algorithm and arguments), computed in
    the dtype of ``points``: ``points [H,W,3]``, ``principal_point (cx, cy)``, optional
    ``mask bool [H,W]``. Returns a float clipped to >= 0, NaN when no pixel is used.
    """
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be [H,W,3], got {tuple(points.shape)}")
    h, w = points.shape[:2]
    pixels = pixel_grid(h, w, points.dtype, points.device) - torch.tensor(
        principal_point, dtype=points.dtype, device=points.device)
    normalised = (points[..., :2] / points[..., 2:3]).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    if mask is not None:
        normalised, pixels = normalised[mask], pixels[mask]
    normalised, pixels = normalised.reshape(-1, 2), pixels.reshape(-1, 2)
    if pixels.shape[0] == 0:
        return float("nan")
    dot_qp = (normalised * pixels).sum(-1)
    dot_qq = normalised.square().sum(-1)
    focal = dot_qp.mean() / dot_qq.mean()
    for _ in range(iterations):
        weight = (pixels - focal * normalised).norm(dim=-1).clip(min=1e-8).reciprocal()
        focal = (weight * dot_qp).mean() / (weight * dot_qq).mean()
    return float(focal.clip(min=0))


# ---------------------------------------------------------------------------- rotations
def quaternion_to_matrix(quaternion: torch.Tensor) -> torch.Tensor:
    """``[...,4]`` XYZW quaternions of any non-zero norm -> rotations ``[...,3,3]`` (differentiable).

    Normalises, then evaluates the homogeneous form (``xx - yy - zz + ww``, ...) as roma does: in
    float32 DUSt3R's aligner, which differentiates through it, reproduces the authors' run only
    with this order of operations.
    """
    x, y, z, w = torch.unbind(quaternion / quaternion.norm(dim=-1, keepdim=True), -1)
    xx, yy, zz, ww = x * x, y * y, z * z, w * w
    xy, zw, xz, yw, yz, xw = x * y, z * w, x * z, y * w, y * z, x * w
    m = torch.stack((
        xx - yy - zz + ww, 2 * (xy - zw), 2 * (xz + yw),
        2 * (xy + zw), -xx + yy - zz + ww, 2 * (yz - xw),
        2 * (xz - yw), 2 * (yz + xw), -xx - yy + zz + ww), -1)
    return m.reshape(quaternion.shape[:-1] + (3, 3))


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Rotations ``[...,3,3]`` -> unit XYZW quaternions ``[...,4]`` with ``w >= 0``.

    Computed in float64 and returned in the input dtype; the best conditioned of the four pivot
    formulas (largest norm) is used, as in :func:`core.geometry.matrix_to_quaternion`.
    """
    m = matrix.double()
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    candidates = torch.stack((
        torch.stack((m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1],
                     1 + trace), -1),
        torch.stack((1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0],
                     m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] - m[..., 1, 2]), -1),
        torch.stack((m[..., 0, 1] + m[..., 1, 0], 1 + m[..., 1, 1] - m[..., 0, 0] - m[..., 2, 2],
                     m[..., 1, 2] + m[..., 2, 1], m[..., 0, 2] - m[..., 2, 0]), -1),
        torch.stack((m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                     1 + m[..., 2, 2] - m[..., 0, 0] - m[..., 1, 1], m[..., 1, 0] - m[..., 0, 1]), -1)), -2)
    best = candidates.norm(dim=-1).argmax(-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[..., 3:4] < 0, -q, q)
    return q.to(matrix.dtype)
