"""VGGT's 9-number camera encoding <-> camera-from-world extrinsics and pixel intrinsics.

Encoding ``[..., 9] = [tx, ty, tz, qx, qy, qz, qw, fov_h, fov_w]``: camera-from-world
translation, rotation quaternion (scalar last, need not be unit), vertical and horizontal field
of view in radians. Intrinsics: ``fy = (H/2) / tan(fov_h/2)``, ``fx = (W/2) / tan(fov_w/2)``,
principal point ``(W/2, H/2)`` of the network's input image (H, W): the centre in continuous
coordinates, half a pixel off ReconBench's integer-centre one (the numbers of
:func:`core.geometry.dust3r_principal_point`; see :mod:`.processing`).
Cameras are OpenCV (x right, y down, z forward). Quaternion <-> matrix conversions are
:mod:`core.geometry_torch`'s (XYZW).
"""
from __future__ import annotations

import torch

from core.geometry import dust3r_principal_point
from core.geometry_torch import as_4x4, matrix_to_quaternion, quaternion_to_matrix


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
        extrinsics = as_4x4(extrinsics)
    fy = (h / 2.0) / torch.tan(pose_encoding[..., 7] / 2.0)
    fx = (w / 2.0) / torch.tan(pose_encoding[..., 8] / 2.0)
    intrinsics = torch.zeros(pose_encoding.shape[:-1] + (3, 3), dtype=pose_encoding.dtype,
                             device=pose_encoding.device)
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2], intrinsics[..., 1, 2] = dust3r_principal_point(h, w)
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
