"""Losses of 3D-LMNet: Chamfer (auto-encoder), latent matching, diversity, k-NN repulsion."""
from __future__ import annotations

import math

import numpy as np
import torch


def nearest_indices(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """``[B,N]`` index of each query's nearest reference (Euclidean), from ``[B,N,3]`` and ``[B,M,3]``.

    Found with a k-d tree on detached values (no gradient flows through an argmin anyway):
    much faster on the CPU than a dense ``[B,N,M]`` distance matrix and its backward pass.
    """
    from scipy.spatial import cKDTree

    q = queries.detach().cpu().double().numpy()
    r = references.detach().cpu().double().numpy()
    out = np.stack([cKDTree(r[b]).query(q[b], k=1)[1] for b in range(len(q))])
    return torch.from_numpy(out).to(queries.device)


def _gather(points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(points, 1, index[..., None].expand(*index.shape, points.shape[-1]))


def chamfer_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared nearest distance pred->target plus target->pred, averaged over the batch.

    Args:
        pred: ``[B,N,3]``; target: ``[B,M,3]``. Returns a scalar (squared units); the gradient is
        that of ``min`` (it flows to each point and its nearest partner).
    """
    to_target = (pred - _gather(target, nearest_indices(pred, target))).square().sum(-1)
    to_pred = (target - _gather(pred, nearest_indices(target, pred))).square().sum(-1)
    return to_target.mean() + to_pred.mean()


def latent_matching_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean absolute (``l1``) or squared (``l2``) difference of codes ``[B,D]``."""
    diff = pred - target
    return diff.abs().mean() if kind == "l1" else diff.square().mean()


def view_ambiguity(azimuth_deg: torch.Tensor) -> torch.Tensor:
    """``[B]`` in [0,1]: 0 for a view from the front (azimuth 0), 1 from the back (180 deg).

    ``(1 - cos(azimuth)) / 2``: the unseen side of the object grows as the camera goes round.
    """
    return (1.0 - torch.cos(azimuth_deg * (math.pi / 180.0))) / 2.0


def diversity_loss(sigma: torch.Tensor, azimuth_deg: torch.Tensor, alpha: float) -> torch.Tensor:
    """Azimuth-dependent diversity loss: mean over batch and code of ``(sigma - alpha*a(az))^2``.

    ``sigma [B,D]`` is the predicted standard deviation; ``a`` is :func:`view_ambiguity`, so
    the model is pushed to be uncertain (diverse samples) for views hiding more of the object.
    """
    target = alpha * view_ambiguity(azimuth_deg)[:, None]
    return (sigma - target).square().mean()


def repulsion_loss(points: torch.Tensor, k: int = 4, h: float = 0.03) -> torch.Tensor:
    """k-NN repulsion (PU-Net): mean over points and their ``k`` nearest other points of
    ``-d * exp(-d^2 / h^2)`` (``d`` Euclidean); lower when neighbours are farther apart.

    Args:
        points: ``[B,N,3]``. Returns a scalar.
    """
    d2 = torch.cdist(points, points).square()
    n = points.shape[1]
    d2 = d2 + torch.eye(n, dtype=points.dtype, device=points.device) * 1e6  # exclude self
    nearest = d2.topk(k, dim=-1, largest=False).values.clamp_min(1e-12)   # [B,N,k]
    d = nearest.sqrt()
    return (-d * torch.exp(-nearest / (h * h))).mean()
