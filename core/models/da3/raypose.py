"""Cameras from DA3's per-pixel rays: the authors' weighted-homography RANSAC, replayable.

A view's rays ``[h', w', 6]`` hold, per pixel, a world-frame ray direction d and the camera
centre. For a pinhole camera d ∝ R K⁻¹ (q, 1) with q the pixel in units where the image spans
[-1, 1] (pixel centres ``q = (-1 + (2j + 1)/w', -1 + (2i + 1)/h')``), so the map
``q -> (d_x/d_z, d_y/d_z)`` is a homography. The decoder (as the reference
``get_extrinsic_from_camray``):

1. weights = ray confidence, 0 where ``|d_z| <= 1e-4``; candidates = the
   ``n_sample = max(8, int(0.3 N))`` most confident pixels (``argsort`` descending);
2. RANSAC: iteration t fits a weighted DLT homography (rows scaled by √w, last right singular
   vector, divided by H₃₃) to candidates ``draws[t]`` (8 indices into the candidate list, the
   same draws for every view); score = summed weight of pixels reprojecting within 0.2; the
   first best iteration's inliers are refitted (above 8000 inliers: 8000 drawn at random among
   the 95 % most confident, a further draw);
3. A = the homography (negated if det < 0), QL decomposition ``A = Q L`` (QR of A·P, P the
   exchange matrix, signs fixed by diag(L)), ``L /= L₃₃``; focal ``1/(L₁₁, L₂₂)`` and principal
   point ``(L₃₁, L₃₂) + 1`` in units where the image spans 2; camera centre = the
   confidence-weighted mean of the centre channels; camera-to-world ``[Q | centre]``.

Intrinsics in network pixels: ``fx = f_x W/2, fy = f_y H/2, cx = p_x W/2, cy = p_y H/2``.
(With a homography of the form R K⁻¹, K upper-triangular, the QL factor carries the principal
point only when it is at the image centre: the reference's decomposition, kept as it is.)

The reference draws from torch's global generator; here the draws come from a
``torch.Generator`` the caller seeds (or are passed in, e.g. a fixture's recorded draws), and
are returned so a run can be replayed exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .camera import invert_rigid

N_ITER = 100
SAMPLE_SIZE = 8
SAMPLE_RATIO = 0.3
REPROJ_THRESHOLD = 0.2
Z_THRESHOLD = 1e-4
MAX_INLIERS = 8000


@dataclass
class RayCameras:
    """Cameras decoded from rays.

    Attributes:
        extrinsics: ``[B, S, 3, 4]`` world-to-camera (OpenCV).
        intrinsics: ``[B, S, 3, 3]`` in pixels of the network input.
        draws: ``int64 [n_iter, 8]`` the RANSAC draws used (indices into the candidate list).
        inliers: ``[B, S]`` number of inliers refitted per view.
    """

    extrinsics: torch.Tensor
    intrinsics: torch.Tensor
    draws: torch.Tensor
    inliers: torch.Tensor


def candidate_count(num_pixels: int) -> int:
    """``max(8, int(0.3 N))``: how many of the most confident pixels RANSAC samples from."""
    return max(SAMPLE_SIZE, int(num_pixels * SAMPLE_RATIO))


def ransac_draws(num_candidates: int, generator: torch.Generator | None = None,
                 n_iter: int = N_ITER) -> torch.Tensor:
    """``int64 [n_iter, 8]``: the first 8 of a random permutation of the candidates, per
    iteration (the reference's draws, from ``generator``)."""
    return torch.stack([torch.randperm(num_candidates, generator=generator)[:SAMPLE_SIZE]
                        for _ in range(n_iter)])


def weighted_homography(src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor
                        ) -> torch.Tensor:
    """Weighted DLT: ``[..., K, 2]`` points, ``[..., K]`` weights -> ``[..., 3, 3]`` H with
    ``dst ~ H (src, 1)`` and ``H₃₃ = 1`` (rows scaled by √w; last right singular vector)."""
    w = weight.sqrt()[..., None]
    x, y = src[..., :1], src[..., 1:2]
    u, v = dst[..., :1], dst[..., 1:2]
    zero = torch.zeros_like(x)
    rows_u = torch.cat((-x * w, -y * w, -w, zero, zero, zero, x * u * w, y * u * w, u * w), -1)
    rows_v = torch.cat((zero, zero, zero, -x * w, -y * w, -w, x * v * w, y * v * w, v * w), -1)
    system = torch.cat((rows_u, rows_v), dim=-2)
    vh = torch.linalg.svd(system, full_matrices=False).Vh
    h = vh[..., -1, :].reshape(*vh.shape[:-2], 3, 3)
    return h / h[..., 2:3, 2:3]


def ql_decomposition(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``a [3, 3] = Q L``, Q orthogonal, L lower-triangular with a positive diagonal (QR of
    ``a P``, P the exchange matrix)."""
    p = torch.tensor([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=a.dtype, device=a.device)
    q_tilde, r_tilde = torch.linalg.qr(a @ p)
    q, l = q_tilde @ p, p @ r_tilde @ p
    sign = torch.sign(torch.diagonal(l))
    return q * sign[None, :], l * sign[:, None]


def _pixel_grid(height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[h·w, 2]`` pixel centres (x, y) in [-1, 1] units, row-major."""
    xs = -1 + (2 * torch.arange(width, dtype=dtype, device=device) + 1) / width
    ys = -1 + (2 * torch.arange(height, dtype=dtype, device=device) + 1) / height
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((xx.reshape(-1), yy.reshape(-1)), -1)


def _decode_view(src, dst, weight, draws, n_sample, generator):
    order = torch.argsort(weight, descending=True)
    candidates = order[:n_sample][draws]                              # [n_iter, 8]
    h_batch = weighted_homography(src[candidates], dst[candidates], weight[candidates])
    homo = torch.cat((src, torch.ones_like(src[:, :1])), dim=-1)      # [N, 3]
    proj = homo[None] @ h_batch.transpose(1, 2)                        # [n_iter, N, 3]
    error = (proj[..., :2] / proj[..., 2:3] - dst[None]).square().sum(-1).sqrt()
    inlier = error < REPROJ_THRESHOLD
    best = torch.argmax((inlier * weight[None]).sum(-1))
    mask = inlier[best]
    src_in, dst_in, w_in = src[mask], dst[mask], weight[mask]
    if len(w_in) > MAX_INLIERS:
        ranked = torch.argsort(w_in, descending=True)
        ranked = ranked[:max(int(len(ranked) * 0.95), MAX_INLIERS)]
        ranked = ranked[torch.randperm(len(ranked), generator=generator)[:MAX_INLIERS]]
        src_in, dst_in, w_in = src_in[ranked], dst_in[ranked], w_in[ranked]
    return weighted_homography(src_in, dst_in, w_in), int(mask.sum())


def rays_to_cameras(ray: torch.Tensor, ray_conf: torch.Tensor, image_hw: tuple[int, int],
                    draws: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> RayCameras:
    """Decode cameras from rays (module docstring).

    Args:
        ray: ``[B, S, h', w', 6]`` directions and centres (world frame).
        ray_conf: ``[B, S, h', w']`` confidences (> 0).
        image_hw: (H, W) of the network input (intrinsics are in its pixels).
        draws: ``int64 [n_iter, 8]`` RANSAC draws to replay; None draws them from ``generator``.
        generator: source of the draws (and of the >8000-inlier subsample); None: torch's
            global generator, as the reference.
    """
    b, s, rh, rw, _ = ray.shape
    height, width = image_hw
    rays = ray.reshape(b * s, rh * rw, 6).float()
    weight = ray_conf.reshape(b * s, rh * rw).float().clone()
    n_sample = candidate_count(rh * rw)
    if draws is None:
        draws = ransac_draws(n_sample, generator)
    draws = draws.to(rays.device)
    src = _pixel_grid(rh, rw, rays.dtype, rays.device)
    rotations, focals, centres_pp, centres, counts = [], [], [], [], []
    for view in range(b * s):
        d = rays[view, :, :3]
        valid = d[:, 2].abs() > Z_THRESHOLD
        w = torch.where(valid, weight[view], torch.zeros_like(weight[view]))
        dst = torch.where(valid[:, None], d[:, :2] / torch.where(valid, d[:, 2], 1.0)[:, None],
                          d[:, :2])
        h, count = _decode_view(src, dst, w, draws, n_sample, generator)
        if torch.linalg.det(h) < 0:
            h = -h
        q, l = ql_decomposition(h)
        l = l / l[2, 2]
        rotations.append(q)
        focals.append(1.0 / torch.stack((l[0, 0], l[1, 1])))
        centres_pp.append(torch.stack((l[2, 0], l[2, 1])) + 1.0)
        centres.append((rays[view, :, 3:] * w[:, None]).sum(0) / w.sum())
        counts.append(count)
    c2w = torch.cat((torch.stack(rotations), torch.stack(centres)[:, :, None]), dim=-1)
    extrinsics = invert_rigid(c2w)[:, :3].reshape(b, s, 3, 4)
    focal, pp = torch.stack(focals), torch.stack(centres_pp)
    k = torch.zeros(b * s, 3, 3, dtype=rays.dtype, device=rays.device)
    k[:, 0, 0], k[:, 1, 1] = focal[:, 0] * width / 2, focal[:, 1] * height / 2
    k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = pp[:, 0] * width / 2, pp[:, 1] * height / 2, 1.0
    return RayCameras(extrinsics, k.reshape(b, s, 3, 3), draws.cpu(),
                      torch.tensor(counts).reshape(b, s))
