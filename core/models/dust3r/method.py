"""DUSt3R as a ReconBench method: pairwise pointmaps, fused by global alignment for > 2 views.

1 view: duplicated into the pair (0, 0), as the authors do. 2 views: the pair (0, 1) is used
directly (world = view 0's camera; view 1's camera from the swapped pair). More views: the scene
graph's pairs are predicted (both orders) and fused by ``global_alignment.global_align``, then
re-expressed in view 0's camera frame.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from core import geometry, geometry_torch
from core.data.scene import Reconstruction, Scene
from core.options import WEIGHTS_HELP, DeviceOptions, ObjectMaskOptions, PointFilterOptions, option
from core.progress import Progress

from ..croco.runner import (TINY_SIZE, CroCoNetworkMethod, ImageSize, Weights, autocast_context, object_masks,
                            point_cloud, prepare_views)
from .config import CHECKPOINT, DUSt3RConfig
from .inference import predict_pairs
from .modeling_dust3r import DUSt3R
from .pair_geometry import single_view, two_views
from .scene_graph import SceneGraph, make_pairs

log = logging.getLogger(__name__)

VERSION = "1"
Schedule = Literal["cosine", "linear"]


@dataclass
class DUSt3ROptions(DeviceOptions, PointFilterOptions, ObjectMaskOptions):
    weights: Weights = option("pretrained", WEIGHTS_HELP)
    checkpoint_path: str = option("", "explicit checkpoint file (.safetensors or .pth)", advanced=True)
    image_size: ImageSize = option(512, "long side of the network input (the published model: 512); "
                                        f"random-tiny uses {TINY_SIZE}")
    scene_graph: SceneGraph = option("complete", "which pairs to predict for more than 2 views")
    ga_iterations: int = option(300, "global-alignment iterations (> 2 views)", min=0, max=2000, step=50)
    ga_lr: float = option(0.01, "global-alignment learning rate", min=0.0001, max=0.1, step=0.001,
                          advanced=True)
    ga_schedule: Schedule = option("cosine", "global-alignment learning-rate schedule", advanced=True)
    batch_size: int = option(2, "pairs per forward pass", min=1, max=16, step=1, advanced=True)


def to_view0_frame(result: dict) -> dict:
    """An aligned scene (``cam_from_world [N,4,4]``, ``pts3d [N,H,W,3]`` in the aligner's world)
    re-expressed with view 0's camera as the world (a rigid change of world; float64 poses)."""
    cams = torch.as_tensor(result["cam_from_world"], dtype=torch.float64)
    change = cams[0]  # new world (view 0's camera) from the old world
    out = dict(result)
    out["cam_from_world"] = cams @ geometry_torch.invert_transform(change)
    out["pts3d"] = geometry_torch.transform_points(change, torch.as_tensor(result["pts3d"]).double()).float()
    return out


class DUSt3RMethod(CroCoNetworkMethod):
    """DUSt3R on N views: pair predictions, global alignment above 2 views, world = view 0's camera."""

    name = "dust3r"
    label = "DUSt3R"
    family = "discriminative"
    version = VERSION
    options_type = DUSt3ROptions
    description = ("DUSt3R (Wang et al., CVPR 2024) regresses a pointmap for each image pair with a "
                   "CroCo ViT-L encoder and two cross-attending decoders; more than two views are fused "
                   "by global alignment of the pairwise pointmaps (world = the first view's camera).")
    network_cls = DUSt3R
    config_cls = DUSt3RConfig
    checkpoint = CHECKPOINT

    def pairs(self, n_views: int, options: DUSt3ROptions) -> list[tuple[int, int]]:
        """The ordered pairs :meth:`predict` evaluates for ``n_views`` views."""
        if n_views == 1:
            return [(0, 0)]
        if n_views == 2:
            return [(0, 1), (1, 0)]
        return make_pairs(n_views, options.scene_graph, symmetrize=True)

    def flops(self, options: DUSt3ROptions, n_views: int, height: int, width: int) -> float:
        """Network FLOPs (:func:`.flops.dust3r_flops`): one encoder pass per distinct view, decoders
        and heads per ordered pair of the scene graph, at the network input size."""
        from .flops import dust3r_flops

        pairs = self.pairs(int(n_views), options)
        h, w = self.network_hw(options, height, width)
        return dust3r_flops(len({i for pair in pairs for i in pair}), len(pairs), h, w,
                            self.network_config(options))["total"]

    def load(self, options, device: str) -> torch.nn.Module:
        """The network (:meth:`CroCoNetworkMethod.load`), with Adam warmed up for the alignment."""
        from core.models.dust3r.global_alignment.optimiser import warm_up_adam

        model = super().load(options, device)
        warm_up_adam()
        return model

    def alignment_work(self, options: DUSt3ROptions, n_views: int, height: int, width: int) -> tuple[float, float]:
        """Global alignment's work for the cost estimate: ``(iterations, iterations x edges
        (unordered pairs) x network pixels per view)``; none for 1 or 2 views."""
        n = int(n_views)
        if n <= 2:
            return 0.0, 0.0
        h, w = self.network_hw(options, height, width)
        return float(options.ga_iterations), float(options.ga_iterations * (len(self.pairs(n, options)) // 2) * h * w)

    def predict(self, model: DUSt3R, scene: Scene, view_ids: list[int], options: DUSt3ROptions,
                progress: Progress, device: str) -> Reconstruction:
        """Cameras (OpenCV ``cam_from_world [V,4,4]``, intrinsics in the scene's pixels), depth
        ``[V,h,w]``, point maps ``[V,h,w,3]`` and the filtered cloud in view 0's camera frame,
        arbitrary scale.

        ``extra`` records ``network_seconds``, ``alignment_seconds`` (two-view geometry, or global
        alignment for more than 2 views), ``pairs_evaluated``, ``encoder_passes`` (distinct views:
        each is encoded once), ``model_input_size [h, w]`` and, for more than 2 views, the
        alignment's ``loss_history``, ``ga_optimise_seconds`` and ``ga_iterations_per_s``.
        """
        notes: list[str] = []
        extra: dict = {}
        images, transforms = prepare_views(scene, view_ids, self.input_size(options))
        masks = object_masks(scene, view_ids, transforms) if options.use_object_masks else None
        images = [img.to(device) for img in images]
        n = len(images)
        h, w = images[0].shape[-2:]
        pairs = self.pairs(n, options)
        if n == 1:
            notes.append("single view: the image is paired with itself, as the authors do")
        progress.check()
        started = time.perf_counter()
        pred = predict_pairs(model, images, pairs, batch_size=options.batch_size,
                             progress=progress.sub(0.05, 0.6 if n > 2 else 0.9),
                             autocast=lambda: autocast_context(device))
        extra["pairs_evaluated"] = len(pairs)
        extra["encoder_passes"] = len({i for pair in pairs for i in pair})
        extra["network_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        if n == 1:
            result = single_view(pred)
        elif n == 2:
            result = two_views(pred)
        else:
            from .global_alignment import global_align  # only > 2 views need the aligner (and scipy)

            ga_options = {"niter": options.ga_iterations, "lr": options.ga_lr, "schedule": options.ga_schedule,
                          "init": "mst", "device": device}
            edges = pairs[: len(pairs) // 2]
            result = to_view0_frame(global_align(pred, [(h, w)] * n, edges, ga_options, progress.sub(0.6, 0.95)))
            extra["loss_history"] = [float(x) for x in result.get("loss_history", [])]
            extra["ga_optimise_seconds"] = float(result["optimise_seconds"])
            extra["ga_iterations_per_s"] = float(result["iterations_per_s"])
        extra["alignment_seconds"] = time.perf_counter() - started
        progress(0.95, "building the point cloud")
        point_maps = torch.as_tensor(result["pts3d"]).float().cpu().numpy()
        conf = torch.as_tensor(result["im_conf"]).float().cpu().numpy()
        cloud = point_cloud(point_maps, conf, images, options.confidence_percentile, masks)
        focals = torch.as_tensor(result["focals"]).double().reshape(-1).cpu().numpy()
        pps = torch.as_tensor(result["principal_points"]).double().reshape(-1, 2).cpu().numpy()
        intrinsics = []
        for k, transform in enumerate(transforms):
            k_model = geometry.dust3r_intrinsics(float(focals[k]), h, w)
            k_model[0, 2], k_model[1, 2] = pps[k]
            intrinsics.append(transform.intrinsics_to_original(k_model))
        if options.weights == "random-tiny":
            notes.append(f"random-tiny runs at image size {TINY_SIZE} (its tiny network's input; the image_size "
                         f"option, {options.image_size}, applies to the full-size weights)")
        extra["model_input_size"] = [int(h), int(w)]
        return Reconstruction(
            method=self.name, points=cloud["points"], colors=cloud["colors"],
            confidence=cloud["confidence"], source_view=cloud["source_view"], view_ids=list(view_ids),
            cam_from_world=torch.as_tensor(result["cam_from_world"]).double().cpu().numpy(),
            intrinsics=np.stack(intrinsics),
            depth_maps=torch.as_tensor(result["depthmaps"]).float().cpu().numpy(),
            depth_confidence=conf, point_maps=point_maps, point_confidence=conf, notes=notes, extra=extra)


METHOD = DUSt3RMethod()
