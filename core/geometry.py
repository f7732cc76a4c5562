"""Camera geometry on numpy arrays: poses, Sim(3), projection, unprojection, focal, quaternions.

ReconBench's one geometry library. :mod:`core.geometry_torch` is its torch twin: the functions
that torch code needs, with the same names, argument order and conventions.

Conventions:

- Cameras are OpenCV (x right, y down, z forward). Extrinsics are ``cam_from_world`` (world ->
  camera), ``[...,4,4]`` or ``[...,3,4]`` (every function that takes a transform accepts both;
  the ones that return a transform return ``[...,4,4]``).
- Intrinsics ``K`` are ``[3,3]`` in pixels of the image they belong to. Pixel centres are at
  integer coordinates: pixel (row i, column j) is at ``(u, v) = (j, i)``, so the image centre is
  ``((W - 1) / 2, (H - 1) / 2)``, and a resize or crop maps pixels and intrinsics with
  :func:`resize_crop_pixels` and :func:`resize_crop_intrinsics`. A function that follows another
  convention says so in its name and docstring (:func:`dust3r_principal_point`).
- A Sim(3) transform is a ``4x4`` matrix ``[[s R, t], [0, 1]]`` mapping ``x -> s R x + t``.
- Quaternions are ``[..., 4]`` in XYZW order (scalar last), as VGGT and DUSt3R store them.
- Arrays are computed in float64; functions that return points keep a floating input's dtype
  where they say so.
"""
from __future__ import annotations

import numpy as np


# ---------------------------------------------------------------------------- transforms
def to_homogeneous(points: np.ndarray) -> np.ndarray:
    """``[..., D] -> [..., D+1]`` with a trailing 1 (dtype kept)."""
    points = np.asarray(points)
    return np.concatenate([points, np.ones(points.shape[:-1] + (1,), dtype=points.dtype)], axis=-1)


def as_4x4(transform: np.ndarray) -> np.ndarray:
    """``[...,3,4]`` or ``[...,4,4]`` -> float64 ``[...,4,4]`` (bottom row ``[0, 0, 0, 1]``)."""
    transform = np.asarray(transform, dtype=np.float64)
    if transform.shape[-2:] == (4, 4):
        return transform.copy()
    if transform.shape[-2:] != (3, 4):
        raise ValueError(f"expected a [...,3,4] or [...,4,4] transform, got {transform.shape}")
    out = np.zeros(transform.shape[:-2] + (4, 4))
    out[..., :3, :] = transform
    out[..., 3, 3] = 1.0
    return out


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply ``x -> A x + t`` of a ``[...,4,4]`` or ``[...,3,4]`` transform to ``points [...,N,3]``.

    One ``[4,4]`` transform applies to points of any shape ``[...,3]``; a batch ``[B...,4,4]`` applies
    to ``[B...,N,3]`` (leading axes broadcast). Computed in float64; a floating dtype is kept.
    """
    points = np.asarray(points)
    transform = np.asarray(transform, dtype=np.float64)
    linear, shift = transform[..., :3, :3], transform[..., :3, 3]
    if transform.ndim > 2:
        shift = shift[..., None, :]
    out = points.astype(np.float64) @ np.swapaxes(linear, -1, -2) + shift
    return out.astype(points.dtype if np.issubdtype(points.dtype, np.floating) else np.float64)


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """Inverse ``[...,4,4]`` of rigid or Sim(3) transforms ``[...,4,4]`` or ``[...,3,4]``.

    Exact for these (``(sR)^-1 = R^T / s``, the scale read from the first column), without a
    general matrix inverse.
    """
    transform = np.asarray(transform, dtype=np.float64)
    linear = transform[..., :3, :3]
    scale_sq = np.sum(linear[..., :, 0] ** 2, axis=-1)
    inverse_linear = np.swapaxes(linear, -1, -2) / scale_sq[..., None, None]
    out = np.zeros(transform.shape[:-2] + (4, 4))
    out[..., :3, :3] = inverse_linear
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", inverse_linear, transform[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def relative_pose(cam_from_world_a: np.ndarray, cam_from_world_b: np.ndarray) -> np.ndarray:
    """``cam_b_from_cam_a [...,4,4]``: camera a's coordinates -> camera b's (broadcasts)."""
    return as_4x4(cam_from_world_b) @ invert_transform(cam_from_world_a)


def sim3_matrix(scale: float, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 matrix of ``x -> scale * rotation @ x + translation`` (float64)."""
    out = np.eye(4)
    out[:3, :3] = scale * np.asarray(rotation, dtype=np.float64)
    out[:3, 3] = np.asarray(translation, dtype=np.float64)
    return out


