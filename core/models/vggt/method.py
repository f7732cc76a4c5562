"""ReconBench method ``vggt``: feed-forward cameras, depth and points from N views.

Output frame: the first input view's camera (VGGT's world frame), scale as predicted.
Intrinsics are mapped back to the scene's original image pixels through the preprocessing
transform (see :mod:`.processing`).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from core import geometry
from core.models.random_weights import fill_random_
from core.models.registry import Method
from core.options import (RANDOM_WEIGHTS, WEIGHTS_HELP, DeviceOptions, ObjectMaskOptions,
                          option)
from core.progress import Progress
from core.data.scene import Reconstruction, Scene

from .checkpoints import CHECKPOINTS, load_pretrained, materialize_buffers
from .config import VGGTConfig
from .modeling_vggt import VGGT
from .pose_encoding import pose_encoding_to_extrinsics_intrinsics
from .processing import point_cloud, preprocess_images

log = logging.getLogger(__name__)

VERSION = "2"  # 2: intrinsics mapped back to the scene's pixels with integer pixel centres (runs of 1 are recomputed)
Weights = Literal["pretrained", "random-tiny", "random-full"]
CheckpointName = Literal["vggt-1b", "vggt-1b-commercial"]
Preprocess = Literal["crop", "pad"]
Branch = Literal["depth+camera", "point map"]


@dataclass
class VGGTOptions(DeviceOptions, ObjectMaskOptions):
    weights: Weights = option("pretrained", WEIGHTS_HELP)
    checkpoint: CheckpointName = option("vggt-1b", "which published checkpoint", advanced=True)
    checkpoint_path: str = option("", "explicit checkpoint file (model.pt or .safetensors)",
                                  advanced=True)
    preprocess: Preprocess = option("crop", "crop: width 518, centre-crop height; pad: longest "
                                            "side 518, pad to a white square")
    branch: Branch = option("depth+camera", "points from depth unprojected with the predicted "
                                            "cameras, or from the point-map head")
    confidence_percentile: float = option(50.0, "drop points below this confidence percentile",
                                          min=0.0, max=100.0, step=1.0)
    min_confidence: float = option(0.0, "drop points below this confidence (>= 1 by design)",
                                   min=0.0, step=0.1)
    frames_chunk_size: int = option(2, "frames per dense-head chunk (memory vs speed)",
                                    min=1, max=64, step=1, advanced=True)


def random_tiny_model(seed: int = 0) -> VGGT:
    """The fixture's tiny configuration with seeded random weights (every tensor perturbed by
    N(0, 0.05) so no branch is silently zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = VGGT(VGGTConfig.tiny())
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return model.eval()


def random_full_model(config: VGGTConfig | None = None, seed: int = 0,
                      device: str = "cpu") -> VGGT:
    """VGGT-1B's architecture with seeded random weights (see :func:`fill_random_`).

    Built on the meta device and filled in place, so only one copy of the weights exists.
    """
    with torch.device("meta"):
        model = VGGT(config or VGGTConfig())
    model = fill_random_(model.to_empty(device=device), seed)
    materialize_buffers(model, device)
    return model.eval()


@functools.lru_cache(maxsize=64)
def _network_hw(height: int, width: int, preprocess: str) -> tuple[int, int]:
    """(H', W') of the network input for a ``height x width`` picture (see :mod:`.processing`)."""
    _, transforms = preprocess_images([np.zeros((height, width, 3), np.uint8)], preprocess)
    return transforms[0].network_hw


