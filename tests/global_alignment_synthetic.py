"""Synthetic input for DUSt3R's global aligner (tests only): pairwise pointmaps of a known scene.

The recipe is the one the conformance fixture's ``ga_synth`` case follows (fixture README, "DUSt3R").
"""
from __future__ import annotations

import cv2
import numpy as np
import torch


def synthetic_pairs(n_views: int, H: int, W: int, pairs: list[tuple[int, int]], focal: float | None = None,
                    noise: float = 0.01, seed: int = 0) -> tuple[dict, dict]:
    """Pairwise predictions of a known scene, in the format
    :func:`core.models.dust3r.global_alignment.global_align` takes.

    Cameras: view 0 at identity, the others rotation vector N(0, 0.15²) rad and translation
    N(0, 0.3²); focal (default 0.9·W), principal point (W/2, H/2); depth 3 + 0.5·sin(3u/W + n)·cos(2v/H)
    + 0.1·U(0,1). Edge e = (i, j): both views' points in camera i's frame times a random scale
    s_e ∈ [0.7, 1.3], plus N(0, (noise·s_e)²); confidences 1 + exp(1 + 0.7·N(0,1)).

    Returns:
        (pairs dict of float32 tensors, truth dict with ``cam2world [N,4,4]`` float64, ``focal``,
        ``depthmaps [N,H,W]`` float64, ``edge_scales [E]``).
    """
    rng = np.random.default_rng(seed)
    f = 0.9 * W if focal is None else float(focal)
    c2w = np.tile(np.eye(4), (n_views, 1, 1))
    for n in range(1, n_views):
        c2w[n, :3, :3] = cv2.Rodrigues(rng.normal(0, 0.15, 3))[0]
        c2w[n, :3, 3] = rng.normal(0, 0.3, 3)
    v, u = np.mgrid[:H, :W].astype(np.float64)
    depths, world = [], []
    for n in range(n_views):
        d = 3 + 0.5 * np.sin(3 * u / W + n) * np.cos(2 * v / H) + 0.1 * rng.random((H, W))
        cam = np.stack([d * (u - W / 2) / f, d * (v - H / 2) / f, d], axis=-1)
        depths.append(d)
        world.append(cam @ c2w[n, :3, :3].T + c2w[n, :3, 3])
    E = len(pairs)
    out = dict(view1_idx=torch.tensor([i for i, _ in pairs]), view2_idx=torch.tensor([j for _, j in pairs]),
               pts3d=torch.empty((E, H, W, 3)), conf1=torch.empty((E, H, W)),
               pts3d_in_other_view=torch.empty((E, H, W, 3)), conf2=torch.empty((E, H, W)))
    scales = rng.uniform(0.7, 1.3, E)
    for e, (i, j) in enumerate(pairs):
        w2c = np.linalg.inv(c2w[i])
        for key, conf_key, n in (("pts3d", "conf1", i), ("pts3d_in_other_view", "conf2", j)):
            pts = (world[n] @ w2c[:3, :3].T + w2c[:3, 3]) * scales[e]
            pts = pts + rng.normal(0, noise * scales[e], pts.shape)
            out[key][e] = torch.from_numpy(pts.astype(np.float32))
            out[conf_key][e] = torch.from_numpy((1 + np.exp(1 + 0.7 * rng.normal(size=(H, W)))).astype(np.float32))
    truth = dict(cam2world=c2w, focal=f, depthmaps=np.stack(depths), edge_scales=scales)
    return out, truth
