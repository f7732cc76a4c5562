"""ReconBench methods ``da3-small`` and ``da3-base``: Depth Anything 3 any-view on N views.

Two registered names rather than one ``da3`` method with a ``variant`` option: the two
checkpoints are different architectures (34 M against 135 M parameters) with different costs,
so the leaderboard, the view-count scaling study and the cache keep them apart the way users
compare them (as separate models), and each name's ``checkpoints()`` and licence are fixed.
``core.models.da3.small`` and ``core.models.da3.base`` each expose one of them as ``METHOD``.

Covered: the Apache-2.0 any-view Small and Base checkpoints only. Metric (DA3METRIC-LARGE),
mono (DA3MONO-LARGE), Large, Giant and nested (DA3NESTED-GIANT-LARGE) checkpoints are out of scope
(CC BY-NC 4.0 or other architectures); a config.json describing one is refused with a message.

Frames. DA3's own world frame is its reference view's camera (the view chosen by
``saddle_balanced`` among 3+ views, else the first), scale arbitrary. ReconBench's output frame
is the first input view's camera, as VGGT's: every predicted world-to-camera pose ``E_i`` is
mapped to ``E_i E_0⁻¹`` (view 0 becomes the identity); depth maps are unchanged (per-camera).
With "condition on the scene's cameras" the API's alignment is applied: the Umeyama Sim(3) from
the scene's camera centres onto the predicted ones gives a scale s, depth is divided by s and
the cameras are the scene's own (relative to view 0, so in the scene's units) with their
intrinsics; points are the depth unprojected with those cameras.
"""
from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from core import geometry
from core.data.scene import Reconstruction, Scene
from core.errors import UserError
from core.models.random_weights import fill_random_
from core.models.registry import Method
from core.models.vggt.processing import point_cloud
from core.options import (RANDOM_WEIGHTS, WEIGHTS_HELP, DeviceOptions, ObjectMaskOptions,
                          option)
from core.progress import Progress

from .checkpoints import VARIANTS, load_pretrained
from .config import DA3Config
from .modeling_da3 import DepthAnything3
from .processing import (DEFAULT_PROCESS_RES, align_to_known_poses, denormalize,
                         normalize_extrinsics, preprocess_images, scale_intrinsics)

log = logging.getLogger(__name__)

VERSION = "1"
Weights = Literal["pretrained", "random-tiny", "random-full"]
CameraSource = Literal["camera decoder", "rays"]
RefView = Literal["saddle_balanced", "first", "middle"]
MIN_CONDITIONED_VIEWS = 3


class DA3InputError(UserError):
    """Inputs the DA3 method cannot use (e.g. the scene's cameras for too few views)."""


@dataclass
class DA3Options(DeviceOptions, ObjectMaskOptions):
    weights: Weights = option("pretrained", WEIGHTS_HELP)
    checkpoint_path: str = option("", "explicit model.safetensors (a config.json beside it is "
                                      "read when present)", advanced=True)
    process_res: int = option(DEFAULT_PROCESS_RES, "longest image side before rounding to "
                                                   "multiples of 14 (the authors' default 504)",
                              min=14, max=2016, step=14)
    condition_on_scene_cameras: bool = option(
        False, "give the scene's cameras to the camera encoder (known poses in, 3+ views); "
               "depth is scaled to the scene's units and the scene's cameras are output")
    camera_source: CameraSource = option("camera decoder", "cameras from the camera decoder, or "
                                                           "decoded from the predicted rays "
                                                           "(RANSAC)")
    ransac_seed: int = option(0, "seed of the ray decoder's RANSAC draws (recorded in the run)",
                              min=0, advanced=True)
    ref_view_strategy: RefView = option("saddle_balanced", "reference view among 3+ views",
                                        advanced=True)
    confidence_percentile: float = option(40.0, "drop points below this confidence percentile "
                                                "(the authors' export drops 40 %)",
                                          min=0.0, max=100.0, step=1.0)


def _perturb(model: torch.nn.Module, seed: int, scale: float) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            param.add_(torch.randn(param.shape, generator=generator) * scale)