def sim3_parts(transform: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(scale, rotation 3x3, translation 3) of a Sim(3) matrix (scale = cube root of det)."""
    transform = np.asarray(transform, dtype=np.float64)
    scale = float(np.cbrt(np.linalg.det(transform[:3, :3])))
    return scale, transform[:3, :3] / scale, transform[:3, 3].copy()


def camera_center(cam_from_world: np.ndarray) -> np.ndarray:
    """Camera centre ``[3]`` (or ``[...,3]`` for ``[...,4,4]`` / ``[...,3,4]``) in the world frame."""
    cam_from_world = np.asarray(cam_from_world, dtype=np.float64)
    rotation = cam_from_world[..., :3, :3]
    translation = cam_from_world[..., :3, 3]
    return -np.einsum("...ji,...j->...i", rotation, translation)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """``cam_from_world`` of an OpenCV camera at ``eye`` looking at ``target`` (image up ~ ``up``)."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to up")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])  # rows: camera axes in world coordinates
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = -rotation @ eye
    return out


# ---------------------------------------------------------------------------- intrinsics
def focal_from_fov(size: float, fov_deg: float) -> float:
    """Focal length of a pinhole camera whose ``fov_deg`` spans ``size`` (edge to edge).

    ``f = (size / 2) / tan(fov / 2)``, in the units of ``size`` (pixels for an image side,
    millimetres for a sensor side); :func:`fov_from_focal` is its inverse.
    """
    return 0.5 * size / np.tan(np.radians(fov_deg) / 2)


def fov_from_focal(size: float, focal: float) -> float:
    """Field of view in degrees that a focal length ``focal`` spans over ``size`` (same units):
    ``2 atan((size / 2) / f)``, the inverse of :func:`focal_from_fov`."""
    return float(2 * np.degrees(np.arctan(0.5 * size / focal)))


def intrinsics_from_fov(width: int, height: int, fov_x_deg: float) -> np.ndarray:
    """Pinhole intrinsics with square pixels, principal point at the image centre."""
    focal = focal_from_fov(width, fov_x_deg)
    return np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])


def _resize_crop_axes(scale, offset) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis ``(a, b)`` of ``u' = a u + b`` for :func:`resize_crop_pixels` (float64 ``[2]`` each)."""
    a = np.broadcast_to(np.asarray(scale, dtype=np.float64), (2,))
    t = np.broadcast_to(np.asarray(offset, dtype=np.float64), (2,))
    return a, t + (a - 1) / 2


def resize_crop_pixels(pixels: np.ndarray, scale, offset=(0.0, 0.0), inverse: bool = False) -> np.ndarray:
    """Pixel coordinates of an image -> those of its resized-then-cropped (or padded) version.

    ReconBench's convention, integer pixel centres: a resampling that aligns the two images'
    outer edges (PIL's ``resize``, ``cv2.resize``, ``torch.nn.functional.interpolate`` with
    ``align_corners=False``) maps the edge-based position ``u + 1/2`` to ``s (u + 1/2)``, and the
    crop or pad then adds ``t``::

        u' = s_x (u + 1/2) - 1/2 + t_x,    v' = s_y (v + 1/2) - 1/2 + t_y

    Args:
        pixels: ``[...,2]`` ``(u, v)`` (column, row) in the source image.
        scale: ``s`` = new size / old size, one number or ``(s_x, s_y)``.
        offset: ``(t_x, t_y)`` pixels added after the resize: minus the top-left corner of a
            crop, plus the padding before the image.
        inverse: map the new image's pixels back to the source image instead.
    Returns:
        ``[...,2]`` float64.
    """
    a, b = _resize_crop_axes(scale, offset)
    pixels = np.asarray(pixels, dtype=np.float64)
    return (pixels - b) / a if inverse else a * pixels + b


