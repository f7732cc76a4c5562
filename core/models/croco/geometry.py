"""Small pointmap geometry shared by DUSt3R and Fast3R: weighted Umeyama, focal from a pointmap.

Pixel convention: pixel (row v, column u) has integer coordinates (u, v); a camera-frame point
(x, y, z) (OpenCV: x right, y down, z forward) projects to (f x/z + cx, f y/z + cy).
"""
from __future__ import annotations

import torch


def weighted_umeyama(source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
                     with_scale: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Similarity ``(s, R, t)`` minimising ``sum_i w_i |s R source_i + t - target_i|^2``.

    Args:
        source, target: ``[N, 3]`` corresponding points.
        weights: optional ``[N]`` non-negative weights (uniform when None).
        with_scale: estimate ``s`` (else ``s = 1``).

    Returns:
        ``s`` scalar tensor, ``R [3,3]`` (det +1), ``t [3]``, in the input dtype (computed in float64).
    """
    dtype = source.dtype
    x = source.reshape(-1, 3).double()
    y = target.reshape(-1, 3).double()
    w = torch.ones(len(x), dtype=torch.float64, device=x.device) if weights is None else weights.reshape(-1).double()
    if len(x) < 3 or float(w.sum()) <= 0:
        raise ValueError("similarity registration needs at least 3 points with positive weight")
    w = w / w.sum()
    mx = (w[:, None] * x).sum(0)
    my = (w[:, None] * y).sum(0)
    xc, yc = x - mx, y - my
    cov = (w[:, None] * yc).T @ xc  # [3,3] sum_i w_i y_i x_i^T
    u, sing, vt = torch.linalg.svd(cov)
    d = torch.ones(3, dtype=torch.float64, device=x.device)
    if torch.det(u) * torch.det(vt) < 0:
        d[2] = -1.0
    rot = u @ torch.diag(d) @ vt
    if with_scale:
        var_x = (w * xc.square().sum(-1)).sum()
        scale = (sing * d).sum() / var_x.clamp(min=1e-30)
    else:
        scale = torch.ones((), dtype=torch.float64, device=x.device)
    trans = my - scale * rot @ mx
    return scale.to(dtype), rot.to(dtype), trans.to(dtype)


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[H, W, 2]`` integer pixel coordinates (u = column, v = row)."""
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                          torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack((u, v), dim=-1)


def estimate_focal(pts3d: torch.Tensor, mask: torch.Tensor | None = None, iterations: int = 10,
                   principal_point: tuple[float, float] | None = None) -> float:
    """Focal length (pixels) of a camera-frame pointmap, Weiszfeld's robust estimate.

    Starts from the least-squares ``mean(<xy/z, p>) / mean(|xy/z|^2)`` with ``p`` the pixel
    relative to the principal point (default (W/2, H/2)), then ``iterations`` reweightings by
    ``1 / max(|p - f xy/z|, 1e-8)``. Clipped at 0.

    Args:
        pts3d: ``[H, W, 3]`` points in the view's own camera frame.
        mask: optional ``bool [H, W]`` pixels to use.
    """
    h, w = pts3d.shape[:2]
    cx, cy = principal_point if principal_point is not None else (w / 2, h / 2)
    pts = pts3d.double()
    pix = pixel_grid(h, w, device=pts.device, dtype=torch.float64) - pts.new_tensor([cx, cy])
    xy = (pts[..., :2] / pts[..., 2:3]).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    if mask is not None:
        xy, pix = xy[mask], pix[mask]
    xy, pix = xy.reshape(-1, 2), pix.reshape(-1, 2)
    dot_xp = (xy * pix).sum(-1)
    dot_xx = xy.square().sum(-1)
    focal = dot_xp.mean() / dot_xx.mean()
    for _ in range(iterations):
        weight = (pix - focal * xy).norm(dim=-1).clip(min=1e-8).reciprocal()
        focal = (weight * dot_xp).mean() / (weight * dot_xx).mean()
    return max(float(focal), 0.0)