def random_tiny_model(seed: int = 0) -> DepthAnything3:
    """The fixture's tiny configuration with seeded random weights (each tensor perturbed by
    N(0, 0.05), seeded by its name)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DepthAnything3(DA3Config.tiny())
    _perturb(model, seed, 0.05)
    return model.eval()


def random_full_model(config: DA3Config | None = None, seed: int = 0,
                      device: str = "cpu") -> DepthAnything3:
    """A full-size architecture (default DA3-SMALL) with seeded random weights, built on the
    meta device and filled in place (one copy of the weights)."""
    with torch.device("meta"):
        model = DepthAnything3(config or DA3Config())
    # DA3's rules: LayerScale starts at 1 and every 1-D weight is a normalisation scale.
    return fill_random_(model.to_empty(device=device), seed, layer_scale=1.0,
                        is_norm_weight=lambda name, param: param.ndim == 1 and name.endswith("weight")).eval()


class DA3Method(Method):
    """Depth Anything 3 any-view (one checkpoint variant per subclass)."""

    variant: ClassVar[str]
    family = "discriminative"
    version = VERSION
    options_type = DA3Options

    def checkpoints(self, options: DA3Options) -> tuple:
        if options.weights in RANDOM_WEIGHTS:
            return ()
        model, config, _ = VARIANTS[self.variant]
        return (model,) if options.checkpoint_path else (model, config)

    def load(self, options: DA3Options, device: str) -> DepthAnything3:
        if options.weights == "random-tiny":
            return random_tiny_model().to(device)
        if options.weights == "random-full":
            return random_full_model(VARIANTS[self.variant][2](), device=device)
        return load_pretrained(self.variant, options.checkpoint_path, device)

    def flops(self, options: DA3Options, n_views: int, height: int, width: int) -> float:
        """FLOPs of one forward (:func:`.flops.da3_flops`) of the configuration the options load,
        on ``n_views`` pictures of ``height x width`` pixels after the ``process_res`` resize."""
        from .flops import da3_flops

        config = DA3Config.tiny() if options.weights == "random-tiny" else VARIANTS[self.variant][2]()
        x, _ = preprocess_images([np.zeros((int(height), int(width), 3), np.uint8)], options.process_res)
        return da3_flops(int(n_views), int(x.shape[-2]), int(x.shape[-1]), config,
                         with_cameras=bool(options.condition_on_scene_cameras))["total"]

    def predict(self, model: DepthAnything3, scene: Scene, view_ids: list[int],
                options: DA3Options, progress: Progress, device: str) -> Reconstruction:
        """Cameras (OpenCV ``cam_from_world [V,4,4]`` in the first view's frame, intrinsics in
        the scene's pixels), depth ``[V,H',W']`` at the network size and the filtered cloud."""
        images = [scene.images[v] for v in view_ids]
        notes: list[str] = []
        progress(0.1, f"preprocessing {len(images)} view(s) (longest side {options.process_res})")
        x, transforms = preprocess_images(images, options.process_res)
        hw = tuple(x.shape[-2:])
        known_e = known_k = None
        if options.condition_on_scene_cameras:
            known_e, known_k = self._scene_cameras(scene, view_ids, transforms, options, hw)
        progress(0.2, f"running {self.label} on {len(images)} view(s) at {hw[1]}x{hw[0]}")
        generator = torch.Generator().manual_seed(options.ransac_seed)
        with torch.inference_mode():
            out = model(x[None].to(device),
                        extrinsics=None if known_e is None else
                        normalize_extrinsics(known_e[None]).to(device),
                        intrinsics=None if known_k is None else known_k[None].to(device),
                        use_ray_pose=options.camera_source == "rays",
                        ref_view_strategy=options.ref_view_strategy, export_feat_layers=(),
                        generator=generator,
                        autocast_dtype=torch.bfloat16 if device == "cuda" else None)
        progress.check()
        progress(0.85, "building the point cloud")
        predicted = geometry.as_4x4(out.extrinsics[0].double().cpu().numpy())
        k_net = out.intrinsics[0].double().cpu().numpy()
        depth = out.depth[0].float().cpu().numpy()
        conf = out.depth_conf[0].float().cpu().numpy()
        extra = {"network_hw": list(hw), "camera_source": options.camera_source,
                 "intrinsics_network": k_net.tolist(),
                 "frame": "first input view's camera (OpenCV); DA3's own frame is its reference "
                          "view's camera"}
        if out.ref_index is not None:
            extra["reference_view"] = int(view_ids[int(out.ref_index[0])])
        if out.ransac_draws is not None:
            extra["ransac_draws"] = out.ransac_draws.tolist()
        if known_e is not None:
            alignment = align_to_known_poses(known_e.numpy(), predicted)
            depth = (depth / alignment.scale).astype(np.float32)
            cam_from_world = geometry.as_4x4(known_e.double().numpy())
            k_net = known_k.double().numpy()
            intrinsics = np.asarray(scene.intrinsics[view_ids], dtype=np.float64)
            extra.update({"umeyama_scale": alignment.scale,
                          "umeyama_rotation": alignment.rotation.tolist(),
                          "umeyama_translation": alignment.translation.tolist(),
                          "frame": "first input view's camera (OpenCV), the scene's units "
                                   "(depth divided by the Umeyama scale onto the scene's cameras)"})
        else:
            cam_from_world = predicted
            intrinsics = np.stack([t.intrinsics_to_original(k) for t, k in zip(transforms, k_net)])
        cam_from_world = cam_from_world @ np.linalg.inv(cam_from_world[0])
        world = geometry.depth_to_point_map(depth, k_net, cam_from_world).astype(np.float32)
        masks = None
        if options.use_object_masks:
            if scene.masks is None:
                notes.append("use_object_masks is on but the scene has no object masks")
            else:
                masks = np.stack([t.warp_mask(scene.masks[v]) for t, v in zip(transforms, view_ids)])
        cloud = point_cloud(world, conf, denormalize(x), None, options.confidence_percentile, 0.0,
                            masks)
        progress(1.0, f"{self.label}: {len(cloud.points):,} points")
        return Reconstruction(
            method=self.name, points=cloud.points, colors=cloud.colors,
            confidence=cloud.confidence, source_view=cloud.source_view, view_ids=view_ids,
            cam_from_world=cam_from_world, intrinsics=intrinsics, depth_maps=depth,
            depth_confidence=conf, point_maps=world, point_confidence=conf, notes=notes,
            extra=extra)

    @staticmethod
    def _scene_cameras(scene: Scene, view_ids: list[int], transforms, options: DA3Options,
                       hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The scene's world-to-camera ``[V,4,4]`` and network-pixel intrinsics ``[V,3,3]``."""
        if len(view_ids) < MIN_CONDITIONED_VIEWS:
            raise DA3InputError(f"condition_on_scene_cameras needs at least "
                                f"{MIN_CONDITIONED_VIEWS} views (the alignment to the scene's "
                                f"cameras is a similarity fit); got {len(view_ids)}")
        poses = geometry.as_4x4(np.asarray(scene.cam_from_world[view_ids], dtype=np.float64))
        ks = np.asarray(scene.intrinsics[view_ids], dtype=np.float64)
        bad = [v for v, p, k in zip(view_ids, poses, ks)
               if not (np.isfinite(p).all() and np.isfinite(k).all())]
        if bad:
            raise DA3InputError(f"condition_on_scene_cameras: views {bad} have no camera in "
                                f"the scene")
        k_net = np.stack([scale_intrinsics(k, t.original_hw, hw, options.process_res)
                          for k, t in zip(ks, transforms)])
        return torch.from_numpy(poses).float(), torch.from_numpy(k_net).float()


class DA3SmallMethod(DA3Method):
    name = "da3-small"
    label = "DA3 Small"
    variant = "small"
    description = ("Depth Anything 3 Small (any-view, Apache-2.0): a DINOv2 ViT-S/14 whose later "
                   "blocks alternate per-view and all-view attention predicts per-view depth, "
                   "rays and cameras in one pass; optional known cameras in. 34.3 M parameters. "
                   "Metric, mono, Large, Giant and nested DA3 checkpoints are not covered.")


class DA3BaseMethod(DA3Method):
    name = "da3-base"
    label = "DA3 Base"
    variant = "base"
    description = ("Depth Anything 3 Base (any-view, Apache-2.0): a DINOv2 ViT-B/14 with "
                   "alternating per-view / all-view attention predicting depth, rays and cameras "
                   "in one pass; optional known cameras in. 135.4 M parameters. Metric, mono, "
                   "Large, Giant and nested DA3 checkpoints are not covered.")


SMALL = DA3SmallMethod()
BASE = DA3BaseMethod()
