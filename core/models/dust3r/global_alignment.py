"""DUSt3R global alignment: fuse pairwise pointmaps into one scene (``PointCloudOptimizer``).

Input: for every directed edge e = (i, j) of a scene graph, the network's two pointmaps, both in
camera i's frame: ``pred_i[e]`` (view i's pixels) and ``pred_j[e]`` (view j's pixels), with their
confidences. Unknowns (all optimised jointly by Adam):

- per view n: camera-to-world pose (unit quaternion XYZW + signed_log1p translation, ``im_poses
  [N,7]``), log depth map (``im_depthmaps [N,A]``, A = max H·W, row-major), focal as 20·log f
  (``im_focals [N,1]``); principal point fixed at (W/2, H/2);
- per edge e: a similarity P_e taking the pair's frame (camera i) to the world (quaternion,
  signed_log1p translation, log scale σ_e: ``pw_poses [E,8]``). The scales are normalised so that
  their geometric mean is ``base_scale``: s_e = σ_e·exp(log base_scale − mean log σ).

Loss (``dist`` l1 = Euclidean distance, confidence 'log'):
    Σ_e Σ_p log(conf1_e)·‖X_i − P_e·pred_i[e]‖ / Σ_e H_i W_i + the same for view j, pred_j and conf2,
where X_n = R_n·(d·(u − cx)/f, d·(v − cy)/f, d) + t_n are view n's world points (u column, v row).

Initialisation 'mst' (minimum spanning tree of −edge score, score = mean(conf1)·mean(conf2)):
chains pairwise predictions by weighted similarity registrations, estimates focals (Weiszfeld)
and poses of views reached only as a "second view" by RANSAC PnP, then registers every edge.
It follows the reference implementation's order of operations, including one quirk (see
:meth:`PointCloudOptimizer.init_mst`).

Memory: pairwise predictions are kept once ([E,A,3] float32 each side, the caller's stacked tensors
used in place); beyond small problems the loss and its analytic gradient are computed in chunks of
edges (``_CHUNK_POINTS`` pixels at a time), so no E×A-sized intermediate exists beyond the inputs,
and nothing quadratic in pixels exists at all. 10 views at 512×384 (complete graph, 90 edges):
peak RSS ≈ 2.3 GiB including the inputs.
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
from core.geometry_torch import (
    focal_from_point_map,
    matrix_to_quaternion,
    quaternion_to_matrix,
    sim3_matrix,
    transform_points,
    umeyama_parts,
)
from core.models.pose_utils import pnp_ransac, signed_expm1, signed_log1p
from core.progress import Progress, silent

log = logging.getLogger(__name__)

#: up to this many edge pixels (E·max H·W) the loss is differentiated by plain autograd, with the
#: reference's order of operations (bit-for-bit comparable on the conformance fixture).
_EXACT_MAX_POINTS = 262_144
#: beyond it, pixels per chunk of edges of the fused loss + analytic gradient (~12 floats per pixel).
_CHUNK_POINTS = 2_000_000

DEFAULT_OPTIONS = dict(
    niter=300, lr=0.01, lr_min=1e-6, schedule="cosine", min_conf_thr=3.0, base_scale=0.5,
    init="mst", niter_PnP=10, pnp_replay=None, device="cpu",
)
FOCAL_BREAK = 20.0


@dataclass
class PnPCall:
    """One PnP call of the 'mst' init: inputs and result (cam2world None if it failed)."""

    view: int
    pts3d: np.ndarray  # [H,W,3] float32 world points (before the final scaling)
    mask: np.ndarray  # [H,W] bool
    focal_in: float | None
    focal_out: float | None
    cam2world: np.ndarray | None  # [4,4] float32


def cosine_schedule(t: float, lr_start: float, lr_end: float) -> float:
    """lr_end + (lr_start − lr_end)·(1 + cos(π t))/2 for t in [0, 1]."""
    return lr_end + (lr_start - lr_end) * (1 + np.cos(t * np.pi)) / 2


def linear_schedule(t: float, lr_start: float, lr_end: float) -> float:
    """lr_start + (lr_end − lr_start)·t for t in [0, 1]."""
    return lr_start + (lr_end - lr_start) * t


def _ravel_pad(x: torch.Tensor, area: int) -> torch.Tensor:
    """[H,W,...] -> [area,...] (row-major), zero-padded after H·W."""
    flat = x.reshape((x.shape[0] * x.shape[1],) + tuple(x.shape[2:]))
    if flat.shape[0] == area:
        return flat
    pad = flat.new_zeros((area - flat.shape[0],) + tuple(flat.shape[1:]))
    return torch.cat([flat, pad], dim=0)


def _poses_from_params(params: torch.Tensor) -> torch.Tensor:
    """[K,≥7] (quaternion XYZW, signed_log1p t, …) -> [K,4,4] rigid transforms (quaternion normalised)."""
    t = signed_expm1(params[:, 4:7])
    R = quaternion_to_matrix(params[:, :4])
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=params.dtype, device=params.device)
    top = torch.cat([R, t[:, :, None]], dim=2)
    return torch.cat([top, bottom.expand(params.shape[0], 1, 4)], dim=1)


class PointCloudOptimizer(torch.nn.Module):
    """Global aligner over N views and E directed edges (see module docstring).

    Args:
        edges: list of (i, j) view indices, one per edge.
        pred_i: per edge [H_i,W_i,3] view i's points in camera i's frame (pred1 ``pts3d``): a list of
            E tensors, or one [E,H,W,3] tensor when all views share a shape (then used without copy).
        pred_j: per edge [H_j,W_j,3] view j's points in camera i's frame (pred2 ``pts3d_in_other_view``).
        conf_i, conf_j: per edge [H,W] confidences (≥ 1) of the two pointmaps (list or [E,H,W]).
        imshapes: (H, W) per view.
        min_conf_thr: pixels with per-view confidence above it are used by PnP (and ``masks``).
        base_scale: geometric mean of the pairwise scales.
    """

    def __init__(self, edges, pred_i, pred_j, conf_i, conf_j, imshapes, min_conf_thr=3.0,
                 base_scale=0.5, device="cpu"):
        super().__init__()
        self.edges = [(int(i), int(j)) for i, j in edges]
        self.n_imgs = len(imshapes)
        self.n_edges = len(self.edges)
        self.imshapes = [(int(h), int(w)) for h, w in imshapes]
        self.min_conf_thr = float(min_conf_thr)
        self.base_scale = float(base_scale)
        self.device = torch.device(device)
        dev = self.device
        self.max_area = max(h * w for h, w in self.imshapes)
        A = self.max_area

        # stacked [E,H,W,…] inputs of one image shape are used in place (no copy)
        uniform = len(set(self.imshapes)) == 1
        raw = {}
        for name, x in (("pred_i", pred_i), ("pred_j", pred_j), ("conf_i", conf_i), ("conf_j", conf_j)):
            if torch.is_tensor(x):
                raw[name] = x.detach().to(dev, torch.float32)
                items = list(raw[name].unbind(0))
            else:
                items = [t.detach().to(dev, torch.float32) for t in x]
            if len(items) != self.n_edges:
                raise ValueError(f"{name} has {len(items)} entries for {self.n_edges} edges")
            setattr(self, name, items)
        for e, (i, j) in enumerate(self.edges):
            for name, v, tail in (("pred_i", i, (3,)), ("pred_j", j, (3,)), ("conf_i", i, ()), ("conf_j", j, ())):
                if tuple(getattr(self, name)[e].shape) != self.imshapes[v] + tail:
                    raise ValueError(f"edge {e} ({i},{j}): {name} has shape {tuple(getattr(self, name)[e].shape)}, "
                                     f"expected {self.imshapes[v] + tail} from the image shapes")
        stacked = {name: x.reshape((self.n_edges, A) + tuple(x.shape[3:])) for name, x in raw.items() if uniform}

        # per-view confidence: max over the edges where the view appears
        self.im_conf = [torch.zeros(hw, device=dev) for hw in self.imshapes]
        for e, (i, j) in enumerate(self.edges):
            self.im_conf[i] = torch.maximum(self.im_conf[i], self.conf_i[e])
            self.im_conf[j] = torch.maximum(self.im_conf[j], self.conf_j[e])

        # stacked, raveled, padded buffers for the loss
        def stack(name, items, fn=lambda t: t):
            if name in stacked:
                return fn(stacked[name])
            return torch.stack([_ravel_pad(fn(t), A) for t in items])  # padding after fn: weight 0

        self._stacked_pred_i = stack("pred_i", self.pred_i)  # [E,A,3]
        self._stacked_pred_j = stack("pred_j", self.pred_j)
        self._weight_i = stack("conf_i", self.conf_i, torch.log)  # [E,A] pixel weights log(conf)
        self._weight_j = stack("conf_j", self.conf_j, torch.log)
        self._ei = torch.tensor([i for i, _ in self.edges], device=dev)
        self._ej = torch.tensor([j for _, j in self.edges], device=dev)
        areas = [h * w for h, w in self.imshapes]
        self.total_area_i = sum(areas[i] for i, _ in self.edges)
        self.total_area_j = sum(areas[j] for _, j in self.edges)
        self._pp = torch.tensor([(w / 2, h / 2) for h, w in self.imshapes], device=dev)
        grids = []
        for h, w in self.imshapes:
            v, u = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
            grids.append(_ravel_pad(torch.stack([u, v], dim=-1), A))
        self._grid = torch.stack(grids)  # [N,A,2] int64 (u, v)

        # parameters (every value is overwritten by the init; these are neutral placeholders)
        self.pw_poses = torch.nn.Parameter(torch.tensor([[0, 0, 0, 1, 0, 0, 0, 0]], dtype=torch.float32,
                                                         device=dev).repeat(self.n_edges, 1))
        self.im_depthmaps = torch.nn.Parameter(torch.zeros((self.n_imgs, A), device=dev))
        self.im_poses = torch.nn.Parameter(torch.tensor([[0, 0, 0, 1, 0, 0, 0]], dtype=torch.float32,
                                                        device=dev).repeat(self.n_imgs, 1))
        self.im_focals = torch.nn.Parameter(torch.tensor(
            [[FOCAL_BREAK * np.log(max(h, w))] for h, w in self.imshapes], dtype=torch.float32, device=dev))
        self.im_pp = torch.zeros((self.n_imgs, 2), device=dev)  # not optimised
        self.mst_edges: list[tuple[int, int]] = []
        self.pnp_calls: list[PnPCall] = []

    # ------------------------------------------------------------------ getters
    def get_pw_norm_scale_factor(self) -> torch.Tensor:
        return (math.log(self.base_scale) - self.pw_poses[:, -1].mean()).exp()

    def get_pw_scale(self) -> torch.Tensor:
        """[E] pairwise scales s_e (normalised)."""
        return self.pw_poses[:, -1].exp() * self.get_pw_norm_scale_factor()

    def get_pw_poses(self) -> torch.Tensor:
        """[E,4,4] pair-frame -> world similarities [[s R, s t], [0, 1]]."""
        RT = _poses_from_params(self.pw_poses)
        scale = self.get_pw_scale()
        top = RT[:, :3] * scale.view(-1, 1, 1)
        return torch.cat([top, RT[:, 3:]], dim=1)

    def get_im_poses(self) -> torch.Tensor:
        """[N,4,4] camera-to-world poses."""
        return _poses_from_params(self.im_poses)

    def get_focals(self) -> torch.Tensor:
        """[N,1] focals in pixels."""
        return (self.im_focals / FOCAL_BREAK).exp()

    def get_principal_points(self) -> torch.Tensor:
        """[N,2] (cx, cy) in pixels."""
        return self._pp + 10 * self.im_pp

    def get_intrinsics(self) -> torch.Tensor:
        """[N,3,3] pinhole intrinsics."""
        K = torch.zeros((self.n_imgs, 3, 3), device=self.device)
        f = self.get_focals().flatten()
        K[:, 0, 0] = f
        K[:, 1, 1] = f
        K[:, :2, 2] = self.get_principal_points()
        K[:, 2, 2] = 1
        return K

    def get_depthmaps_raw(self) -> torch.Tensor:
        """[N,A] depths (raveled, padded)."""
        return self.im_depthmaps.exp()

    def depth_to_pts3d(self) -> torch.Tensor:
        """[N,A,3] world points of every view's pixels (raveled, padded)."""
        focals = self.get_focals().unsqueeze(1)  # [N,1,1]
        pp = self.get_principal_points().unsqueeze(1)  # [N,1,2]
        depth = self.get_depthmaps_raw().unsqueeze(-1)  # [N,A,1]
        rel = torch.cat((depth * (self._grid - pp) / focals, depth), dim=-1)
        return transform_points(self.get_im_poses(), rel)

    def depthmaps(self) -> list[torch.Tensor]:
        d = self.get_depthmaps_raw()
        return [d[n, :h * w].view(h, w) for n, (h, w) in enumerate(self.imshapes)]

    def pts3d(self) -> list[torch.Tensor]:
        p = self.depth_to_pts3d()
        return [p[n, :h * w].view(h, w, 3) for n, (h, w) in enumerate(self.imshapes)]

    # ------------------------------------------------------------------ loss
    def _chunks(self):
        step = max(1, _CHUNK_POINTS // self.max_area)
        for start in range(0, self.n_edges, step):
            yield slice(start, min(start + step, self.n_edges))

    def _chunk_loss(self, pts, pw, sl):
        pred_i = transform_points(pw[sl], self._stacked_pred_i[sl])
        pred_j = transform_points(pw[sl], self._stacked_pred_j[sl])
        li = ((pts[self._ei[sl]] - pred_i).norm(dim=-1) * self._weight_i[sl]).sum() / self.total_area_i
        lj = ((pts[self._ej[sl]] - pred_j).norm(dim=-1) * self._weight_j[sl]).sum() / self.total_area_j
        return li, lj

    def _fused_chunk(self, pts, pw, sl, grad_pts, grad_pw) -> float:
        """Loss of the edges in ``sl`` and its analytic gradient (no autograd graph).

        For each side, D = X_v − (M·p + t) with M = s·R (per edge), n = ‖D‖, loss = Σ w·n / area;
        dL/dD = w·D/(n·area) =: G, so dL/dX_v += G (summed over the edges of view v),
        dL/dM = −Σ_p G pᵀ and dL/dt = −Σ_p G. Adds into ``grad_pts [N,A,3]`` and ``grad_pw [E,4,4]``.
        """
        total = 0.0
        P = pw[sl]
        for preds, weights, views, area in (
            (self._stacked_pred_i[sl], self._weight_i[sl], self._ei[sl], self.total_area_i),
            (self._stacked_pred_j[sl], self._weight_j[sl], self._ej[sl], self.total_area_j),
        ):
            D = pts[views] - torch.baddbmm(P[:, None, :3, 3], preds, P[:, :3, :3].transpose(1, 2))
            n = D.norm(dim=-1)
            total += float((n * weights).sum()) / area
            G = D.mul_((weights / (n.clamp_min(1e-30) * area)).unsqueeze(-1))
            grad_pts.index_add_(0, views, G)
            grad_pw[sl, :3, :3] -= torch.bmm(G.transpose(1, 2), preds)
            grad_pw[sl, :3, 3] -= G.sum(1)
        return total

    def loss(self) -> float:
        """The loss at the current parameters (no gradient)."""
        with torch.no_grad():
            pts = self.depth_to_pts3d()
            pw = self.get_pw_poses()
            li_total, lj_total = 0.0, 0.0
            if self.n_edges * self.max_area <= _EXACT_MAX_POINTS:
                li, lj = self._chunk_loss(pts, pw, slice(0, self.n_edges))
                return float(li + lj)
            for sl in self._chunks():
                li, lj = self._chunk_loss(pts, pw, sl)
                li_total += float(li)
                lj_total += float(lj)
            return li_total + lj_total

    def loss_and_backward(self) -> float:
        """Loss at the current parameters; accumulates its gradient into the parameters' ``.grad``.

        Small problems (≤ ``_EXACT_MAX_POINTS`` edge pixels) use plain autograd, in the reference's
        order of operations. Larger ones compute the world points and pairwise poses once with
        autograd, evaluate the per-edge terms chunk by chunk with their analytic gradient
        (:meth:`_fused_chunk`, memory ∝ one chunk, about half the work of autograd), then push
        those gradients back through the shared computation in one ``backward``.
        """
        pts = self.depth_to_pts3d()
        pw = self.get_pw_poses()
        if self.n_edges * self.max_area <= _EXACT_MAX_POINTS:
            li, lj = self._chunk_loss(pts, pw, slice(0, self.n_edges))
            loss = li + lj
            loss.backward()
            return float(loss.detach())
        chunks = list(self._chunks())
        grad_pts = torch.zeros_like(pts)
        grad_pw = torch.zeros_like(pw)
        total = 0.0
        with torch.no_grad():
            for sl in chunks:
                total += self._fused_chunk(pts.detach(), pw.detach(), sl, grad_pts, grad_pw)
        torch.autograd.backward([pts, pw], [grad_pts, grad_pw])
        return total

    # ------------------------------------------------------------------ parameter setters
    @torch.no_grad()
    def _set_pose(self, params: torch.Tensor, idx: int, R: torch.Tensor, T: torch.Tensor, scale=None):
        params.data[idx, 0:4] = matrix_to_quaternion(R.to(torch.float32))
        params.data[idx, 4:7] = signed_log1p(T.to(torch.float32) / (scale if scale is not None else 1))
        if scale is not None:
            params.data[idx, -1] = np.log(float(scale))

    @torch.no_grad()
    def _set_depthmap(self, idx: int, depth: torch.Tensor):
        self.im_depthmaps.data[idx] = _ravel_pad(depth, self.max_area).log().nan_to_num(neginf=0)

    @torch.no_grad()
    def _set_focal(self, idx: int, focal: float):
        self.im_focals.data[idx] = FOCAL_BREAK * np.log(focal)

    # ------------------------------------------------------------------ init
    def edge_scores(self) -> dict[tuple[int, int], float]:
        """(i, j) -> mean(conf1)·mean(conf2) (float32 product)."""
        return {(i, j): float(self.conf_i[e].mean() * self.conf_j[e].mean()) for e, (i, j) in enumerate(self.edges)}

    def _estimate_focal(self, e: int) -> float:
        """Weiszfeld focal (10 reweightings) of edge e's pred_i. A non-positive or non-finite estimate
        (a pointmap that is no projection, e.g. a random network's) would turn every later value
        into NaN (the reference's behaviour); we fall back to max(H, W) with a warning instead."""
        focal = focal_from_point_map(self.pred_i[e], dust3r_principal_point(*self.pred_i[e].shape[:2]), iterations=10)
        if not (math.isfinite(focal) and focal > 0):
            h, w = self.pred_i[e].shape[:2]
            log.warning("global alignment: focal estimate %.4g of edge %s is not positive; using %d",
                        focal, self.edges[e], max(h, w))
            focal = float(max(h, w))
        return focal

    @torch.no_grad()
    def init_mst(self, niter_pnp: int = 10, pnp_replay: list | None = None) -> None:
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
        :meth:`_estimate_focal`). Finally every edge's pairwise pose is the registration of pred_i onto
        view i's world points, everything is scaled so that the pairwise scales have geometric mean
        ``base_scale``, and each depth map is the z of its world points in its camera.

        Args:
            niter_pnp: RANSAC iterations of each PnP call.
            pnp_replay: optional list of (focal_out, cam2world [4,4] or None) consumed in call
                order instead of running OpenCV (to reproduce stored runs exactly).
        """
        dev = self.device
        edge_index = {ij: e for e, ij in enumerate(self.edges)}
        scores = self.edge_scores()
        n = max(max(ij) for ij in scores) + 1
        graph = sp.dok_array((n, n))
        for ij, value in scores.items():
            graph[ij] = value
        graph = -graph
        msp = sp.csgraph.minimum_spanning_tree(graph).tocoo()
        todo = sorted(zip((-msp.data).tolist(), msp.row.tolist(), msp.col.tolist()))
        if not todo:
            raise ValueError("the scene graph has no edge with a positive score")

        pts3d: list[torch.Tensor | None] = [None] * self.n_imgs
        im_poses: list[torch.Tensor | None] = [None] * self.n_imgs
        im_focals: list[float | None] = [None] * self.n_imgs

        _, i, j = todo.pop()
        e = edge_index[(i, j)]
        pts3d[i] = self.pred_i[e].clone()
        pts3d[j] = self.pred_j[e].clone()
        done = {i, j}
        im_poses[i] = torch.eye(4, device=dev)
        im_focals[i] = self._estimate_focal(e)
        msp_edges = [(i, j)]
        stalled = 0
        while todo:
            score, i, j = todo.pop()
            if im_focals[i] is None:  # reference quirk: e is still the previous edge
                im_focals[i] = self._estimate_focal(e)
            if i in done:
                e = edge_index[(i, j)]
                s, R, T = umeyama_parts(self.pred_i[e], pts3d[i], self.conf_i[e])
                pts3d[j] = transform_points(sim3_matrix(s, R, T), self.pred_j[e])
                done.add(j)
                msp_edges.append((i, j))
                if im_poses[i] is None:
                    im_poses[i] = sim3_matrix(1, R, T)
                stalled = 0
            elif j in done:
                e = edge_index[(i, j)]
                s, R, T = umeyama_parts(self.pred_j[e], pts3d[j], self.conf_j[e])
                pts3d[i] = transform_points(sim3_matrix(s, R, T), self.pred_i[e])
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
        missing = [v for v in range(self.n_imgs) if pts3d[v] is None]
        if missing:
            raise ValueError(f"views {missing} are in no pair of the scene graph")
        self.mst_edges = msp_edges

        # focals of views not reached as a "first view": best outgoing edge
        keys = list(graph.keys())
        order = np.argsort(list(graph.values()))
        for k in order.tolist():
            a, b = keys[k]
            if im_focals[a] is None:
                im_focals[a] = self._estimate_focal(edge_index[(a, b)])

        replay = list(pnp_replay) if pnp_replay is not None else None
        self.pnp_calls = []
        for v in range(self.n_imgs):
            if im_poses[v] is None:
                msk = self.im_conf[v] > self.min_conf_thr
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
                self.pnp_calls.append(PnPCall(
                    v, pts3d[v].cpu().numpy().copy(), msk.cpu().numpy().copy(), im_focals[v],
                    None if res is None else res[0], None if res is None else res[1]))
                if res is not None:
                    im_focals[v] = res[0]
                    im_poses[v] = torch.as_tensor(res[1], dtype=torch.float32, device=dev)
            if im_poses[v] is None:
                im_poses[v] = torch.eye(4, device=dev)
        poses = torch.stack(im_poses)

        # pairwise poses
        for e, (i, j) in enumerate(self.edges):
            s, R, T = umeyama_parts(self.pred_i[e], pts3d[i], self.conf_i[e])
            self._set_pose(self.pw_poses, e, R, T, scale=s)

        # scale normalisation
        s_factor = self.get_pw_norm_scale_factor()
        poses[:, :3, 3] *= s_factor
        for p in pts3d:
            p *= s_factor

        for v in range(self.n_imgs):
            cam2world = poses[v]
            depth = transform_points(torch.linalg.inv(cam2world), pts3d[v])[..., 2]
            self._set_depthmap(v, depth)
            self._set_pose(self.im_poses, v, cam2world[:3, :3], cam2world[:3, 3])
            if im_focals[v] is not None:
                self._set_focal(v, im_focals[v])

    # ------------------------------------------------------------------ optimisation
    def optimize(self, niter: int, lr: float = 0.01, lr_min: float = 1e-6, schedule: str = "cosine",
                 progress: Progress | None = None) -> tuple[float, list[float], list[float]]:
        """Adam (betas (0.9, 0.9), eps 1e-8) over pw_poses, im_depthmaps, im_poses, im_focals.

        Step n uses lr = schedule(n / niter); the loss is evaluated before each step.
        Returns (last loss before the last step, or inf if niter = 0; loss history; lr history).
        Raises ``core.progress.Stopped`` if the user stops (via ``progress``).
        """
        if schedule not in ("cosine", "linear"):
            raise ValueError(f"schedule must be 'cosine' or 'linear', got {schedule!r}")
        progress = progress or silent()
        params = [self.pw_poses, self.im_depthmaps, self.im_poses, self.im_focals]
        optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.9), eps=1e-8)
        losses: list[float] = []
        lrs: list[float] = []
        loss = float("inf")
        sched = cosine_schedule if schedule == "cosine" else linear_schedule
        for it in range(niter):
            cur_lr = float(sched(it / niter, lr, lr_min))
            for group in optimizer.param_groups:
                group["lr"] = cur_lr
            optimizer.zero_grad()
            loss = self.loss_and_backward()
            optimizer.step()
            losses.append(loss)
            lrs.append(cur_lr)
            progress((it + 1) / niter, f"global alignment {it + 1}/{niter}, loss {loss:.5g}")
        return loss, losses, lrs


# ---------------------------------------------------------------------- synthetic input
def synthetic_pairs(n_views: int, H: int, W: int, pairs: list[tuple[int, int]], focal: float | None = None,
                    noise: float = 0.01, seed: int = 0) -> tuple[dict, dict]:
    """Pairwise predictions of a known scene, in the format :func:`global_align` takes (tests, benchmarks).

    Cameras: view 0 at identity, the others rotation vector N(0, 0.15²) rad and translation
    N(0, 0.3²); focal (default 0.9·W), principal point (W/2, H/2); depth 3 + 0.5·sin(3u/W + n)·cos(2v/H)
    + 0.1·U(0,1). Edge e = (i, j): both views' points in camera i's frame times a random scale
    s_e ∈ [0.7, 1.3], plus N(0, (noise·s_e)²); confidences 1 + exp(1 + 0.7·N(0,1)).

    Returns:
        (pairs dict of float32 tensors, truth dict with ``cam2world [N,4,4]`` float64, ``focal``,
        ``depthmaps [N,H,W]`` float64, ``edge_scales [E]``).
    """
    import cv2

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


# ---------------------------------------------------------------------- public entry point
def _edge_list(x) -> list:
    if torch.is_tensor(x):
        return x.reshape(-1).tolist()
    return [int(v) for v in x]


def _per_edge(x, n_edges: int, name: str) -> torch.Tensor | list[torch.Tensor]:
    """A stacked [E,…] tensor as it is (the aligner uses it without copying), else a list of E tensors."""
    if torch.is_tensor(x) or isinstance(x, np.ndarray):
        t = torch.as_tensor(x)
        if t.shape[0] != n_edges:
            raise ValueError(f"pairs[{name!r}] has {t.shape[0]} entries for {n_edges} edges")
        return t
    items = [torch.as_tensor(v) for v in x]
    if len(items) != n_edges:
        raise ValueError(f"pairs[{name!r}] has {len(items)} entries for {n_edges} edges")
    return items


def global_align(pairs: dict, image_shapes: list[tuple[int, int]], graph_edges: list[tuple[int, int]] | None,
                 options: dict | None = None, progress: Progress | None = None) -> dict:
    """Globally align DUSt3R's pairwise predictions (PointCloudOptimizer, 'mst' init, Adam).

    Args:
        pairs: ``view1_idx [E]``, ``view2_idx [E]`` (int; edge e goes from view1_idx[e] to
            view2_idx[e]), ``pts3d [E,H,W,3]`` + ``conf1 [E,H,W]`` (pred1: view 1's points in view 1's
            camera frame), ``pts3d_in_other_view [E,H,W,3]`` + ``conf2 [E,H,W]`` (pred2: view 2's
            points in view 1's frame). Torch tensors (or per-edge lists when shapes differ).
        image_shapes: (H, W) of every view's network input, N entries.
        graph_edges: the scene graph's (i, j) pairs, or None. Used as the edge list when ``pairs``
            has no view indices; otherwise every pair edge must be in it (either direction).
        options: ``niter`` (300), ``lr`` (0.01), ``lr_min`` (1e-6), ``schedule`` ('cosine' |
            'linear'), ``min_conf_thr`` (3), ``base_scale`` (0.5), ``init`` ('mst'), ``niter_PnP`` (10),
            ``pnp_replay`` (None or a list of (focal_out, cam2world [4,4] or None) replacing the
            init's OpenCV PnP calls in order), ``device`` ('cpu').
        progress: :class:`core.progress.Progress`; init takes the first 5 %, each Adam step reports.
    Returns:
        dict of CPU tensors (float32 unless stated), frames = the aligner's world (view of the
        strongest MST edge's first view at identity; scale arbitrary, pairwise scales' geometric
        mean = base_scale):
        ``cam2world [N,4,4]`` camera-to-world, ``cam_from_world [N,4,4]`` its inverse (OpenCV
        world -> camera), ``focals [N]`` pixels, ``principal_points [N,2]``, ``intrinsics [N,3,3]``,
        ``depthmaps [N,H,W]`` (z in each camera), ``pts3d [N,H,W,3]`` world points, ``im_conf
        [N,H,W]`` (per-view max confidence), ``masks [N,H,W]`` (im_conf > min_conf_thr), ``pw_poses
        [E,4,4]``, ``pw_scales [E]``, ``loss`` (float, at the final state), ``loss_history`` /
        ``lr_history`` (lists, loss before each step and its lr), ``init_loss`` (float),
        ``mst_edges`` (list of (i, j)), ``pnp_calls`` (list of :class:`PnPCall`), ``edges``, and
        ``params``: the raw parameters ``im_poses [N,7]``, ``im_depthmaps [N,A]``, ``im_focals
        [N,1]``, ``pw_poses [E,8]`` (see the module docstring).
        When views differ in shape the per-view maps are lists instead of stacked tensors.
    Raises:
        ValueError: inconsistent inputs, unknown options, or a disconnected scene graph.
        core.progress.Stopped: the user pressed stop.
    """
    opts = dict(DEFAULT_OPTIONS)
    unknown = set(options or {}) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"unknown global-alignment options {sorted(unknown)}; known: {sorted(DEFAULT_OPTIONS)}")
    opts.update(options or {})
    if opts["init"] != "mst":
        raise ValueError(f"only init='mst' is supported, got {opts['init']!r}")
    if int(opts["niter"]) < 0:
        raise ValueError("niter must be >= 0")
    progress = progress or silent()

    image_shapes = [(int(h), int(w)) for h, w in image_shapes]
    if "view1_idx" in pairs and "view2_idx" in pairs:
        edges = list(zip(_edge_list(pairs["view1_idx"]), _edge_list(pairs["view2_idx"])))
        if graph_edges is not None:
            allowed = {(int(a), int(b)) for a, b in graph_edges}
            allowed |= {(b, a) for a, b in allowed}
            bad = [ij for ij in edges if ij not in allowed]
            if bad:
                raise ValueError(f"pairs {bad[:3]} are not edges of the scene graph")
    elif graph_edges is not None:
        edges = [(int(a), int(b)) for a, b in graph_edges]
    else:
        raise ValueError("pairs has no view1_idx/view2_idx and no graph_edges were given")
    if not edges:
        raise ValueError("no pairs to align")
    if len(set(edges)) != len(edges):
        raise ValueError("duplicate (i, j) pairs in the scene graph")
    n_views = len(image_shapes)
    if any(not (0 <= i < n_views and 0 <= j < n_views) or i == j for i, j in edges):
        raise ValueError(f"pair indices must be distinct views in [0, {n_views})")
    E = len(edges)
    for key in ("pts3d", "conf1", "pts3d_in_other_view", "conf2"):
        if key not in pairs:
            raise ValueError(f"pairs is missing {key!r}")

    progress(0.0, "global alignment: initialisation (minimum spanning tree)")
    opt = PointCloudOptimizer(
        edges, _per_edge(pairs["pts3d"], E, "pts3d"), _per_edge(pairs["pts3d_in_other_view"], E, "pts3d_in_other_view"),
        _per_edge(pairs["conf1"], E, "conf1"), _per_edge(pairs["conf2"], E, "conf2"), image_shapes,
        min_conf_thr=opts["min_conf_thr"], base_scale=opts["base_scale"], device=opts["device"])
    opt.init_mst(niter_pnp=int(opts["niter_PnP"]), pnp_replay=opts["pnp_replay"])
    init_loss = opt.loss()
    log.info("global alignment: init loss %.6g, MST edges %s", init_loss, opt.mst_edges)
    progress.check()
    _, losses, lrs = opt.optimize(int(opts["niter"]), lr=float(opts["lr"]), lr_min=float(opts["lr_min"]),
                                  schedule=opts["schedule"], progress=progress.sub(0.05, 1.0))
    with torch.no_grad():
        final_loss = opt.loss()
        cam2world = opt.get_im_poses().detach()
        cam_from_world = torch.linalg.inv(cam2world.double()).float()
        same = len(set(opt.imshapes)) == 1

        def pack(xs):
            xs = [x.detach().cpu() for x in xs]
            return torch.stack(xs) if same else xs

        result = dict(
            cam2world=cam2world.cpu(),
            cam_from_world=cam_from_world.cpu(),
            focals=opt.get_focals().detach().flatten().cpu(),
            principal_points=opt.get_principal_points().detach().cpu(),
            intrinsics=opt.get_intrinsics().detach().cpu(),
            depthmaps=pack(opt.depthmaps()),
            pts3d=pack(opt.pts3d()),
            im_conf=pack(opt.im_conf),
            masks=pack([c > opt.min_conf_thr for c in opt.im_conf]),
            pw_poses=opt.get_pw_poses().detach().cpu(),
            pw_scales=opt.get_pw_scale().detach().cpu(),
            params={name: getattr(opt, name).detach().cpu().clone()
                    for name in ("im_poses", "im_depthmaps", "im_focals", "pw_poses")},
            loss=final_loss,
            init_loss=init_loss,
            loss_history=losses,
            lr_history=lrs,
            mst_edges=list(opt.mst_edges),
            pnp_calls=list(opt.pnp_calls),
            edges=list(edges),
        )
    progress(1.0, f"global alignment done, loss {final_loss:.5g}")
    return result
