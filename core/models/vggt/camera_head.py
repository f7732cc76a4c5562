"""VGGT's camera head: iterative refinement of a 9-number pose encoding per frame.

Reads the camera token (token 0) of the last trunk layer, ``[B, S, 2C]``, and refines the
encoding ``[tx, ty, tz, qx, qy, qz, qw, fov_h, fov_w]`` (camera-from-world translation,
unit-free quaternion with the scalar last, vertical and horizontal field of view in radians)
over ``iterations`` steps: the current estimate modulates the tokens (adaLN: shift, scale,
gate), a small transformer trunk runs, and an MLP predicts the update. Field of view goes
through ReLU, translation and quaternion stay linear.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Block, Mlp

POSE_ENCODING_DIM = 9


class CameraHead(nn.Module):
    """Names (under ``camera_head.``): ``token_norm``, ``trunk.i``, ``trunk_norm``,
    ``empty_pose_tokens [1,1,9]``, ``embed_pose``, ``poseLN_modulation.1``, ``pose_branch``.

    Args:
        dim_in: token width (2C).
        trunk_depth, num_heads: the trunk's size.
        iterations: refinement steps (4).
    """

    def __init__(self, dim_in: int, trunk_depth: int = 4, num_heads: int = 16,
                 mlp_ratio: float = 4.0, init_values: float = 0.01, iterations: int = 4) -> None:
        super().__init__()
        self.iterations = iterations
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk = nn.Sequential(*[
            Block(dim_in, num_heads, mlp_ratio, qk_norm=False, init_values=init_values)
            for _ in range(trunk_depth)])
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENCODING_DIM))
        self.embed_pose = nn.Linear(POSE_ENCODING_DIM, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_ENCODING_DIM)

    def forward(self, last_layer_tokens: torch.Tensor) -> list[torch.Tensor]:
        """``last_layer_tokens [B, S, P, 2C]`` (or just the camera tokens ``[B, S, 2C]``) ->
        list of ``iterations`` activated pose encodings ``[B, S, 9]`` (the last is final)."""
        tokens = last_layer_tokens[:, :, 0] if last_layer_tokens.dim() == 4 else last_layer_tokens
        tokens = self.token_norm(tokens)
        b, s, _ = tokens.shape
        normed = self.adaln_norm(tokens)
        encoding = None
        history = []
        for _ in range(self.iterations):
            source = self.empty_pose_tokens.expand(b, s, -1) if encoding is None else encoding.detach()
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(source)).chunk(3, dim=-1)
            modulated = gate * (normed * (1 + scale) + shift) + tokens
            delta = self.pose_branch(self.trunk_norm(self.trunk(modulated)))
            encoding = delta if encoding is None else encoding + delta
            history.append(activate_pose(encoding))
        return history


def activate_pose(encoding: torch.Tensor) -> torch.Tensor:
    """Translation and quaternion linear, field of view through ReLU."""
    return torch.cat((encoding[..., :7], F.relu(encoding[..., 7:])), dim=-1)
