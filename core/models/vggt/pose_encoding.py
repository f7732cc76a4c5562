"""VGGT's 9-number camera encoding <-> camera-from-world extrinsics and pixel intrinsics.

Encoding ``[..., 9] = [tx, ty, tz, qx, qy, qz, qw, fov_h, fov_w]``: camera-from-world
translation, rotation quaternion (scalar last, need not be unit), vertical and horizontal field
of view in radians. Intrinsics: ``fy = (H/2) / tan(fov_h/2)``, ``fx = (W/2) / tan(fov_w/2)``,
principal point at the image centre ``(W/2, H/2)`` of the network's input image (H, W).
Cameras are OpenCV (x right, y down, z forward).
"""
from __future__ import annotations

import torch


def quaternion_to_matrix(quaternion: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` (x, y, z, w), any norm -> rotation ``[..., 3, 3]``."""
    i, j, k, r = torch.unbind(quaternion, -1)
    two_s = 2.0 / (quaternion * quaternion).sum(-1)
    m = torch.stack((
        1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
        two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
        two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j)), -1)
    return m.reshape(quaternion.shape[:-1] + (3, 3))


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation ``[..., 3, 3]`` -> unit quaternion ``[..., 4]`` (x, y, z, w) with w >= 0."""
    m = matrix.double()
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    candidates = torch.stack((
        torch.stack((m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                     m[..., 1, 0] - m[..., 0, 1], 1 + trace), -1),
        torch.stack((1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0],
                     m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] - m[..., 1, 2]), -1),
        torch.stack((m[..., 0, 1] + m[..., 1, 0], 1 + m[..., 1, 1] - m[..., 0, 0] - m[..., 2, 2],
                     m[..., 1, 2] + m[..., 2, 1], m[..., 0, 2] - m[..., 2, 0]), -1),
        torch.stack((m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                     1 + m[..., 2, 2] - m[..., 0, 0] - m[..., 1, 1], m[..., 1, 0] - m[..., 0, 1]),
                    -1)), -2)
    # the candidate with the largest norm is the best conditioned
    best = candidates.norm(dim=-1).argmax(-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[..., 3:4] < 0, -q, q)
    return q.to(matrix.dtype)


def pose_encoding_to_extrinsics_intrinsics(pose_encoding: torch.Tensor,
                                           image_size_hw: tuple[int, int],
                                           homogeneous: bool = False
                                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode VGGT camera encodings.

    Args:
        pose_encoding: ``[..., 9]``.
        image_size_hw: (H, W) of the network input, pixels.
        homogeneous: return ``[..., 4, 4]`` extrinsics instead of ``[..., 3, 4]``.

    Returns:
        ``(cam_from_world [..., 3, 4] or [..., 4, 4], intrinsics [..., 3, 3])`` in pixels of
        the network input.
    """
    h, w = image_size_hw
    rotation = quaternion_to_matrix(pose_encoding[..., 3:7])
    extrinsics = torch.cat((rotation, pose_encoding[..., :3, None]), dim=-1)
    if homogeneous:
        bottom = torch.zeros_like(extrinsics[..., :1, :])
        bottom[..., 0, 3] = 1
        extrinsics = torch.cat((extrinsics, bottom), dim=-2)
    fy = (h / 2.0) / torch.tan(pose_encoding[..., 7] / 2.0)
    fx = (w / 2.0) / torch.tan(pose_encoding[..., 8] / 2.0)
    intrinsics = torch.zeros(pose_encoding.shape[:-1] + (3, 3), dtype=pose_encoding.dtype,
                             device=pose_encoding.device)
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2] = w / 2
    intrinsics[..., 1, 2] = h / 2
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


def extrinsics_intrinsics_to_pose_encoding(extrinsics: torch.Tensor, intrinsics: torch.Tensor,
                                           image_size_hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`pose_encoding_to_extrinsics_intrinsics` (principal point ignored):
    ``extrinsics [..., 3|4, 4]``, ``intrinsics [..., 3, 3]`` -> ``[..., 9]``."""
    h, w = image_size_hw
    quat = matrix_to_quaternion(extrinsics[..., :3, :3])
    fov_h = 2 * torch.atan((h / 2) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((w / 2) / intrinsics[..., 0, 0])
    return torch.cat((extrinsics[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]), dim=-1)
