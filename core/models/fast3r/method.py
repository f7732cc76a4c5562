"""Fast3R as a ReconBench method: all views in one forward pass.

World = view 0's camera (the global head's frame). Points come from the local head aligned to
the global frame (per-view similarity over the 85th-percentile most confident pixels, as the
authors' demo) or from the global head directly (option ``points_from``). Cameras come from
``poses.estimate_cameras`` on the global pointmaps (option ``estimate_cameras``).
Image indices: deterministic (see :func:`modeling_fast3r.default_image_idx`); the reference
draws them at random in every forward pass.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from core import geometry
from core.data.scene import Reconstruction, Scene
from core.options import WEIGHTS_HELP, DeviceOptions, ObjectMaskOptions, PointFilterOptions, option
from core.progress import Progress

from ..croco.runner import (TINY_SIZE, CroCoNetworkMethod, ImageSize, Weights, autocast_context, object_masks,
                            point_cloud, prepare_views)
from .alignment import align_local_to_global
from .config import CHECKPOINT, Fast3RConfig
from .modeling_fast3r import Fast3R
from .poses import estimate_cameras

log = logging.getLogger(__name__)

VERSION = "1"
PointsFrom = Literal["local_aligned", "global"]


@dataclass
class Fast3ROptions(DeviceOptions, PointFilterOptions, ObjectMaskOptions):
    weights: Weights = option("pretrained", WEIGHTS_HELP)
    checkpoint_path: str = option("", "explicit checkpoint file (.safetensors)", advanced=True)
    image_size: ImageSize = option(512, "long side of the network input (the published model: 512); "
                                        f"random-tiny uses {TINY_SIZE}")
    points_from: PointsFrom = option("local_aligned", "local head aligned to the global frame (demo default) "
                                                      "or the global head")
    alignment_percentile: float = option(85.0, "local-to-global alignment uses pixels above this "
                                               "global-confidence percentile", min=0.0, max=99.0, step=1.0,
                                         advanced=True)
    estimate_cameras: bool = option(True, "estimate focal and poses from the global pointmaps (PnP)")


class Fast3RMethod(CroCoNetworkMethod):
    """Fast3R on N views in one pass: points, depth and (PnP) cameras in view 0's camera frame."""

    name = "fast3r"
    label = "Fast3R"
    family = "discriminative"
    version = VERSION
    options_type = Fast3ROptions
    max_views = 1000  # the image-index table's size (decoder_args.max_image_idx)
    description = ("Fast3R (Yang et al., CVPR 2025) encodes every view with a CroCo ViT-L and fuses all "
                   "views' tokens in one transformer; a global head predicts every view's points in the "
                   "first view's camera frame and a local head each view in its own frame.")
    network_cls = Fast3R
    config_cls = Fast3RConfig
    checkpoint = CHECKPOINT

    def flops(self, options: Fast3ROptions, n_views: int, height: int, width: int) -> float:
        """Network FLOPs of one forward (:func:`.flops.fast3r_flops`) at the network input size."""
        from .flops import fast3r_flops

        h, w = self.network_hw(options, height, width)
        return fast3r_flops(int(n_views), h, w, self.network_config(options))["total"]

    def predict(self, model: Fast3R, scene: Scene, view_ids: list[int], options: Fast3ROptions,
                progress: Progress, device: str) -> Reconstruction:
        """Point maps ``[V,h,w,3]``, depth ``[V,h,w]`` (local z times the local-to-global scale),
        the filtered cloud and, with ``estimate_cameras``, cameras (OpenCV ``cam_from_world
        [V,4,4]``, NaN where PnP failed; intrinsics in the scene's pixels), all in view 0's camera
        frame, arbitrary scale.

        ``extra`` records ``network_seconds``, ``image_idx``, ``model_input_size [h, w]``,
        ``local_to_global_scales`` and ``camera_focal_model_px``.
        """
        notes: list[str] = []
        extra: dict = {}
        images, transforms = prepare_views(scene, view_ids, self.input_size(options))
        masks = object_masks(scene, view_ids, transforms) if options.use_object_masks else None
        batch = [img.to(device).unsqueeze(0) for img in images]
        h, w = images[0].shape[-2:]
        progress.check()
        started = time.perf_counter()
        with torch.no_grad(), autocast_context(device):
            out = model(batch, progress=progress.sub(0.05, 0.8))
        extra["network_seconds"] = time.perf_counter() - started
        preds = out.preds
        extra["image_idx"] = out.image_idx[0].tolist()
        pts_global = torch.stack([p.pts3d_in_other_view[0] for p in preds]).float().cpu()
        conf_global = torch.stack([p.conf[0] for p in preds]).float().cpu()
        if preds[0].pts3d_local is None:
            raise ValueError("this Fast3R configuration has no local head (with_local_head false)")
        pts_local = torch.stack([p.pts3d_local[0] for p in preds]).float().cpu()
        conf_local = torch.stack([p.conf_local[0] for p in preds]).float().cpu()
        progress(0.8, "aligning local pointmaps to the global frame")
        aligned, transforms_l2g = align_local_to_global(pts_local, pts_global, conf_global,
                                                        options.alignment_percentile)
        scales = torch.tensor([s for s, _, _ in transforms_l2g])
        depth = pts_local[..., 2] * scales[:, None, None]
        if options.points_from == "local_aligned":
            point_maps, conf = aligned, conf_local
        else:
            point_maps, conf = pts_global, conf_global
        cam_from_world = intrinsics = None
        if options.estimate_cameras:
            progress(0.85, "estimating cameras")
            cams = estimate_cameras(pts_global, conf_global)
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
                intrinsics = np.stack([t.intrinsics_to_original(geometry.dust3r_intrinsics(focal, h, w))
                                       for t in transforms])
        progress(0.95, "building the point cloud")
        point_maps_np = point_maps.numpy()
        conf_np = conf.numpy()
        cloud = point_cloud(point_maps_np, conf_np, images, options.confidence_percentile, masks)
        if options.weights == "random-tiny":
            notes.append(f"random-tiny runs at image size {TINY_SIZE} (its tiny network's input; the image_size "
                         f"option, {options.image_size}, applies to the full-size weights)")
        extra["model_input_size"] = [int(h), int(w)]
        extra["local_to_global_scales"] = scales.tolist()
        return Reconstruction(
            method=self.name, points=cloud["points"], colors=cloud["colors"],
            confidence=cloud["confidence"], source_view=cloud["source_view"], view_ids=list(view_ids),
            cam_from_world=cam_from_world, intrinsics=intrinsics,
            depth_maps=depth.numpy(), depth_confidence=conf_local.numpy(),
            point_maps=point_maps_np, point_confidence=conf_np, notes=notes, extra=extra)


METHOD = Fast3RMethod()