class VGGTMethod(Method):
    """VGGT on N views: cameras, depth and points in the first view's camera frame."""

    name = "vggt"
    label = "VGGT"
    label_options = ("checkpoint",)
    family = "discriminative"
    version = VERSION
    options_type = VGGTOptions
    description = ("VGGT (Visual Geometry Grounded Transformer, CVPR 2025): one feed-forward pass "
                   "predicts every view's camera, depth map and point map. DINOv2 patch tokens "
                   "go through 24 alternating frame/global attention blocks; a camera head and "
                   "two DPT heads read them. 1.26 B parameters (VGGT-1B).")

    def checkpoints(self, options: VGGTOptions) -> tuple:
        return () if options.weights in RANDOM_WEIGHTS else (CHECKPOINTS[options.checkpoint],)

    def load(self, options: VGGTOptions, device: str) -> VGGT:
        if options.weights == "random-tiny":
            return random_tiny_model().to(device)
        if options.weights == "random-full":
            return random_full_model(device=device)
        return load_pretrained(CHECKPOINTS[options.checkpoint], options.checkpoint_path, device)

    def flops(self, options: VGGTOptions, n_views: int, height: int, width: int) -> float:
        """FLOPs of one forward (:func:`.flops.vggt_flops`) of the configuration the options load
        (the tiny one for random-tiny, VGGT-1B otherwise) with the heads their branch runs, on
        ``n_views`` pictures of ``height x width`` pixels after the options' preprocessing."""
        from .flops import vggt_flops

        config = VGGTConfig.tiny() if options.weights == "random-tiny" else VGGTConfig()
        net_h, net_w = _network_hw(int(height), int(width), options.preprocess)
        heads = ("camera", "depth") + (("point",) if options.branch == "point map" else ())
        return vggt_flops(int(n_views), net_h, net_w, config, heads=heads)["total"]

    def predict(self, model: VGGT, scene: Scene, view_ids: list[int], options: VGGTOptions,
                progress: Progress, device: str) -> Reconstruction:
        """Cameras (OpenCV ``cam_from_world [V,4,4]``, intrinsics in the scene's pixels), depth
        ``[V,h,w]`` and the confidence-filtered cloud, in the first view's camera frame."""
        cuda = device == "cuda"
        images = [scene.images[v] for v in view_ids]
        notes = []
        progress(0.1, f"preprocessing {len(images)} view(s) ({options.preprocess})")
        tensor, transforms = preprocess_images(images, options.preprocess)
        hw = tuple(tensor.shape[-2:])
        heads = ("camera", "depth") + (("point",) if options.branch == "point map" else ())
        progress(0.2, f"running VGGT on {len(images)} view(s) at {hw[1]}x{hw[0]}")
        with torch.inference_mode():
            out = model(tensor.to(device), heads=heads, frames_chunk_size=options.frames_chunk_size,
                        autocast_dtype=torch.bfloat16 if cuda else None)
        progress.check()
        progress(0.85, "building the point cloud")
        pose_enc = out.pose_enc[0].float()
        cam_from_world, k_net = pose_encoding_to_extrinsics_intrinsics(pose_enc, hw, homogeneous=True)
        cam_from_world = cam_from_world.double().cpu().numpy()
        k_net = k_net.double().cpu().numpy()
        depth = out.depth[0, ..., 0].float().cpu().numpy()
        depth_conf = out.depth_conf[0].float().cpu().numpy()
        if options.branch == "point map":
            world = out.world_points[0].float().cpu().numpy()
            conf = out.world_points_conf[0].float().cpu().numpy()
        else:
            world = geometry.depth_to_point_map(depth, k_net, cam_from_world).astype(np.float32)
            conf = depth_conf
        masks = None
        if options.use_object_masks:
            if scene.masks is None:
                notes.append("use_object_masks is on but the scene has no object masks")
            else:
                masks = np.stack([t.warp(scene.masks[v]) for t, v in zip(transforms, view_ids)])
        cloud = point_cloud(world, conf, tensor.numpy(), transforms, options.confidence_percentile,
                            options.min_confidence, masks)
        intrinsics = np.stack([t.intrinsics_to_original(k) for t, k in zip(transforms, k_net)])
        progress(1.0, f"VGGT: {len(cloud.points):,} points")
        return Reconstruction(
            method=self.name, points=cloud.points, colors=cloud.colors,
            confidence=cloud.confidence, source_view=cloud.source_view, view_ids=view_ids,
            cam_from_world=cam_from_world, intrinsics=intrinsics, depth_maps=depth,
            depth_confidence=depth_conf, point_maps=world, point_confidence=conf, notes=notes,
            extra={"network_hw": list(hw),
                   "pose_enc": pose_enc.cpu().numpy().tolist(),
                   "intrinsics_network": k_net.tolist(),
                   "transforms": [{"original_hw": list(t.original_hw), "scale": list(t.scale),
                                   "offset": list(t.offset), "network_hw": list(t.network_hw)}
                                  for t in transforms],
                   "frame": "first input view's camera (OpenCV), VGGT's predicted scale"})


METHOD = VGGTMethod()
