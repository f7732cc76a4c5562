"""ReconBench method ``vggt``: feed-forward cameras, depth and points from N views.

Output frame: the first input view's camera (VGGT's world frame), scale as predicted.
Intrinsics are mapped back to the scene's original image pixels through the preprocessing
transform (see :mod:`.processing`).
"""
from __future__ import annotations

import functools
import logging
import zlib
from dataclasses import asdict, dataclass

import numpy as np
import torch

from core.models.registry import Availability, Method, checkpoint_availability, option, options_from_dict
from core.profiling import measure
from core.progress import Progress, silent
from core.data.scene import Reconstruction, Scene

from .checkpoints import CHECKPOINTS, load_pretrained, materialize_buffers
from .config import VGGTConfig
from .modeling_vggt import VGGT
from .pose_encoding import pose_encoding_to_extrinsics_intrinsics
from .processing import BRANCHES, MODES, depth_to_world_points, point_cloud, preprocess_images

log = logging.getLogger(__name__)

VERSION = "1"
RANDOM_NOTE = "random weights: the geometry and scores are meaningless"
WEIGHTS = ("pretrained", "random-tiny", "random-full")
RANDOM_WEIGHTS = ("random-tiny", "random-full")


@dataclass
class VGGTOptions:
    weights: str = option("pretrained", choices=WEIGHTS,
                          help="pretrained VGGT-1B; random-tiny: a tiny random model for tests and "
                               "demos; random-full: VGGT-1B's architecture with random weights "
                               "(real timings and memory, meaningless outputs)")
    checkpoint: str = option("vggt-1b", choices=tuple(CHECKPOINTS),
                             help="which published checkpoint", advanced=True)
    checkpoint_path: str = option("", help="explicit checkpoint file (model.pt or .safetensors)",
                                  advanced=True)
    preprocess: str = option("crop", choices=MODES,
                             help="crop: width 518, centre-crop height; pad: longest side 518, "
                                  "pad to a white square")
    branch: str = option("depth+camera", choices=BRANCHES,
                         help="points from depth unprojected with the predicted cameras, or "
                              "from the point-map head")
    confidence_percentile: float = option(50.0, min=0.0, max=100.0, step=1.0,
                                          help="drop points below this confidence percentile")
    min_confidence: float = option(0.0, min=0.0, step=0.1,
                                   help="drop points below this confidence (>= 1 by design)")
    use_object_masks: bool = option(False, help="keep only points inside the scene's object "
                                                "masks (when the scene has them)")
    frames_chunk_size: int = option(2, min=1, max=64, step=1, advanced=True,
                                    help="frames per dense-head chunk (memory vs speed)")
    device: str = option("auto", choices=("auto", "cpu", "cuda"),
                         help="auto: CUDA when available, else CPU (float32)")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available here")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


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


def fill_random_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter in place: LayerScale 0.01, norm weights 1, biases 0, others
    N(0, 0.02). Each tensor's draw is seeded by its name, so two models with the same
    parameter names get identical weights whatever their registration order."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("gamma"):
                param.fill_(0.01)
            elif "norm" in name and name.endswith("weight"):
                param.fill_(1.0)
            elif name.endswith("bias"):
                param.zero_()
            else:
                generator = torch.Generator(device=param.device)
                generator.manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
                param.normal_(0.0, 0.02, generator=generator)
    return model


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


@functools.cache
def load_model(weights_name: str, checkpoint: str, checkpoint_path: str, device: str) -> VGGT:
    """One model per (weights, checkpoint, path, device) per process."""
    if weights_name == "random-tiny":
        return random_tiny_model().to(device)
    if weights_name == "random-full":
        return random_full_model(device=device)
    if weights_name != "pretrained":
        raise ValueError(f"unknown weights {weights_name!r}; use one of {WEIGHTS}")
    return load_pretrained(CHECKPOINTS[checkpoint], checkpoint_path, device)


def availability(options: VGGTOptions | dict | None = None) -> Availability:
    opts = _options(options)
    if opts.weights in RANDOM_WEIGHTS:
        return Availability(True)
    checkpoint = CHECKPOINTS.get(opts.checkpoint)
    if checkpoint is None:
        return Availability(False, f"unknown checkpoint {opts.checkpoint!r}.")
    return checkpoint_availability(checkpoint, opts.checkpoint_path)


def _options(options) -> VGGTOptions:
    if options is None:
        return VGGTOptions()
    if isinstance(options, VGGTOptions):
        return options
    return options_from_dict(VGGTOptions, options)


def _check_options(opts: VGGTOptions) -> None:
    if opts.preprocess not in MODES:
        raise ValueError(f"unknown preprocess mode {opts.preprocess!r}; use one of {MODES}")
    if opts.branch not in BRANCHES:
        raise ValueError(f"unknown branch {opts.branch!r}; use one of {BRANCHES}")
    if not 0 <= opts.confidence_percentile <= 100:
        raise ValueError(f"confidence_percentile must be in [0, 100], got "
                         f"{opts.confidence_percentile}")
    if opts.weights not in WEIGHTS:
        raise ValueError(f"unknown weights {opts.weights!r}; use one of {WEIGHTS}")
    if opts.checkpoint not in CHECKPOINTS:
        raise ValueError(f"unknown checkpoint {opts.checkpoint!r}; use one of "
                         f"{tuple(CHECKPOINTS)}")


