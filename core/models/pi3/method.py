"""ReconBench methods ``pi3`` and ``pi3x``: π³ and Pi3X, feed-forward cameras and point maps
from N views (no reference view: permuting the views permutes the outputs).

Output frame: the authors' world frame is the model's own, learned one (π³ anchors nothing to an
input view; Pi3X, when conditioned on cameras, works relative to view 0). ReconBench maps every
output into the FIRST INPUT VIEW'S CAMERA like VGGT: with ``P_0`` view 0's predicted
camera-to-world, points become ``P_0^-1 x`` and camera i's ``cam_from_world`` becomes
``P_i^-1 P_0`` (a rigid change of frame: distances and the model's scale are kept; π³'s scale is
arbitrary, Pi3X's is its predicted metric scale).

Intrinsics: π³ predicts none; each view's focal is fitted to its local point map (principal
point at the network image's centre, :func:`core.geometry.focal_from_point_map`) and mapped back
to the scene's pixels.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
from PIL import Image

from core import geometry
from core.models.registry import Method
from core.options import (RANDOM_WEIGHTS, WEIGHTS_HELP, DeviceOptions, ObjectMaskOptions,
                          option)
from core.progress import Progress
from core.data.scene import Reconstruction, Scene

from .checkpoints import CHECKPOINTS, LICENCE, load_pretrained
from .config import Pi3Config
from .modeling_pi3 import Pi3, Pi3InputError
from .processing import (MIN_CONFIDENCE, PIXEL_LIMIT, confidence_keep, intrinsics_to_network,
                         preprocess_images, sigmoid)

log = logging.getLogger(__name__)

VERSION = "1"
Weights = Literal["pretrained", "random-tiny", "random-full"]
ConditionOn = Literal["none", "intrinsics", "cameras", "intrinsics+cameras"]


@dataclass
class Pi3Options(DeviceOptions, ObjectMaskOptions):
    weights: Weights = option("pretrained", WEIGHTS_HELP + f" (published weights: {LICENCE}, "
                                                          "non-commercial)")
    checkpoint_path: str = option("", "explicit checkpoint file (model.safetensors)", advanced=True)
    min_confidence: float = option(MIN_CONFIDENCE, "keep pixels whose confidence sigmoid(logit) "
                                   "exceeds this (authors' 0.1)", min=0.0, max=1.0, step=0.05)
    confidence_percentile: float = option(0.0, "also drop points below this confidence "
                                          "percentile", min=0.0, max=100.0, step=1.0)
    pixel_limit: int = option(PIXEL_LIMIT, "resize every view to at most this many pixels (the "
                              "first view's aspect; authors' 255,000)", min=196, max=2_000_000,
                              step=1000, advanced=True)


@dataclass
class Pi3XOptions(Pi3Options):
    condition_on: ConditionOn = option(
        "none", "give Pi3X the scene's known intrinsics and/or cameras (cam_from_world) of the "
                "chosen views; 'none' reconstructs unposed")


def perturb_(model: torch.nn.Module, seed: int = 0, sigma: float = 0.05) -> torch.nn.Module:
    """Add seeded N(0, sigma) noise to every parameter (as the conformance fixtures do, so no
    branch is silently zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator).to(param.device) * sigma)
    return model


