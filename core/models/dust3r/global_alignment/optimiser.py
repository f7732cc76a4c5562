"""The global aligner's unknowns, loss and Adam optimisation (:class:`PointCloudOptimizer`).

Parametrisation, loss and memory: see :mod:`core.models.dust3r.global_alignment`. Every parameter is
set by the 'mst' initialisation (:mod:`.initialisation`) before :meth:`PointCloudOptimizer.optimize`.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

from core.geometry import dust3r_principal_point
from core.geometry_torch import as_4x4, matrix_to_quaternion, pixel_grid, quaternion_to_matrix, transform_points
from core.models.pose_utils import signed_expm1, signed_log1p
from core.progress import Progress, silent

log = logging.getLogger(__name__)

#: up to this many edge pixels (E·max H·W) the loss is differentiated by plain autograd, with the
#: reference's order of operations (bit-for-bit comparable on the conformance fixture).
_EXACT_MAX_POINTS = 262_144
#: beyond it, pixels per chunk of edges of the fused loss + analytic gradient (~12 floats per pixel).
_CHUNK_POINTS = 2_000_000
#: focals are optimised as FOCAL_BREAK·log f
FOCAL_BREAK = 20.0


def cosine_schedule(t: float, lr_start: float, lr_end: float) -> float:
    """lr_end + (lr_start − lr_end)·(1 + cos(π t))/2 for t in [0, 1]."""
    return lr_end + (lr_start - lr_end) * (1 + np.cos(t * np.pi)) / 2


def linear_schedule(t: float, lr_start: float, lr_end: float) -> float:
    """lr_start + (lr_end − lr_start)·t for t in [0, 1]."""
    return lr_start + (lr_end - lr_start) * t


def ravel_pad(x: torch.Tensor, area: int) -> torch.Tensor:
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
    return as_4x4(torch.cat([R, t[:, :, None]], dim=2))


def warm_up_adam() -> None:
    """Build and step a throw-away Adam once: its first use in a process imports ``torch._dynamo``
    (seconds), which would otherwise land in the first alignment's time (and in every cost
    estimate fitted to it). Called when the model is loaded, whose time is reported apart."""
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([weight], lr=1e-3)
    weight.sum().backward()
    optimizer.step()


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
            return torch.stack([ravel_pad(fn(t), A) for t in items])  # padding after fn: weight 0

        self._stacked_pred_i = stack("pred_i", self.pred_i)  # [E,A,3]
        self._stacked_pred_j = stack("pred_j", self.pred_j)
        self._weight_i = stack("conf_i", self.conf_i, torch.log)  # [E,A] pixel weights log(conf)
        self._weight_j = stack("conf_j", self.conf_j, torch.log)
        self._ei = torch.tensor([i for i, _ in self.edges], device=dev)
        self._ej = torch.tensor([j for _, j in self.edges], device=dev)
        areas = [h * w for h, w in self.imshapes]
        self.total_area_i = sum(areas[i] for i, _ in self.edges)
        self.total_area_j = sum(areas[j] for _, j in self.edges)
        self._pp = torch.tensor([dust3r_principal_point(h, w) for h, w in self.imshapes], device=dev)
        self._grid = torch.stack([ravel_pad(pixel_grid(h, w, torch.float32, dev), A)
                                  for h, w in self.imshapes])  # [N,A,2] (u, v), integer values

        # parameters (every value is overwritten by the init; these are neutral placeholders)
        self.pw_poses = torch.nn.Parameter(torch.tensor([[0, 0, 0, 1, 0, 0, 0, 0]], dtype=torch.float32,
                                                         device=dev).repeat(self.n_edges, 1))
        self.im_depthmaps = torch.nn.Parameter(torch.zeros((self.n_imgs, A), device=dev))
        self.im_poses = torch.nn.Parameter(torch.tensor([[0, 0, 0, 1, 0, 0, 0]], dtype=torch.float32,
                                                        device=dev).repeat(self.n_imgs, 1))
        self.im_focals = torch.nn.Parameter(torch.tensor(
            [[FOCAL_BREAK * np.log(max(h, w))] for h, w in self.imshapes], dtype=torch.float32, device=dev))
        self.im_pp = torch.zeros((self.n_imgs, 2), device=dev)  # not optimised
        #: views whose translation stays where the init put it (see :meth:`optimize`)
        self.fixed_translation = torch.zeros(self.n_imgs, dtype=torch.bool, device=dev)
        self.mst_edges: list[tuple[int, int]] = []  # filled by the init (initialisation.init_mst)
        self.pnp_calls: list = []  # initialisation.PnPCall, in call order

    # ------------------------------------------------------------------ getters
    def get_pw_norm_scale_factor(self) -> torch.Tensor:
        return (math.log(self.base_scale) - self.pw_poses[:, -1].mean()).exp()

    def get_pw_scale(self) -> torch.Tensor:
        """[E] pairwise scales s_e (normalised)."""
        return self.pw_poses[:, -1].exp() * self.get_pw_norm_scale_factor()

    def get_pw_poses(self) -> torch.Tensor:
        """[E,4,4] pair-frame -> world similarities [[s R, s t], [0, 1]]."""
        RT = _poses_from_params(self.pw_poses)
        return as_4x4(RT[:, :3] * self.get_pw_scale().view(-1, 1, 1))

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
        # geometry.unproject_pixels' formula, written out: this is the optimiser's parametrisation
        # (depth, focal and pose are the unknowns the loss differentiates, in the reference's order
        # of operations), not a second camera model
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

    # ------------------------------------------------------------------ parameter setters (used by the init)
    @torch.no_grad()
    def set_pose(self, params: torch.Tensor, idx: int, R: torch.Tensor, T: torch.Tensor, scale=None):
        """Row ``idx`` of ``im_poses`` or ``pw_poses`` from a rotation ``R [3,3]``, translation ``T [3]``
        (divided by ``scale`` when given, whose log is then stored last)."""
        params.data[idx, 0:4] = matrix_to_quaternion(R.to(torch.float32))
        params.data[idx, 4:7] = signed_log1p(T.to(torch.float32) / (scale if scale is not None else 1))
        if scale is not None:
            params.data[idx, -1] = np.log(float(scale))

    @torch.no_grad()
    def set_depthmap(self, idx: int, depth: torch.Tensor):
        """View ``idx``'s log depth from ``depth [H,W]`` (a non-positive depth gives log-depth 0)."""
        self.im_depthmaps.data[idx] = ravel_pad(depth, self.max_area).log().nan_to_num(neginf=0)

    @torch.no_grad()
    def set_focal(self, idx: int, focal: float):
        """View ``idx``'s focal (pixels), stored as ``FOCAL_BREAK·log f``."""
        self.im_focals.data[idx] = FOCAL_BREAK * np.log(focal)

    # ------------------------------------------------------------------ optimisation
    def optimize(self, niter: int, lr: float = 0.01, lr_min: float = 1e-6, schedule: str = "cosine",
                 progress: Progress | None = None) -> tuple[float, list[float], list[float]]:
        """Adam (betas (0.9, 0.9), eps 1e-8) over pw_poses, im_depthmaps, im_poses, im_focals.

        Step n uses lr = schedule(n / niter); the loss is evaluated before each step. The translation
        of the views in ``fixed_translation`` (those the init set to the identity: the tree's root,
        views whose PnP failed) gets no gradient, as in the reference, where sign(x)·expm1(|x|) has a
        zero autograd derivative at exactly x = 0. Only those views: a translation that merely rounds
        to 0 keeps its gradient (:func:`core.models.pose_utils.signed_expm1` has the true derivative,
        1, there), so whether a parameter moves never hangs on the last bit of a float32 sum.
        Returns (last loss before the last step, or inf if niter = 0; loss history; lr history);
        sets ``iteration_seconds``, the wall time of the iterations (not Adam's construction, whose
        first use in a process imports ``torch._dynamo``: seconds).
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
        started = time.perf_counter()
        for it in range(niter):
            cur_lr = float(sched(it / niter, lr, lr_min))
            for group in optimizer.param_groups:
                group["lr"] = cur_lr
            optimizer.zero_grad()
            loss = self.loss_and_backward()
            self.im_poses.grad[self.fixed_translation, 4:7] = 0
            optimizer.step()
            losses.append(loss)
            lrs.append(cur_lr)
            progress((it + 1) / niter, f"global alignment {it + 1}/{niter}, loss {loss:.5g}")
        self.iteration_seconds = time.perf_counter() - started
        return loss, losses, lrs
