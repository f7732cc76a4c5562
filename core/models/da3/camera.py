"""DA3's camera decoder (pose from a camera token), camera encoder (known poses in) and the
9-number pose encoding between them.

Pose encoding ``[..., 9]``: camera-to-world translation T (3), the camera-to-world rotation as a
quaternion x, y, z, w (4; the decoder's is not normalised), fov_h, fov_w (radians). Cameras are
OpenCV; extrinsics are world-to-camera ``[..., 3, 4]`` (or 4x4), intrinsics in pixels of the
network input (principal point at (W/2, H/2), the reference's convention).

Names follow the checkpoints: ``model.cam_dec.backbone.{0,2}``, ``fc_t``, ``fc_qvec``,
``fc_fov.0``; ``model.cam_enc.pose_branch.fc{1,2}``, ``token_norm``, ``trunk.i``, ``trunk_norm``.
"""
from __future__ import annotations

import torch
from torch import nn

from core.models.vggt.layers import Block, Mlp

from .config import DA3Config


def quaternion_to_rotation(q: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` x, y, z, w (any non-zero norm) -> ``[..., 3, 3]``, with ``s = 2/|q|²``."""
    x, y, z, w = q.unbind(-1)
    s = 2.0 / (q * q).sum(-1)
    m = torch.stack((
        1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w),
        s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w),
        s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)), -1)
    return m.reshape(q.shape[:-1] + (3, 3))


def rotation_to_quaternion(m: torch.Tensor) -> torch.Tensor:
    """``[..., 3, 3]`` rotations -> unit x, y, z, w quaternions with w >= 0 (of the four
    equivalent formulas, the best-conditioned one)."""
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    trace = m00 + m11 + m22
    candidates = torch.stack((
        torch.stack((m21 - m12, m02 - m20, m10 - m01, 1 + trace), -1),
        torch.stack((1 + m00 - m11 - m22, m01 + m10, m02 + m20, m21 - m12), -1),
        torch.stack((m01 + m10, 1 + m11 - m00 - m22, m12 + m21, m02 - m20), -1),
        torch.stack((m02 + m20, m12 + m21, 1 + m22 - m00 - m11, m10 - m01), -1)), -2)
    best = candidates.norm(dim=-1).argmax(-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., 3:4] < 0, -q, q)


def invert_rigid(transform: torch.Tensor) -> torch.Tensor:
    """``[..., 3 or 4, 4]`` rigid ``[R | t]`` -> ``[..., 4, 4]`` ``[Rᵀ | -Rᵀ t]``."""
    r, t = transform[..., :3, :3], transform[..., :3, 3:]
    rt = r.transpose(-1, -2)
    top = torch.cat((rt, -rt @ t), dim=-1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1
    return torch.cat((top, bottom), dim=-2)


def pose_encoding_to_cameras(pose_enc: torch.Tensor, image_hw: tuple[int, int]
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``[..., 9]`` into (world-to-camera ``[..., 3, 4]``, intrinsics ``[..., 3, 3]``):
    ``c2w = [R(q) | T]``, extrinsics ``[Rᵀ | -Rᵀ T]``; ``fx = (W/2)/max(tan(fov_w/2), 1e-6)``,
    ``fy`` likewise with H and fov_h, principal point (W/2, H/2)."""
    h, w = image_hw
    r = quaternion_to_rotation(pose_enc[..., 3:7])
    c2w = torch.cat((r, pose_enc[..., :3, None]), dim=-1)
    extrinsics = invert_rigid(c2w)[..., :3, :]
    fx = (w / 2) / torch.clamp(torch.tan(pose_enc[..., 8] / 2), min=1e-6)
    fy = (h / 2) / torch.clamp(torch.tan(pose_enc[..., 7] / 2), min=1e-6)
    k = torch.zeros(pose_enc.shape[:-1] + (3, 3), dtype=pose_enc.dtype, device=pose_enc.device)
    k[..., 0, 0], k[..., 1, 1] = fx, fy
    k[..., 0, 2], k[..., 1, 2], k[..., 2, 2] = w / 2, h / 2, 1.0
    return extrinsics, k


def cameras_to_pose_encoding(extrinsics: torch.Tensor, intrinsics: torch.Tensor,
                             image_hw: tuple[int, int]) -> torch.Tensor:
    """World-to-camera ``[..., 3 or 4, 4]`` and intrinsics ``[..., 3, 3]`` (network pixels) ->
    ``[..., 9]``: c2w translation, c2w quaternion (w >= 0), ``2 atan((H/2)/fy)``,
    ``2 atan((W/2)/fx)``."""
    h, w = image_hw
    c2w = invert_rigid(extrinsics)
    fov_h = 2 * torch.atan((h / 2) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((w / 2) / intrinsics[..., 0, 0])
    return torch.cat((c2w[..., :3, 3], rotation_to_quaternion(c2w[..., :3, :3]),
                      fov_h[..., None], fov_w[..., None]), dim=-1)


class CameraDec(nn.Module):
    """Camera token ``[B, S, 2D]`` -> pose encoding ``[B, S, 9]``: Linear-ReLU-Linear-ReLU
    (width 2D), then ``fc_t``, ``fc_qvec`` and ReLU(``fc_fov``)."""

    def __init__(self, config: DA3Config) -> None:
        super().__init__()
        d = config.head_dim_in
        self.backbone = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU())
        self.fc_t = nn.Linear(d, 3)
        self.fc_qvec = nn.Linear(d, 4)
        self.fc_fov = nn.Sequential(nn.Linear(d, 2), nn.ReLU())

    def forward(self, cam_token: torch.Tensor) -> torch.Tensor:
        x = self.backbone(cam_token.float())
        return torch.cat((self.fc_t(x), self.fc_qvec(x), self.fc_fov(x)), dim=-1)


class CameraEnc(nn.Module):
    """Known cameras -> one token per view ``[B, S, D]`` (replaces token 0 at ``alt_start``):
    pose encoding, MLP 9 -> D/2 -> D (GELU), ``token_norm``, a transformer over the views
    (pre-LN eps 1e-5, LayerScale, no RoPE or qk-norm), ``trunk_norm``."""

    def __init__(self, config: DA3Config) -> None:
        super().__init__()
        d = config.embed_dim
        self.pose_branch = Mlp(9, d // 2, d)
        self.token_norm = nn.LayerNorm(d)
        self.trunk = nn.Sequential(*(Block(d, config.cam_enc_num_heads, config.mlp_ratio,
                                           qk_norm=False, init_values=0.01, norm_eps=1e-5)
                                     for _ in range(config.cam_enc_trunk_depth)))
        self.trunk_norm = nn.LayerNorm(d)

    def encode(self, extrinsics: torch.Tensor, intrinsics: torch.Tensor,
               image_hw: tuple[int, int]) -> torch.Tensor:
        """The pose encoding the encoder reads, ``[B, S, 9]`` float32."""
        return cameras_to_pose_encoding(extrinsics.float(), intrinsics.float(), image_hw)

    def forward(self, extrinsics: torch.Tensor, intrinsics: torch.Tensor,
                image_hw: tuple[int, int]) -> torch.Tensor:
        """``extrinsics [B, S, 4, 4]`` world-to-camera (normalised, see
        :func:`.processing.normalize_extrinsics`), ``intrinsics [B, S, 3, 3]`` -> ``[B, S, D]``."""
        x = self.token_norm(self.pose_branch(self.encode(extrinsics, intrinsics, image_hw)))
        return self.trunk_norm(self.trunk(x))