def resize_crop_intrinsics(intrinsics: np.ndarray, scale, offset=(0.0, 0.0), inverse: bool = False
                           ) -> np.ndarray:
    """Intrinsics ``[...,3,3]`` of the same camera in the resized-then-cropped image's pixels.

    The image transform of :func:`resize_crop_pixels` (same arguments, integer pixel centres),
    applied as ``K' = A K`` with ``A = [[s_x, 0, b_x], [0, s_y, b_y], [0, 0, 1]]``,
    ``b = t + (s - 1) / 2``, and computed as row operations so that an infinite focal (a
    degenerate prediction) stays in its own entry. ``inverse`` maps the new image's intrinsics
    back (``A^-1 K``). Returns float64.
    """
    a, b = _resize_crop_axes(scale, offset)
    k = np.asarray(intrinsics, dtype=np.float64)
    out = k.copy()
    for axis in (0, 1):
        if inverse:
            out[..., axis, :] = (k[..., axis, :] - b[axis] * k[..., 2, :]) / a[axis]
        else:
            out[..., axis, :] = a[axis] * k[..., axis, :] + b[axis] * k[..., 2, :]
    return out


def dust3r_principal_point(height: int, width: int) -> tuple[float, float]:
    """The principal point ``(W/2, H/2)`` that DUSt3R, Fast3R and VGGT assume, in pixels.

    Their code indexes pixels at integer coordinates, as we do, but puts the principal point at
    ``(W/2, H/2)``: half a pixel right of and below our image centre ``((W-1)/2, (H-1)/2)``. Ports
    use it wherever the authors' numbers must be reproduced (their focal estimate, PnP, the
    intrinsics they report); ReconBench's own cameras use the image centre.
    """
    return width / 2, height / 2


def dust3r_intrinsics(focal: float, height: int, width: int) -> np.ndarray:
    """``[3,3]`` intrinsics with square pixels of ``focal`` and :func:`dust3r_principal_point`."""
    cx, cy = dust3r_principal_point(height, width)
    return np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------------------- projection
def pixel_grid(height: int, width: int, dtype=np.float64) -> np.ndarray:
    """``[H,W,2]`` pixel coordinates ``(u, v) = (column, row)`` at integer pixel centres."""
    v, u = np.mgrid[0:height, 0:width]
    return np.stack([u, v], axis=-1).astype(dtype)


