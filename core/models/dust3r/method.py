"""DUSt3R as a ReconBench method: pairwise pointmaps, fused by global alignment for > 2 views.

1 view: duplicated into the pair (0, 0), as the authors do. 2 views: the pair (0, 1) is used
directly (world = view 0's camera; view 1's camera from the swapped pair). More views: the scene
graph's pairs are predicted (both orders) and fused by ``global_alignment.global_align``, then
re-expressed in view 0's camera frame.
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
from .config import CHECKPOINT, DUSt3RConfig
from .inference import predict_pairs
from .modeling_dust3r import DUSt3R
from .pair_geometry import single_view, two_views
from .scene_graph import make_pairs

log = logging.getLogger(__name__)

VERSION = "1"
TINY_SIZE = 64


@dataclass
class DUSt3ROptions:
    weights: str = option("pretrained", choices=("pretrained", "random-tiny"),
                          help="published ViT-L 512 DPT checkpoint, or a seeded random tiny network (tests, demos)")
    checkpoint_path: str = option("", help="explicit checkpoint file (.safetensors or .pth)", advanced=True)
    image_size: int = option(512, choices=(224, 512),
                             help="long side of the network input (the published model: 512); random-tiny uses 64")
    scene_graph: str = option("complete", choices=("complete", "swin", "oneref"),
                              help="which pairs to predict for more than 2 views")
    ga_iterations: int = option(300, min=0, max=2000, step=50, help="global-alignment iterations (> 2 views)")
    ga_lr: float = option(0.01, min=0.0001, max=0.1, step=0.001, help="global-alignment learning rate", advanced=True)
    ga_schedule: str = option("cosine", choices=("cosine", "linear"), help="learning-rate schedule", advanced=True)
    confidence_percentile: float = option(0.0, min=0.0, max=95.0, step=5.0,
                                          help="drop the points below this confidence percentile (0 keeps all)")
    use_object_masks: bool = option(False, help="keep only points inside the scene's object masks")
    batch_size: int = option(2, min=1, max=16, step=1, help="pairs per forward pass", advanced=True)
    device: str = option("auto", choices=("auto", "cpu", "cuda"), help="auto = cuda if available")


@functools.cache
def load_model(weights: str, checkpoint_path: str = "", device: str = "cpu") -> DUSt3R:
    """The network, loaded once per process (see :func:`core.models.croco.runner.load_network`)."""
    return load_network(DUSt3R, DUSt3RConfig, CHECKPOINT, weights, checkpoint_path, device)


def availability(options=None) -> Availability:
    return network_availability(CHECKPOINT, as_options(DUSt3ROptions, options))


def _global_align(pairs: dict, shapes, edges, opts: DUSt3ROptions, device: torch.device, progress) -> dict:
    try:
        from .global_alignment import global_align
    except ImportError as error:
        raise ValueError(f"DUSt3R on more than 2 views needs global alignment, which is not available: {error}") from None
    ga_options = {"niter": opts.ga_iterations, "lr": opts.ga_lr, "schedule": opts.ga_schedule,
                  "init": "mst", "device": str(device)}
    return global_align(pairs, shapes, edges, ga_options, progress)


def _to_view0_frame(result: dict) -> dict:
    """Re-express an aligned scene in view 0's camera frame (rigid change of world)."""
    cams = torch.as_tensor(result["cam_from_world"], dtype=torch.float64)
    change = cams[0].clone()  # new world (view 0 camera) from old world
    inv_change = torch.linalg.inv(change)
    out = dict(result)
    out["cam_from_world"] = cams @ inv_change
    pts = torch.as_tensor(result["pts3d"]).double()
    out["pts3d"] = (pts @ change[:3, :3].T + change[:3, 3]).float()
    return out


def run(scene: Scene, view_ids: list[int], options=None, progress=None) -> Reconstruction:
    """Reconstruct ``view_ids`` of ``scene``; world = view 0's camera (OpenCV), arbitrary scale."""
    opts = as_options(DUSt3ROptions, options)
    progress = progress or silent()
    METHOD.check_views([int(v) for v in view_ids])
    device = pick_device(opts.device)
    progress(0.0, "loading DUSt3R")
    model = load_model(opts.weights, opts.checkpoint_path, str(device))
    size = TINY_SIZE if opts.weights == "random-tiny" else int(opts.image_size)
    return reconstruct(model, scene, view_ids, opts, progress, device, size)


