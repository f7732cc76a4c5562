"""The global aligner's 'mst' initialisation: every parameter from a minimum spanning tree of the pairs.

Follows the reference implementation's order of operations, quirk included (see :func:`init_mst`).
PnP goes through OpenCV's RANSAC (:func:`core.models.pose_utils.pnp_ransac`) unless stored results
are replayed.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph  # noqa: F401  (registers sp.csgraph)
import torch

from core.geometry import dust3r_principal_point
from core.geometry_torch import focal_from_point_map, invert_transform, sim3_matrix, transform_points, umeyama_parts
from core.models.dust3r.global_alignment.optimiser import PointCloudOptimizer
from core.models.pose_utils import pnp_ransac

log = logging.getLogger(__name__)


@dataclass
class PnPCall:
    """One PnP call of the 'mst' init: inputs and result (cam2world None if it failed)."""

    view: int
    pts3d: np.ndarray  # [H,W,3] float32 world points (before the final scaling)
    mask: np.ndarray  # [H,W] bool
    focal_in: float | None
    focal_out: float | None
    cam2world: np.ndarray | None  # [4,4] float32


def edge_scores(opt: PointCloudOptimizer) -> dict[tuple[int, int], float]:
    """(i, j) -> mean(conf1)·mean(conf2) (float32 product)."""
    return {(i, j): float(opt.conf_i[e].mean() * opt.conf_j[e].mean()) for e, (i, j) in enumerate(opt.edges)}


def estimate_focal(opt: PointCloudOptimizer, e: int) -> float:
    """Weiszfeld focal (10 reweightings) of edge e's pred_i. A non-positive or non-finite estimate
    (a pointmap that is no projection, e.g. a random network's) would turn every later value
    into NaN (the reference's behaviour); we fall back to max(H, W) with a warning instead."""
    focal = focal_from_point_map(opt.pred_i[e], dust3r_principal_point(*opt.pred_i[e].shape[:2]), iterations=10)
    if not (math.isfinite(focal) and focal > 0):
        h, w = opt.pred_i[e].shape[:2]
        log.warning("global alignment: focal estimate %.4g of edge %s is not positive; using %d",
                    focal, opt.edges[e], max(h, w))
        focal = float(max(h, w))
    return focal


@torch.no_grad()
def init_mst(opt: PointCloudOptimizer, niter_pnp: int = 10, pnp_replay: list | None = None) -> None:
    """Minimum-spanning-tree initialisation of every parameter.

    Steps: edge scores; MST of −score (scipy, Kruskal) walked from the strongest edge (its
    view i: identity pose and Weiszfeld focal from pred_i; pred_i/pred_j become the world
    points of i and j); then repeatedly the strongest tree edge touching the placed views:
    its prediction of the placed view is registered onto that view's world points (weighted
    similarity), which places the other view; the edge's first view gets [R|T] (scale dropped)
    when it had no pose. Reference quirk kept: a view i without a focal when its tree edge
    is popped gets the Weiszfeld focal of the *previously processed* edge's pred_i.
    Views still without focal take it from pred_i of their best outgoing edge; views without
    pose get one from RANSAC PnP on their world points (pixels with per-view conf > thr),
    identity on failure (a focal estimate ≤ 0 is replaced by max(H, W), see
    :func:`estimate_focal`). Finally every edge's pairwise pose is the registration of pred_i onto
    view i's world points, everything is scaled so that the pairwise scales have geometric mean
    ``base_scale``, and each depth map is the z of its world points in its camera. The views given
    the identity (the root, failed PnP) are marked in ``opt.fixed_translation``.

    Args:
        opt: the aligner; every parameter is overwritten, and ``mst_edges``, ``pnp_calls`` and
            ``fixed_translation`` are set.
        niter_pnp: RANSAC iterations of each PnP call.
        pnp_replay: optional list of (focal_out, cam2world [4,4] or None) consumed in call
            order instead of running OpenCV (to reproduce stored runs exactly).
    """
    dev = opt.device
    edge_index = {ij: e for e, ij in enumerate(opt.edges)}
    scores = edge_scores(opt)
    n = max(max(ij) for ij in scores) + 1
    graph = sp.dok_array((n, n))
    for ij, value in scores.items():
        graph[ij] = value
    graph = -graph
    msp = sp.csgraph.minimum_spanning_tree(graph).tocoo()
    todo = sorted(zip((-msp.data).tolist(), msp.row.tolist(), msp.col.tolist()))
    if not todo:
        raise ValueError("the scene graph has no edge with a positive score")

    pts3d: list[torch.Tensor | None] = [None] * opt.n_imgs
    im_poses: list[torch.Tensor | None] = [None] * opt.n_imgs
    im_focals: list[float | None] = [None] * opt.n_imgs
    identity = [False] * opt.n_imgs  # poses set to exactly the identity: translation fixed (optimize)

    _, i, j = todo.pop()
    e = edge_index[(i, j)]
    pts3d[i] = opt.pred_i[e].clone()
    pts3d[j] = opt.pred_j[e].clone()
    done = {i, j}
    im_poses[i] = torch.eye(4, device=dev)
    identity[i] = True
    im_focals[i] = estimate_focal(opt, e)
    msp_edges = [(i, j)]
    stalled = 0
    while todo:
        score, i, j = todo.pop()
        if im_focals[i] is None:  # reference quirk: e is still the previous edge
            im_focals[i] = estimate_focal(opt, e)
        if i in done:
            e = edge_index[(i, j)]
            s, R, T = umeyama_parts(opt.pred_i[e], pts3d[i], opt.conf_i[e])
            pts3d[j] = transform_points(sim3_matrix(s, R, T), opt.pred_j[e])
            done.add(j)
            msp_edges.append((i, j))
            if im_poses[i] is None:
                im_poses[i] = sim3_matrix(1, R, T)
            stalled = 0
        elif j in done:
            e = edge_index[(i, j)]
            s, R, T = umeyama_parts(opt.pred_j[e], pts3d[j], opt.conf_j[e])
            pts3d[i] = transform_points(sim3_matrix(s, R, T), opt.pred_i[e])
            done.add(i)
            msp_edges.append((i, j))
            if im_poses[i] is None:
                im_poses[i] = sim3_matrix(1, R, T)
            stalled = 0
        else:
            todo.insert(0, (score, i, j))
            stalled += 1
            if stalled > len(todo):
                raise ValueError("the scene graph is not connected: some views share no pair with the others")
    missing = [v for v in range(opt.n_imgs) if pts3d[v] is None]
    if missing:
        raise ValueError(f"views {missing} are in no pair of the scene graph")
    opt.mst_edges = msp_edges

    # focals of views not reached as a "first view": best outgoing edge
    keys = list(graph.keys())
    order = np.argsort(list(graph.values()))
    for k in order.tolist():
        a, b = keys[k]
        if im_focals[a] is None:
            im_focals[a] = estimate_focal(opt, edge_index[(a, b)])

    replay = list(pnp_replay) if pnp_replay is not None else None
    opt.pnp_calls = []
    for v in range(opt.n_imgs):
        if im_poses[v] is None:
            msk = opt.im_conf[v] > opt.min_conf_thr
            if int(msk.sum()) < 4:
                res = None
            elif replay is not None:
                if not replay:
                    raise ValueError("pnp_replay has fewer entries than the init's PnP calls")
                f_out, c2w = replay.pop(0)
                res = None if c2w is None or not np.all(np.isfinite(np.asarray(c2w))) else (
                    float(f_out), np.asarray(c2w, np.float32))
            else:
                res = pnp_ransac(pts3d[v], msk, im_focals[v], niter=niter_pnp)
            opt.pnp_calls.append(PnPCall(
                v, pts3d[v].cpu().numpy().copy(), msk.cpu().numpy().copy(), im_focals[v],
                None if res is None else res[0], None if res is None else res[1]))
            if res is not None:
                im_focals[v] = res[0]
                im_poses[v] = torch.as_tensor(res[1], dtype=torch.float32, device=dev)
        if im_poses[v] is None:
            im_poses[v] = torch.eye(4, device=dev)
            identity[v] = True
    poses = torch.stack(im_poses)

    # pairwise poses
    for e, (i, j) in enumerate(opt.edges):
        s, R, T = umeyama_parts(opt.pred_i[e], pts3d[i], opt.conf_i[e])
        opt.set_pose(opt.pw_poses, e, R, T, scale=s)

    # scale normalisation
    s_factor = opt.get_pw_norm_scale_factor()
    poses[:, :3, 3] *= s_factor
    for p in pts3d:
        p *= s_factor

    for v in range(opt.n_imgs):
        cam2world = poses[v]
        depth = transform_points(invert_transform(cam2world), pts3d[v])[..., 2]
        opt.set_depthmap(v, depth)
        opt.set_pose(opt.im_poses, v, cam2world[:3, :3], cam2world[:3, 3])
        if im_focals[v] is not None:
            opt.set_focal(v, im_focals[v])
    opt.fixed_translation[:] = torch.tensor(identity, device=dev)
