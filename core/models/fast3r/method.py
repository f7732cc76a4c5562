"""Fast3R as a ReconBench method: all views in one forward pass.

World = view 0's camera (the global head's frame). Points come from the local head aligned to
the global frame (per-view similarity over the 85th-percentile most confident pixels, as the
authors' demo) or from the global head directly (option ``points_from``). Cameras come from
``poses.estimate_cameras`` on the global pointmaps when that module is available.
Image indices: deterministic (see :func:`modeling_fast3r.default_image_idx`); the reference
draws them at random in every forward pass.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from ...profiling import measure
from ...progress import silent
from ...scene import Reconstruction, Scene
from ..croco.runner import (RANDOM_NOTE, as_options, autocast_context, intrinsics_matrix, load_network,
                            network_availability, object_masks, options_dict, pick_device, point_cloud,
                            prepare_views)
from ..registry import Availability, Method, option
from .alignment import align_local_to_global
from .config import CHECKPOINT, Fast3RConfig
from .modeling_fast3r import Fast3R

log = logging.getLogger(__name__)

VERSION = "1"
TINY_SIZE = 64


@dataclass
class Fast3ROptions:
    weights: str = option("pretrained", choices=("pretrained", "random-tiny"),
                          help="published ViT-L 512 checkpoint, or a seeded random tiny network (tests, demos)")
    checkpoint_path: str = option("", help="explicit checkpoint file (.safetensors)", advanced=True)
    image_size: int = option(512, choices=(224, 512),
                             help="long side of the network input (the published model: 512); random-tiny uses 64")
    points_from: str = option("local_aligned", choices=("local_aligned", "global"),
                              help="local head aligned to the global frame (demo default) or the global head")
    alignment_percentile: float = option(85.0, min=0.0, max=99.0, step=1.0,
                                         help="local-to-global alignment uses pixels above this global-confidence percentile",
                                         advanced=True)
    confidence_percentile: float = option(0.0, min=0.0, max=95.0, step=5.0,
                                          help="drop the points below this confidence percentile (0 keeps all)")
    use_object_masks: bool = option(False, help="keep only points inside the scene's object masks")
    estimate_cameras: bool = option(True, help="estimate focal and poses from the global pointmaps (PnP)")
    device: str = option("auto", choices=("auto", "cpu", "cuda"), help="auto = cuda if available")


@functools.cache
def load_model(weights: str, checkpoint_path: str = "", device: str = "cpu") -> Fast3R:
    """The network, loaded once per process (see :func:`core.models.croco.runner.load_network`)."""
    return load_network(Fast3R, Fast3RConfig, CHECKPOINT, weights, checkpoint_path, device)


def availability(options=None) -> Availability:
    return network_availability(CHECKPOINT, as_options(Fast3ROptions, options))


def _estimate_cameras(pts_global: torch.Tensor, conf: torch.Tensor):
    """``poses.estimate_cameras`` if that module exists, else None (and the reason)."""
    try:
        from .poses import estimate_cameras
    except ImportError as error:
        return None, f"camera estimation unavailable ({error})"
    return estimate_cameras(pts_global, conf), ""


def run(scene: Scene, view_ids: list[int], options=None, progress=None) -> Reconstruction:
    """Reconstruct ``view_ids`` of ``scene``; world = view 0's camera (OpenCV), arbitrary scale."""
    opts = as_options(Fast3ROptions, options)
    progress = progress or silent()
    METHOD.check_views([int(v) for v in view_ids])
    device = pick_device(opts.device)
    progress(0.0, "loading Fast3R")
    model = load_model(opts.weights, opts.checkpoint_path, str(device))
    size = TINY_SIZE if opts.weights == "random-tiny" else int(opts.image_size)
    return reconstruct(model, scene, view_ids, opts, progress, device, size)