def project(points_world: np.ndarray, intrinsics: np.ndarray, cam_from_world: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Project world points into a camera.

    Args:
        points_world: ``[N,3]`` world points.
        intrinsics: ``[3,3]`` pixel intrinsics.
        cam_from_world: ``[4,4]`` or ``[3,4]`` world -> camera.
    Returns:
        ``uv [N,2]`` pixel coordinates (column, row) and ``z [N]`` camera depth; points with
        ``z <= 0`` get NaN pixels.
    """
    cam = transform_points(cam_from_world, np.asarray(points_world, dtype=np.float64))
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uvw = cam @ np.asarray(intrinsics, dtype=np.float64).T
        uv = uvw[:, :2] / uvw[:, 2:3]
    uv[z <= 0] = np.nan
    return uv, z


def unproject_pixels(pixels: np.ndarray, depth: np.ndarray | float, intrinsics: np.ndarray,
                     cam_from_world: np.ndarray | None = None) -> np.ndarray:
    """Lift pixels at given z-depths to 3-D points (the inverse of :func:`project`).

    Args:
        pixels: ``[...,N,2]`` ``(u, v)`` pixel coordinates.
        depth: ``[...,N]`` z-depth of each pixel (or a scalar).
        intrinsics: ``[...,3,3]`` (broadcasts with the pixels' leading axes).
        cam_from_world: ``[...,4,4]`` or ``[...,3,4]``; when None, points stay in the camera frame.
    Returns:
        ``[...,N,3]`` float64 points (world frame if a pose is given).
    """
    k_inv = np.linalg.inv(np.asarray(intrinsics, dtype=np.float64))
    rays = to_homogeneous(np.asarray(pixels, dtype=np.float64)) @ np.swapaxes(k_inv, -1, -2)
    points = rays * np.asarray(depth, dtype=np.float64)[..., None]
    if cam_from_world is not None:
        points = transform_points(invert_transform(cam_from_world), points)
    return points


def unproject_depth(depth: np.ndarray, intrinsics: np.ndarray, cam_from_world: np.ndarray | None = None,
                    mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Back-project the valid pixels of a z-depth map to a list of 3-D points.

    Args:
        depth: ``[H,W]`` z-depth, 0 or non-finite = invalid.
        intrinsics: ``[3,3]``.
        cam_from_world: ``[4,4]`` or ``[3,4]``; when None, points stay in the camera frame.
        mask: optional ``bool [H,W]`` of pixels to keep.
    Returns:
        ``points [M,3]`` float64 (world frame if a pose is given) and ``pixels [M,2]`` int
        (row, column) of each point.
    """
    depth = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        valid &= mask
    rows, cols = np.nonzero(valid)
    points = unproject_pixels(np.stack([cols, rows], axis=1), depth[rows, cols], intrinsics, cam_from_world)
    return points, np.stack([rows, cols], axis=1)


def depth_to_point_map(depth: np.ndarray, intrinsics: np.ndarray, cam_from_world: np.ndarray | None = None
                       ) -> np.ndarray:
    """z-depth maps -> point maps, one 3-D point per pixel.

    Args:
        depth: ``[...,H,W]`` z-depth; 0 or non-finite = invalid.
        intrinsics: ``[...,3,3]`` (leading axes broadcast with the depth's).
        cam_from_world: ``[...,4,4]`` or ``[...,3,4]``; when None, points stay in the camera frame.
    Returns:
        ``[...,H,W,3]`` float64 points (world frame if a pose is given), NaN at invalid pixels.
    """
    depth = np.asarray(depth, dtype=np.float64)
    h, w = depth.shape[-2:]
    lead = np.broadcast_shapes(depth.shape[:-2], np.shape(intrinsics)[:-2],
                               () if cam_from_world is None else np.shape(cam_from_world)[:-2])
    grid = np.broadcast_to(pixel_grid(h, w).reshape(-1, 2), lead + (h * w, 2))
    flat_depth = np.broadcast_to(depth, lead + (h, w)).reshape(lead + (h * w,))
    with np.errstate(invalid="ignore"):
        points = unproject_pixels(grid, flat_depth, intrinsics, cam_from_world)
    points[~(np.isfinite(flat_depth) & (flat_depth > 0))] = np.nan
    return points.reshape(lead + (h, w, 3))


def frustum_corners(intrinsics: np.ndarray, cam_from_world: np.ndarray, image_size: tuple[int, int],
                    depth: float) -> np.ndarray:
    """``[5,3]`` world points: camera centre then the image corners at ``depth`` (for drawing)."""
    h, w = image_size
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
    points = np.concatenate([np.zeros((1, 3)), unproject_pixels(corners, depth, intrinsics)])
    return transform_points(invert_transform(cam_from_world), points)


def transfer_pixel(uv: tuple[float, float], depth: np.ndarray, intrinsics: np.ndarray, cam_from_world: np.ndarray,
                   target_intrinsics: np.ndarray, target_cam_from_world: np.ndarray,
                   target_depths: np.ndarray | None = None, relative_tolerance: float = 0.03) -> list[dict]:
    """Where the surface point seen at pixel ``uv`` of one view appears in other views.

    Args:
        uv: (u, v) pixel of the source view (column, row; integer = pixel centre).
        depth: ``[H,W]`` z-depth of the source view; the nearest pixel's depth is used.
        intrinsics, cam_from_world: the source camera.
        target_intrinsics ``[V,3,3]``, target_cam_from_world ``[V,4,4]``: the other views.
        target_depths: optional ``[V,h,w]`` depth maps of the targets (in their own pixels) used
            for the occlusion test.
        relative_tolerance: a target depth smaller than ``z * (1 - tol)`` at the projected pixel
            means the point is hidden there.
    Returns:
        one dict per target: ``uv`` (or None behind the camera), ``z``, ``in_bounds``,
        ``occluded`` (None when unknown: no depth map, invalid depth or out of bounds) and
        ``point`` (the 3-D point, world frame). Empty list when the source depth is invalid.
    """
    h, w = depth.shape
    col, row = int(round(uv[0])), int(round(uv[1]))
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"pixel {uv} is outside the {w}x{h} source image")
    z = float(depth[row, col])
    if not np.isfinite(z) or z <= 0:
        return []
    point = unproject_pixels(np.array([uv], dtype=np.float64), z, intrinsics, cam_from_world)[0]
    out = []
    for index, (k, pose) in enumerate(zip(target_intrinsics, target_cam_from_world)):
        pixel, depth_in_target = project(point[None], k, pose)
        pixel, depth_in_target = pixel[0], float(depth_in_target[0])
        entry = {"uv": None if not np.isfinite(pixel).all() else (float(pixel[0]), float(pixel[1])),
                 "z": depth_in_target, "in_bounds": False, "occluded": None, "point": point}
        if entry["uv"] is not None and target_depths is not None:
            th, tw = target_depths[index].shape
            c, r = int(round(pixel[0])), int(round(pixel[1]))
            entry["in_bounds"] = bool(0 <= r < th and 0 <= c < tw)
            if entry["in_bounds"]:
                seen = float(target_depths[index][r, c])
                if np.isfinite(seen) and seen > 0:
                    entry["occluded"] = bool(seen < depth_in_target * (1 - relative_tolerance))
        elif entry["uv"] is not None:
            entry["in_bounds"] = bool(0 <= pixel[0] <= 2 * k[0, 2] + 1 and 0 <= pixel[1] <= 2 * k[1, 2] + 1)
        out.append(entry)
    return out


# ---------------------------------------------------------------------------- estimation
def umeyama_parts(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None,
                  with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted least-squares similarity ``(s, R, t)`` minimising ``sum_k w_k |s R x_k + t - y_k|^2``.

    Umeyama (1991): weighted centroids, SVD of the weighted cross-covariance ``sum w y x^T``, a
    sign flip of the last singular direction when needed so that ``det R = +1``.

    Args:
        source, target: ``[...,3]`` corresponding points x and y (flattened to ``[N,3]``); N >= 3
            non-collinear points with positive weight for a unique answer.
        weights: optional ``[...]`` non-negative weights (flattened to ``[N]``); uniform when None.
        with_scale: estimate ``s`` (Sim(3)); otherwise ``s = 1`` (rigid).
    Returns:
        ``s`` float, ``R [3,3]`` (a rotation), ``t [3]``, float64.
    Raises:
        ValueError: shapes differ, fewer than 3 points, or no positive weight.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.shape[-1] != 3:
        raise ValueError(f"umeyama needs matching [...,3] arrays, got {source.shape} and {target.shape}")
    x, y = source.reshape(-1, 3), target.reshape(-1, 3)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(x) < 3 or not w.sum() > 0:
        raise ValueError("umeyama needs at least 3 correspondences with positive weight")
    w = w / w.sum()
    mean_x, mean_y = w @ x, w @ y
    xc, yc = x - mean_x, y - mean_y
    covariance = (yc * w[:, None]).T @ xc
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2] = -1.0
    rotation = (u * sign) @ vt
    scale = float((singular * sign).sum() / np.sum(w * np.sum(xc**2, axis=1))) if with_scale else 1.0
    return scale, rotation, mean_y - scale * rotation @ mean_x


def umeyama(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None,
            with_scale: bool = True) -> np.ndarray:
    """Least-squares Sim(3) (or SE(3)) ``T`` with ``target ≈ T(source)`` as a 4x4 matrix
    ``[[s R, t], [0, 1]]``; see :func:`umeyama_parts` for the arguments."""
    return sim3_matrix(*umeyama_parts(source, target, weights, with_scale))


def focal_from_point_map(points: np.ndarray, principal_point: tuple[float, float],
                         mask: np.ndarray | None = None, iterations: int = 10) -> float:
    """Focal (pixels) of a pinhole camera that sees a camera-frame point map, Weiszfeld's estimate.

    With ``p = (u - cx, v - cy)`` the pixel relative to the principal point and ``q = (x/z, y/z)``
    its point's normalised coordinates, minimises ``sum |p - f q|`` (robust L1): starts from the
    least-squares ``f = mean(<q, p>) / mean(|q|^2)``, then ``iterations`` reweightings by
    ``1 / max(|p - f q|, 1e-8)`` (iteratively reweighted least squares). Points with ``z = 0``
    contribute ``q = 0``.

    Args:
        points: ``[H,W,3]`` points in the view's own camera frame (OpenCV); pixel (row v,
            column u) at integer coordinates.
        principal_point: ``(cx, cy)`` in pixels (:func:`dust3r_principal_point` to reproduce
            DUSt3R/Fast3R).
        mask: optional ``bool [H,W]`` of the pixels to use.
        iterations: number of reweightings (DUSt3R's aligner 10, Fast3R's pose estimation 100).
    Returns:
        The focal clipped to >= 0 (0.0 when the points are no projection with a positive focal);
        NaN when no pixel is used.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be [H,W,3], got {points.shape}")
    h, w = points.shape[:2]
    pixels = pixel_grid(h, w) - np.asarray(principal_point, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = np.nan_to_num(points[..., :2] / points[..., 2:3], nan=0.0, posinf=0.0, neginf=0.0)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        normalised, pixels = normalised[mask], pixels[mask]
    normalised, pixels = normalised.reshape(-1, 2), pixels.reshape(-1, 2)
    if len(pixels) == 0:
        return float("nan")
    dot_qp = np.sum(normalised * pixels, axis=-1)
    dot_qq = np.sum(normalised**2, axis=-1)
    focal = dot_qp.mean() / dot_qq.mean()
    for _ in range(iterations):
        weight = 1.0 / np.maximum(np.linalg.norm(pixels - focal * normalised, axis=-1), 1e-8)
        focal = (weight * dot_qp).mean() / (weight * dot_qq).mean()
    return float(max(focal, 0.0))


# ---------------------------------------------------------------------------- rotations
def quaternion_to_matrix(quaternion: np.ndarray) -> np.ndarray:
    """``[...,4]`` XYZW quaternions of any non-zero norm -> rotations ``[...,3,3]`` (float64).

    Normalises, then evaluates the homogeneous form ``[[xx - yy - zz + ww, 2 (xy - zw), ...]]``.
    """
    q = np.asarray(quaternion, dtype=np.float64)
    x, y, z, w = np.moveaxis(q / np.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
    xx, yy, zz, ww = x * x, y * y, z * z, w * w
    xy, zw, xz, yw, yz, xw = x * y, z * w, x * z, y * w, y * z, x * w
    m = np.stack((
        xx - yy - zz + ww, 2 * (xy - zw), 2 * (xz + yw),
        2 * (xy + zw), -xx + yy - zz + ww, 2 * (yz - xw),
        2 * (xz - yw), 2 * (yz + xw), -xx - yy + zz + ww), axis=-1)
    return m.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion(matrix: np.ndarray) -> np.ndarray:
    """Rotations ``[...,3,3]`` -> unit XYZW quaternions ``[...,4]`` with ``w >= 0`` (float64).

    Of the four algebraically equivalent formulas (one per component taken as pivot), the one
    with the largest norm is the best conditioned and is used.
    """
    m = np.asarray(matrix, dtype=np.float64)
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    candidates = np.stack((
        np.stack((m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1],
                  1 + trace), -1),
        np.stack((1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0],
                  m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] - m[..., 1, 2]), -1),
        np.stack((m[..., 0, 1] + m[..., 1, 0], 1 + m[..., 1, 1] - m[..., 0, 0] - m[..., 2, 2],
                  m[..., 1, 2] + m[..., 2, 1], m[..., 0, 2] - m[..., 2, 0]), -1),
        np.stack((m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                  1 + m[..., 2, 2] - m[..., 0, 0] - m[..., 1, 1], m[..., 1, 0] - m[..., 0, 1]), -1)), -2)
    best = np.linalg.norm(candidates, axis=-1).argmax(-1)
    q = np.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:4] < 0, -q, q)


def rotation_angle_deg(rotation_a: np.ndarray, rotation_b: np.ndarray) -> np.ndarray:
    """Angle in degrees of ``R_a^T R_b`` (broadcasts over leading axes).

    ``atan2(sin, cos)`` with ``cos = (tr R - 1) / 2`` and ``sin = |vee(R - R^T)| / 2``: accurate at
    every angle (``arccos`` of the trace alone loses half the digits near 0, ~1e-6 degrees).
    """
    relative = np.einsum("...ji,...jk->...ik", np.asarray(rotation_a, np.float64), np.asarray(rotation_b, np.float64))
    cos = (np.trace(relative, axis1=-2, axis2=-1) - 1) / 2
    skew = np.stack([relative[..., 2, 1] - relative[..., 1, 2], relative[..., 0, 2] - relative[..., 2, 0],
                     relative[..., 1, 0] - relative[..., 0, 1]], axis=-1)
    return np.degrees(np.arctan2(np.linalg.norm(skew, axis=-1) / 2, cos))


def angle_between_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees between vectors ``a`` and ``b`` (last axis), 0 for zero vectors."""
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.sum(a * b, axis=-1) / (na * nb)
    return np.degrees(np.arccos(np.clip(np.nan_to_num(cos, nan=1.0), -1.0, 1.0)))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def least_squares_ray_intersection(origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Point closest (in least squares) to the lines ``origin + t * direction``; ``[N,3] -> [3]``."""
    directions = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    projectors = np.eye(3)[None] - directions[:, :, None] * directions[:, None, :]
    lhs = projectors.sum(axis=0)
    rhs = np.einsum("nij,nj->i", projectors, origins)
    return np.linalg.solve(lhs, rhs)
