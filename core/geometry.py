"""Camera geometry on numpy arrays: projection, unprojection, poses, Sim(3), frustums.

Conventions: OpenCV cameras (x right, y down, z forward); ``cam_from_world`` is 4x4
world -> camera; intrinsics ``K`` 3x3 in pixels, with integer pixel coordinates at pixel
centres (pixel (row i, column j) is at ``(u, v) = (j, i)``).  A Sim(3) transform is a 4x4
matrix ``[[s R, t], [0, 1]]`` mapping ``x -> s R x + t``.
"""
from __future__ import annotations

import numpy as np


def to_homogeneous(points: np.ndarray) -> np.ndarray:
    """``[N,3] -> [N,4]`` with a trailing 1."""
    return np.concatenate([points, np.ones((len(points), 1), dtype=points.dtype)], axis=1)


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 (rigid, Sim(3) or affine) transform to ``points [N,3]``; dtype preserved."""
    transform = np.asarray(transform, dtype=np.float64)
    out = np.asarray(points, dtype=np.float64) @ transform[:3, :3].T + transform[:3, 3]
    return out.astype(points.dtype if np.issubdtype(points.dtype, np.floating) else np.float64)


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid or Sim(3) transform (exact, without a general inverse)."""
    transform = np.asarray(transform, dtype=np.float64)
    linear = transform[:3, :3]
    scale_sq = np.sum(linear[:, 0] ** 2)
    inverse_linear = linear.T / scale_sq
    out = np.eye(4)
    out[:3, :3] = inverse_linear
    out[:3, 3] = -inverse_linear @ transform[:3, 3]
    return out


def sim3_matrix(scale: float, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 matrix of ``x -> scale * rotation @ x + translation``."""
    out = np.eye(4)
    out[:3, :3] = scale * np.asarray(rotation, dtype=np.float64)
    out[:3, 3] = np.asarray(translation, dtype=np.float64)
    return out


def sim3_parts(transform: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(scale, rotation 3x3, translation 3) of a Sim(3) matrix."""
    transform = np.asarray(transform, dtype=np.float64)
    scale = float(np.cbrt(np.linalg.det(transform[:3, :3])))
    return scale, transform[:3, :3] / scale, transform[:3, 3].copy()


def project(points_world: np.ndarray, intrinsics: np.ndarray, cam_from_world: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Project world points into a camera.

    Args:
        points_world: ``[N,3]`` world points.
        intrinsics: ``[3,3]`` pixel intrinsics.
        cam_from_world: ``[4,4]`` world -> camera.
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


def pixel_grid(height: int, width: int) -> np.ndarray:
    """``[H,W,2]`` float64 pixel coordinates (u = column, v = row)."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.stack([u, v], axis=-1)


def unproject_depth(depth: np.ndarray, intrinsics: np.ndarray, cam_from_world: np.ndarray | None = None,
                    mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Back-project a z-depth map to 3-D points.

    Args:
        depth: ``[H,W]`` z-depth, 0 or non-finite = invalid.
        intrinsics: ``[3,3]``.
        cam_from_world: ``[4,4]``; when None, points stay in the camera frame.
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
    z = depth[rows, cols]
    k_inv = np.linalg.inv(np.asarray(intrinsics, dtype=np.float64))
    rays = np.stack([cols, rows, np.ones_like(cols)], axis=1).astype(np.float64) @ k_inv.T
    points = rays * z[:, None]
    if cam_from_world is not None:
        points = transform_points(invert_transform(cam_from_world), points)
    return points, np.stack([rows, cols], axis=1)


def depth_to_point_map(depth: np.ndarray, intrinsics: np.ndarray, cam_from_world: np.ndarray | None = None
                       ) -> np.ndarray:
    """``[H,W]`` depth -> ``[H,W,3]`` point map (world frame if a pose is given; NaN where invalid)."""
    h, w = depth.shape
    grid = pixel_grid(h, w).reshape(-1, 2)
    rays = np.concatenate([grid, np.ones((len(grid), 1))], axis=1) @ np.linalg.inv(intrinsics).T
    points = rays * np.asarray(depth, dtype=np.float64).reshape(-1, 1)
    if cam_from_world is not None:
        points = transform_points(invert_transform(cam_from_world), points)
    points[~(np.isfinite(depth.reshape(-1)) & (depth.reshape(-1) > 0))] = np.nan
    return points.reshape(h, w, 3)


def camera_center(cam_from_world: np.ndarray) -> np.ndarray:
    """Camera centre ``[3]`` (or ``[N,3]`` for ``[N,4,4]``) in the world frame."""
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


def intrinsics_from_fov(width: int, height: int, fov_x_deg: float) -> np.ndarray:
    """Pinhole intrinsics with square pixels, principal point at the image centre."""
    focal = 0.5 * width / np.tan(np.radians(fov_x_deg) / 2)
    return np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])


def umeyama(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None,
            with_scale: bool = True) -> np.ndarray:
    """Least-squares Sim(3) (or SE(3)) ``T`` with ``target ≈ T(source)`` (Umeyama 1991).

    Args:
        source, target: ``[N,3]`` corresponding points, N >= 3 non-collinear for a unique answer.
        weights: optional ``[N]`` non-negative weights.
        with_scale: estimate the scale (Sim(3)); otherwise rigid.
    Returns:
        4x4 matrix ``[[s R, t], [0, 1]]``.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 3:
        raise ValueError(f"umeyama needs matching [N,3] arrays, got {source.shape} and {target.shape}")
    if len(source) < 3:
        raise ValueError("umeyama needs at least 3 correspondences")
    w = np.ones(len(source)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_s = w @ source
    mu_t = w @ target
    src = source - mu_s
    tgt = target - mu_t
    covariance = (tgt * w[:, None]).T @ src
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1
    rotation = u @ sign @ vt
    if with_scale:
        variance = np.sum(w * np.sum(src**2, axis=1))
        scale = float(np.trace(np.diag(singular) @ sign) / variance)
    else:
        scale = 1.0
    return sim3_matrix(scale, rotation, mu_t - scale * rotation @ mu_s)


def rotation_angle_deg(rotation_a: np.ndarray, rotation_b: np.ndarray) -> np.ndarray:
    """Angle in degrees of ``R_a^T R_b`` (broadcasts over leading axes)."""
    relative = np.einsum("...ji,...jk->...ik", rotation_a, rotation_b)
    cos = (np.trace(relative, axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


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


def frustum_corners(intrinsics: np.ndarray, cam_from_world: np.ndarray, image_size: tuple[int, int],
                    depth: float) -> np.ndarray:
    """``[5,3]`` world points: camera centre then the image corners at ``depth`` (for drawing)."""
    h, w = image_size
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], dtype=np.float64)
    rays = corners @ np.linalg.inv(intrinsics).T * depth
    points = np.concatenate([np.zeros((1, 3)), rays])
    return transform_points(invert_transform(cam_from_world), points)


def least_squares_ray_intersection(origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Point closest (in least squares) to the lines ``origin + t * direction``; ``[N,3] -> [3]``."""
    directions = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    projectors = np.eye(3)[None] - directions[:, :, None] * directions[:, None, :]
    lhs = projectors.sum(axis=0)
    rhs = np.einsum("nij,nj->i", projectors, origins)
    return np.linalg.solve(lhs, rhs)


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
    ray = np.linalg.inv(intrinsics) @ np.array([uv[0], uv[1], 1.0])
    point = transform_points(invert_transform(cam_from_world), (ray * z)[None])[0]
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