def reconstruct(model: Fast3R, scene: Scene, view_ids: list[int], opts: Fast3ROptions, progress, device: torch.device,
                size: int) -> Reconstruction:
    """:func:`run` with a given network (the benchmark passes random full-size weights).

    ``seconds`` and ``peak_memory_bytes`` cover preparation, network, alignment, cameras and the
    point cloud, not loading the network (cached once per process).
    """
    progress = progress or silent()
    view_ids = [int(v) for v in view_ids]
    METHOD.check_views(view_ids)
    if opts.points_from not in ("local_aligned", "global"):
        raise ValueError(f"points_from must be local_aligned or global, got {opts.points_from!r}")
    notes: list[str] = []
    extra: dict = {}
    with measure(cuda=device.type == "cuda") as measured:
        images, transforms = prepare_views(scene, view_ids, size)
        masks = object_masks(scene, view_ids, transforms) if opts.use_object_masks else None
        batch = [img.to(device).unsqueeze(0) for img in images]
        h, w = images[0].shape[-2:]
        progress.check()
        started = time.perf_counter()
        with torch.no_grad(), autocast_context(device):
            out = model(batch, progress=progress.sub(0.05, 0.8))
        extra["network_seconds"] = time.perf_counter() - started
        preds = out["preds"]
        extra["image_idx"] = out["image_idx"][0].tolist()
        pts_global = torch.stack([p["pts3d_in_other_view"][0] for p in preds]).float().cpu()
        conf_global = torch.stack([p["conf"][0] for p in preds]).float().cpu()
        if "pts3d_local" not in preds[0]:
            raise ValueError("this Fast3R configuration has no local head (with_local_head false)")
        pts_local = torch.stack([p["pts3d_local"][0] for p in preds]).float().cpu()
        conf_local = torch.stack([p["conf_local"][0] for p in preds]).float().cpu()
        progress(0.8, "aligning local pointmaps to the global frame")
        aligned, transforms_l2g = align_local_to_global(pts_local, pts_global, conf_global,
                                                        opts.alignment_percentile)
        scales = torch.tensor([s for s, _, _ in transforms_l2g])
        depth = pts_local[..., 2] * scales[:, None, None]
        if opts.points_from == "local_aligned":
            point_maps, conf = aligned, conf_local
        else:
            point_maps, conf = pts_global, conf_global
        cam_from_world = intrinsics = None
        if opts.estimate_cameras:
            progress(0.85, "estimating cameras")
            cams, why = _estimate_cameras(pts_global, conf_global)
            if cams is None:
                notes.append(why)
            else:
                ok = np.asarray(cams.get("ok", np.ones(len(images), dtype=bool)), dtype=bool)
                focal = float(cams["focal"])
                extra["camera_focal_model_px"] = focal
                if not ok.any() or not np.isfinite(focal) or focal <= 0:
                    notes.append("camera estimation failed for every view (no usable focal/PnP): no cameras")
                else:
                    cam_from_world = np.asarray(cams["cam_from_world"], dtype=np.float64).copy()
                    cam_from_world[~ok] = np.nan
                    if not ok.all():
                        notes.append(f"PnP failed for input view(s) {np.flatnonzero(~ok).tolist()}: pose unknown (NaN)")
                    # the reference uses view 0's focal for every view
                    intrinsics = np.stack([t.intrinsics_to_original(intrinsics_matrix(focal, h, w))
                                           for t in transforms])
        progress(0.95, "building the point cloud")
        point_maps_np = point_maps.numpy()
        conf_np = conf.numpy()
        cloud = point_cloud(point_maps_np, conf_np, images, opts.confidence_percentile, masks)
    if opts.weights == "random-tiny":
        notes.append(RANDOM_NOTE)
        notes.append(f"random-tiny runs at image size {TINY_SIZE}")
    extra["model_input_size"] = [int(h), int(w)]
    extra["local_to_global_scales"] = scales.tolist()
    return Reconstruction(
        method=METHOD.name, version=VERSION, points=cloud["points"], colors=cloud["colors"],
        confidence=cloud["confidence"], source_view=cloud["source_view"], view_ids=view_ids,
        cam_from_world=cam_from_world, intrinsics=intrinsics,
        depth_maps=depth.numpy(), depth_confidence=conf_local.numpy(),
        point_maps=point_maps_np, point_confidence=conf_np,
        options=options_dict(opts), seconds=measured.seconds,
        peak_memory_bytes=measured.peak_memory_bytes,
        parameter_count=sum(p.numel() for p in model.parameters()), device=str(device),
        notes=notes, extra=extra)


METHOD = Method(
    name="fast3r",
    label="Fast3R",
    family="discriminative",
    version=VERSION,
    options_type=Fast3ROptions,
    run=run,
    availability=availability,
    min_views=1,
    max_views=1000,
    description=("Fast3R (Yang et al., CVPR 2025) encodes every view with a CroCo ViT-L and fuses all "
                 "views' tokens in one transformer; a global head predicts every view's points in the "
                 "first view's camera frame and a local head each view in its own frame."),
)