def random_tiny_model(variant: str = "pi3", multimodal: bool = True, seed: int = 0) -> Pi3:
    """The fixture's tiny configuration with seeded random weights."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Pi3(dataclasses.replace(Pi3Config.tiny(variant), multimodal=multimodal))
    return perturb_(model, seed).eval()


def random_full_model(config: Pi3Config | None = None, seed: int = 0, device: str = "cpu") -> Pi3:
    """The published architecture with seeded random weights, built on the meta device and filled
    in place (one copy of the weights; see :func:`core.models.random_weights.fill_random_`)."""
    from core.models.random_weights import fill_random_

    with torch.device("meta"):
        model = Pi3(config or Pi3Config())
    model = fill_random_(model.to_empty(device=device), seed)
    model.reset_buffers()
    return model.eval()


class _Pi3Family(Method):
    """Shared by ``pi3`` and ``pi3x``: loading, preprocessing, frame change, point filter."""

    variant: ClassVar[str]
    family = "discriminative"
    version = VERSION

    def _multimodal(self, options) -> bool:
        return False

    def checkpoints(self, options) -> tuple:
        return () if options.weights in RANDOM_WEIGHTS else (CHECKPOINTS[self.variant],)

    def model_key(self, options) -> tuple:
        return super().model_key(options) + (("multimodal", self._multimodal(options)),)

    def load(self, options, device: str) -> Pi3:
        multimodal = self._multimodal(options)
        if options.weights == "random-tiny":
            return random_tiny_model(self.variant, multimodal).to(device)
        if options.weights == "random-full":
            return random_full_model(Pi3Config(variant=self.variant, multimodal=multimodal),
                                     device=device)
        return load_pretrained(self.variant, options.checkpoint_path, device, multimodal)

    def _conditions(self, scene: Scene, view_ids: list[int], scales, options, device) -> dict:
        return {}

    def flops(self, options, n_views: int, height: int, width: int) -> float:
        """FLOPs of one forward (:func:`.flops.pi3_flops`) of the configuration the options load,
        on ``n_views`` pictures of ``height x width`` pixels after the pixel-limit resize."""
        from .flops import pi3_flops
        from .processing import target_size

        config = dataclasses.replace(
            Pi3Config.tiny(self.variant) if options.weights == "random-tiny"
            else Pi3Config(variant=self.variant), multimodal=self._multimodal(options))
        net_w, net_h = target_size(int(width), int(height), options.pixel_limit)
        condition = getattr(options, "condition_on", "none")
        given = (("intrinsics",) if "intrinsics" in condition else ()) + \
            (("poses",) if "cameras" in condition else ())
        return pi3_flops(int(n_views), net_h, net_w, config, given)["total"]

    def predict(self, model: Pi3, scene: Scene, view_ids: list[int], options, progress: Progress,
                device: str) -> Reconstruction:
        """Cameras (OpenCV ``cam_from_world [V,4,4]``), fitted intrinsics in the scene's pixels,
        depth ``[V,h,w]`` and the confidence-filtered cloud, in the first view's camera frame."""
        images = [scene.images[v] for v in view_ids]
        progress(0.1, f"preprocessing {len(images)} view(s)")
        tensor, scales = preprocess_images(images, options.pixel_limit)
        h, w = tensor.shape[-2:]
        conditions = self._conditions(scene, view_ids, scales, options, device)
        progress(0.2, f"running {self.label} on {len(images)} view(s) at {w}x{h}")
        with torch.inference_mode():
            out = model(tensor.to(device), autocast_dtype=torch.bfloat16 if device == "cuda" else None,
                        **conditions)
        progress.check()
        progress(0.85, "building the point cloud")
        c2w = out.camera_poses[0].double().cpu().numpy()
        first_from_world = geometry.invert_transform(c2w[0])
        cam_from_world = np.stack([geometry.invert_transform(p) @ c2w[0] for p in c2w])
        world = out.points[0].double().cpu().numpy()
        points = geometry.transform_points(first_from_world, world.reshape(-1, 3)).reshape(world.shape)
        points = points.astype(np.float32)
        local = out.local_points[0].float().cpu().numpy()
        depth = local[..., 2].copy()
        probability = sigmoid(out.conf[0, ..., 0].float().cpu().numpy())
        notes = []
        valid = np.isfinite(points).all(-1)
        if options.use_object_masks:
            if scene.masks is None:
                notes.append("use_object_masks is on but the scene has no object masks")
            else:
                valid &= np.stack([np.asarray(Image.fromarray(scene.masks[v].astype(np.uint8) * 255)
                                              .resize((w, h), Image.NEAREST)) > 127 for v in view_ids])
        keep = confidence_keep(probability, options.min_confidence, options.confidence_percentile,
                               valid)
        colors = np.clip(np.round(tensor.permute(0, 2, 3, 1).numpy() * 255), 0, 255).astype(np.uint8)
        view, _, _ = np.nonzero(keep)
        intrinsics = self._intrinsics(local, probability > options.min_confidence, scales, (h, w))
        if intrinsics is None:
            notes.append("no positive focal fits a view's point map: intrinsics not estimated")
        extra = {"network_hw": [int(h), int(w)], "scales": [list(s) for s in scales],
                 "camera_to_world_model_frame": c2w.tolist(),
                 "frame": f"first input view's camera (OpenCV); {self._scale_note(out)}"}
        if out.metric is not None:
            extra["metric_scale"] = float(out.metric[0])
        if conditions:
            extra["conditioned_on"] = options.condition_on
        progress(1.0, f"{self.label}: {int(keep.sum()):,} points")
        return Reconstruction(
            method=self.name, points=points[keep], colors=colors[keep],
            confidence=probability[keep], source_view=view.astype(np.int32), view_ids=view_ids,
            cam_from_world=cam_from_world, intrinsics=intrinsics, depth_maps=depth.astype(np.float32),
            depth_confidence=probability, point_maps=points, point_confidence=probability,
            notes=notes, extra=extra)

    def _scale_note(self, out) -> str:
        return "π³'s arbitrary scale"

    @staticmethod
    def _intrinsics(local: np.ndarray, mask: np.ndarray, scales, hw) -> np.ndarray | None:
        """Per view ``[V,3,3]`` in the scene's pixels: the focal fitted to the local point map
        (principal point at the network image's centre), or None when a view has no positive fit."""
        h, w = hw
        out = []
        for points, valid, scale in zip(local, mask, scales):
            usable = valid & np.isfinite(points).all(-1) & (points[..., 2] > 0)
            focal = geometry.focal_from_point_map(points, ((w - 1) / 2, (h - 1) / 2),
                                                  usable if usable.any() else None)
            if not np.isfinite(focal) or focal <= 0:
                return None
            k = np.array([[focal, 0, (w - 1) / 2], [0, focal, (h - 1) / 2], [0, 0, 1.0]])
            out.append(geometry.resize_crop_intrinsics(k, scale, inverse=True))
        return np.stack(out)