def reconstruct(model: DUSt3R, scene: Scene, view_ids: list[int], opts: DUSt3ROptions, progress, device: torch.device,
                size: int) -> Reconstruction:
    """:func:`run` with a given network (the benchmark passes random full-size weights).

    ``seconds`` and ``peak_memory_bytes`` cover preparation, network, alignment and the point
    cloud, not loading the network (cached once per process). ``extra`` records
    ``network_seconds``, ``alignment_seconds`` (camera/alignment stage; global alignment for
    more than 2 views), ``pairs_evaluated`` and the model input size.
    """
    progress = progress or silent()
    view_ids = [int(v) for v in view_ids]
    METHOD.check_views(view_ids)
    if opts.scene_graph not in ("complete", "swin", "oneref"):
        raise ValueError(f"unknown scene graph {opts.scene_graph!r}; use complete, swin or oneref")
    notes: list[str] = []
    extra: dict = {}
    with measure(cuda=device.type == "cuda") as measured:
        images, transforms = prepare_views(scene, view_ids, size)
        masks = object_masks(scene, view_ids, transforms) if opts.use_object_masks else None
        images = [img.to(device) for img in images]
        n = len(images)
        h, w = images[0].shape[-2:]
        if n == 1:
            pairs = [(0, 0)]
            notes.append("single view: the image is paired with itself, as the authors do")
        elif n == 2:
            pairs = [(0, 1), (1, 0)]
        else:
            pairs = make_pairs(n, opts.scene_graph, symmetrize=True)
        progress.check()
        started = time.perf_counter()
        pred = predict_pairs(model, images, pairs, batch_size=max(1, int(opts.batch_size)),
                             progress=progress.sub(0.05, 0.6 if n > 2 else 0.9),
                             autocast=lambda: autocast_context(device))
        extra["pairs_evaluated"] = len(pairs)
        extra["network_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        if n == 1:
            result = single_view(pred)
        elif n == 2:
            result = two_views(pred)
        else:
            edges = pairs[: len(pairs) // 2]
            result = _to_view0_frame(_global_align(pred, [(h, w)] * n, edges, opts, device,
                                                   progress.sub(0.6, 0.95)))
            extra["loss_history"] = [float(x) for x in result.get("loss_history", [])]
        extra["alignment_seconds"] = time.perf_counter() - started
        progress(0.95, "building the point cloud")
        point_maps = torch.as_tensor(result["pts3d"]).float().cpu().numpy()
        conf = torch.as_tensor(result["im_conf"]).float().cpu().numpy()
        cloud = point_cloud(point_maps, conf, images, opts.confidence_percentile, masks)
        focals = torch.as_tensor(result["focals"]).double().reshape(-1).cpu().numpy()
        pps = torch.as_tensor(result["principal_points"]).double().reshape(-1, 2).cpu().numpy()
        intrinsics = []
        for k, transform in enumerate(transforms):
            k_model = intrinsics_matrix(float(focals[k]), h, w)
            k_model[0, 2], k_model[1, 2] = pps[k]
            intrinsics.append(transform.intrinsics_to_original(k_model))
    if opts.weights == "random-tiny":
        notes.append(RANDOM_NOTE)
        notes.append(f"random-tiny runs at image size {TINY_SIZE}")
    extra["model_input_size"] = [int(h), int(w)]
    return Reconstruction(
        method=METHOD.name, version=VERSION, points=cloud["points"], colors=cloud["colors"],
        confidence=cloud["confidence"], source_view=cloud["source_view"], view_ids=view_ids,
        cam_from_world=torch.as_tensor(result["cam_from_world"]).double().cpu().numpy(),
        intrinsics=np.stack(intrinsics),
        depth_maps=torch.as_tensor(result["depthmaps"]).float().cpu().numpy(),
        depth_confidence=conf, point_maps=point_maps, point_confidence=conf,
        options=options_dict(opts), seconds=measured.seconds,
        peak_memory_bytes=measured.peak_memory_bytes,
        parameter_count=sum(p.numel() for p in model.parameters()), device=str(device),
        notes=notes, extra=extra)


METHOD = Method(
    name="dust3r",
    label="DUSt3R",
    family="discriminative",
    version=VERSION,
    options_type=DUSt3ROptions,
    run=run,
    availability=availability,
    min_views=1,
    max_views=None,
    description=("DUSt3R (Wang et al., CVPR 2024) regresses a pointmap for each image pair with a "
                 "CroCo ViT-L encoder and two cross-attending decoders; more than two views are fused "
                 "by global alignment of the pairwise pointmaps (world = the first view's camera)."),
)
