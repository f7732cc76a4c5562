"""The global aligner's entry point: checked inputs -> 'mst' init -> Adam -> packed results."""
from __future__ import annotations

import logging

import numpy as np
import torch

from core.geometry_torch import invert_transform
from core.models.dust3r.global_alignment.initialisation import init_mst
from core.models.dust3r.global_alignment.optimiser import PointCloudOptimizer
from core.progress import Progress, silent

log = logging.getLogger(__name__)

DEFAULT_OPTIONS = dict(
    niter=300, lr=0.01, lr_min=1e-6, schedule="cosine", min_conf_thr=3.0, base_scale=0.5,
    init="mst", niter_PnP=10, pnp_replay=None, device="cpu",
)


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
        ``mst_edges`` (list of (i, j)), ``pnp_calls`` (list of :class:`~.initialisation.PnPCall`), ``edges``,
        ``optimise_seconds`` (wall time of the Adam iterations, not of Adam's construction),
        ``iterations_per_s`` (0 when niter = 0), and
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
    init_mst(opt, niter_pnp=int(opts["niter_PnP"]), pnp_replay=opts["pnp_replay"])
    init_loss = opt.loss()
    log.info("global alignment: init loss %.6g, MST edges %s", init_loss, opt.mst_edges)
    progress.check()
    _, losses, lrs = opt.optimize(int(opts["niter"]), lr=float(opts["lr"]), lr_min=float(opts["lr_min"]),
                                  schedule=opts["schedule"], progress=progress.sub(0.05, 1.0))
    optimise_seconds = opt.iteration_seconds
    with torch.no_grad():
        final_loss = opt.loss()
        cam2world = opt.get_im_poses().detach()
        cam_from_world = invert_transform(cam2world.double()).float()
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
            optimise_seconds=optimise_seconds,
            iterations_per_s=len(losses) / optimise_seconds if losses and optimise_seconds > 0 else 0.0,
        )
    progress(1.0, f"global alignment done, loss {final_loss:.5g}")
    return result