class Pi3Method(_Pi3Family):
    """π³ on N views: cameras and point maps in the first view's camera frame."""

    name = "pi3"
    label = "π³"
    variant = "pi3"
    options_type = Pi3Options
    description = ("π³ (Pi3, 2025): permutation-equivariant feed-forward reconstruction. A DINOv2 "
                   "ViT-L/14 encodes each view; 36 blocks alternate per-view and all-view "
                   "attention without any reference view; heads predict per-view point maps, "
                   "confidences and camera poses. 959 M parameters; weights CC BY-NC 4.0.")


class Pi3XMethod(_Pi3Family):
    """Pi3X: π³ with conv heads, metric scale and optional known intrinsics / cameras."""

    name = "pi3x"
    label = "Pi3X"
    variant = "pi3x"
    options_type = Pi3XOptions
    description = ("Pi3X: π³ with convolutional point/confidence heads, a metric scale, and "
                   "optional conditioning on known intrinsics (rays), camera poses and depth. "
                   "Choose 'condition on' to compare unposed against posed reconstruction of the "
                   "same views. 1.36 B parameters; weights CC BY-NC 4.0.")

    def _multimodal(self, options) -> bool:
        return options.condition_on != "none"

    def _scale_note(self, out) -> str:
        return "Pi3X's predicted metric scale"

    def _conditions(self, scene: Scene, view_ids: list[int], scales, options, device) -> dict:
        out = {}
        if "intrinsics" in options.condition_on:
            k = _scene_array(scene.intrinsics, view_ids, (3, 3), "intrinsics")
            out["intrinsics"] = torch.from_numpy(np.stack(
                [intrinsics_to_network(k[i], s) for i, s in enumerate(scales)]))[None].float().to(device)
        if "cameras" in options.condition_on:
            if len(view_ids) < 2:
                raise Pi3InputError("conditioning on cameras needs at least 2 views (one pose "
                                    "carries no information)")
            cam_from_world = _scene_array(scene.cam_from_world, view_ids, (4, 4), "cam_from_world")
            c2w = np.stack([geometry.invert_transform(m) for m in cam_from_world])
            out["poses"] = torch.from_numpy(c2w)[None].float().to(device)
        return out


def _scene_array(array: np.ndarray | None, view_ids: list[int], shape: tuple, name: str) -> np.ndarray:
    """The scene's ``name`` for ``view_ids`` as float64 ``[V, *shape]``, or :class:`Pi3InputError`
    when it is missing, mis-shaped or has non-finite entries (e.g. unregistered views)."""
    if array is None:
        raise Pi3InputError(f"the scene has no {name} to condition on")
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 3 or array.shape[1:] != shape:
        raise Pi3InputError(f"scene {name} must be [N,{shape[0]},{shape[1]}]; got {list(array.shape)}")
    picked = array[view_ids]
    bad = [v for v, m in zip(view_ids, picked) if not np.isfinite(m).all()]
    if bad:
        raise Pi3InputError(f"scene {name} of view(s) {bad} contain NaN or inf (unregistered?); "
                            "choose other views or condition_on=none")
    return picked


METHOD = METHOD_PI3 = Pi3Method()
METHOD_PI3X = Pi3XMethod()   # registered through .pi3x_method (the registry reads ``METHOD``)