def run(scene: Scene, view_ids: list[int], options: VGGTOptions | dict | None = None,
        progress: Progress | None = None) -> Reconstruction:
    """Reconstruct ``scene``'s views ``view_ids`` with VGGT (see module docstring)."""
    progress = progress or silent()
    opts = _options(options)
    _check_options(opts)
    view_ids = [int(v) for v in view_ids]
    METHOD.check_views(view_ids)
    bad = [v for v in view_ids if not 0 <= v < scene.num_views]
    if bad:
        raise ValueError(f"view ids {bad} outside the scene's {scene.num_views} views")
    device = _device(opts.device)
    cuda = device.type == "cuda"
    images = [scene.images[v] for v in view_ids]
    notes = []
    # Loading is timed apart (the model is cached per process), so seconds and peak memory are
    # those of one reconstruction whichever run loads the model first.
    progress(0.0, "loading VGGT")
    with measure(cuda=cuda) as loading:
        model = load_model(opts.weights, opts.checkpoint, opts.checkpoint_path, str(device))
    with measure(cuda=cuda) as measurement:
        progress(0.1, f"preprocessing {len(images)} view(s) ({opts.preprocess})")
        tensor, transforms = preprocess_images(images, opts.preprocess)
        hw = tuple(tensor.shape[-2:])
        heads = ("camera", "depth") + (("point",) if opts.branch == "point map" else ())
        progress(0.2, f"running VGGT on {len(images)} view(s) at {hw[1]}x{hw[0]}")
        with torch.inference_mode():
            out = model(tensor.to(device), heads=heads, frames_chunk_size=opts.frames_chunk_size,
                        autocast_dtype=torch.bfloat16 if cuda else None)
        progress.check()
        progress(0.85, "building the point cloud")
        pose_enc = out["pose_enc"][0].float()
        cam_from_world, k_net = pose_encoding_to_extrinsics_intrinsics(pose_enc, hw,
                                                                       homogeneous=True)
        cam_from_world = cam_from_world.double().cpu().numpy()
        k_net = k_net.double().cpu().numpy()
        depth = out["depth"][0, ..., 0].float().cpu().numpy()
        depth_conf = out["depth_conf"][0].float().cpu().numpy()
        if opts.branch == "point map":
            world = out["world_points"][0].float().cpu().numpy()
            conf = out["world_points_conf"][0].float().cpu().numpy()
        else:
            world = depth_to_world_points(depth, cam_from_world, k_net)
            conf = depth_conf
        masks = None
        if opts.use_object_masks:
            if scene.masks is None:
                notes.append("use_object_masks is on but the scene has no object masks")
            else:
                masks = np.stack([t.warp(scene.masks[v]) for t, v in zip(transforms, view_ids)])
        cloud = point_cloud(world, conf, tensor.numpy(), transforms, opts.confidence_percentile,
                            opts.min_confidence, masks)
        intrinsics = np.stack([t.intrinsics_to_original(k) for t, k in zip(transforms, k_net)])
    if opts.weights in RANDOM_WEIGHTS:
        notes.insert(0, RANDOM_NOTE)
    progress(1.0, f"VGGT: {len(cloud.points):,} points")
    return Reconstruction(
        method="vggt", version=VERSION, points=cloud.points, colors=cloud.colors,
        confidence=cloud.confidence, source_view=cloud.source_view, view_ids=view_ids,
        cam_from_world=cam_from_world, intrinsics=intrinsics, depth_maps=depth,
        depth_confidence=depth_conf, point_maps=world, point_confidence=conf,
        options=asdict(opts), seconds=measurement.seconds,
        peak_memory_bytes=measurement.peak_memory_bytes,
        parameter_count=sum(p.numel() for p in model.parameters()), device=str(device),
        notes=notes,
        extra={"network_hw": list(hw), "model_load_seconds": loading.seconds,
               "pose_enc": pose_enc.cpu().numpy().tolist(),
               "intrinsics_network": k_net.tolist(),
               "transforms": [{"original_hw": list(t.original_hw), "scale": list(t.scale),
                               "offset": list(t.offset), "network_hw": list(t.network_hw)}
                              for t in transforms],
               "frame": "first input view's camera (OpenCV), VGGT's predicted scale"})


METHOD = Method(
    name="vggt", label="VGGT", family="discriminative", version=VERSION,
    options_type=VGGTOptions, run=run, availability=availability, min_views=1, max_views=None,
    description=("VGGT (Visual Geometry Grounded Transformer, CVPR 2025): one feed-forward pass "
                 "predicts every view's camera, depth map and point map. DINOv2 patch tokens "
                 "go through 24 alternating frame/global attention blocks; a camera head and "
                 "two DPT heads read them. 1.26 B parameters (VGGT-1B)."))
