"""Point-E as a ReconBench method: one or several photos -> a coloured point cloud.

The result lives in Point-E's own object-centred frame (xyz roughly in [-0.5, 0.5]), not in
the first camera's frame: a generative model predicts no cameras, so evaluation aligns it by
centroid, scale and rotation search.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass

import numpy as np
import torch

from core.models import weights
from core.models.registry import Availability, Method, option
from core.profiling import measure
from core.progress import Progress, silent
from core.data.scene import Reconstruction, Scene

from . import checkpoints
from .modeling_pointe import MULTIVIEW_MODES, PointE, combine_views, samples_to_points
from .sampler import NoiseSource

log = logging.getLogger(__name__)

VERSION = "1"
RANDOM_NOTE = "random weights: the geometry and scores are meaningless"


MIN_IMAGE_SIDE = 8  # pixels; smaller pictures carry no object for CLIP to see


@dataclass
class PointEOptions:
    weights: str = option("pretrained", choices=("pretrained", "random-tiny"),
                          help="published base40M + upsample + CLIP ViT-L/14, or the fixture's "
                               "tiny configuration with seeded random weights (tests, demos)")
    checkpoint_path: str = option("", help="base40M checkpoint (base_40m.pt); empty = look it up",
                                  advanced=True)
    upsample_checkpoint_path: str = option("", help="upsample checkpoint (upsample_40m.pt)",
                                           advanced=True)
    clip_checkpoint_path: str = option("", help="CLIP ViT-L/14 weights (transformers "
                                       "model.safetensors or a clip-package state dict)",
                                       advanced=True)
    karras_steps: int = option(64, help="Karras Heun steps per stage (published: 64)",
                               min=1, max=256, step=1)
    guidance_scale: float = option(3.0, help="classifier-free guidance, both stages (published: 3)",
                                   min=0.0, max=10.0, step=0.5)
    seed: int = option(0, help="seed of the sampler's noise", min=0, step=1)
    multiview: str = option("fuse-samples", choices=MULTIVIEW_MODES,
                            help="several views: one cloud per view concatenated, or one cloud "
                                 "from averaged / concatenated CLIP grid tokens")
    use_object_mask: bool = option(True, help="crop the object using the scene's masks and put "
                                              "it on a white background (as Point-E expects)")
    device: str = option("auto", choices=("auto", "cpu", "cuda"), help="where to run")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r} (auto, cpu or cuda)")
    return torch.device(name)


def availability(options: PointEOptions | None = None) -> Availability:
    options = options or PointEOptions()
    if options.weights == "random-tiny":
        return Availability(True)
    if options.weights != "pretrained":
        return Availability(False, f"unknown weights {options.weights!r}")
    try:
        checkpoints.resolve_all(options.checkpoint_path, options.upsample_checkpoint_path,
                                options.clip_checkpoint_path)
    except weights.MissingWeights as error:
        missing = next((c for c in (checkpoints.BASE40M, checkpoints.UPSAMPLE,
                                    checkpoints.CLIP_VIT_L14)
                        if c.filename in str(error)), checkpoints.BASE40M)
        return Availability(False, str(error), missing.fetch_command)
    return Availability(True)


@functools.cache
def load_model(weights_name: str, base_path: str, upsample_path: str, clip_path: str,
               device: str) -> PointE:
    """The pipeline, loaded once per process (raises MissingWeights / BadCheckpoint).
    random-tiny weights are always drawn with seed 0 (the ``seed`` option is the noise's)."""
    if weights_name == "random-tiny":  # the tiny network, sampling the published 1,024 + 3,072 points
        return checkpoints.random_tiny(0, device, published_points=True)
    if weights_name != "pretrained":
        raise ValueError(f"unknown weights {weights_name!r} (pretrained or random-tiny)")
    files = checkpoints.resolve_all(base_path, upsample_path, clip_path)
    log.info("loading Point-E from %s", ", ".join(map(str, files)))
    return checkpoints.load_pretrained(*files, device=device)


def object_image(image: np.ndarray, mask: np.ndarray | None, margin: float = 0.1) -> np.ndarray:
    """The object on a white background, cropped to a square around its mask.

    Args:
        image: ``uint8 [H, W, 3]``; mask: ``bool [H, W]`` or None.
        margin: extra border on each side, as a fraction of the mask's larger side.
    Returns ``uint8 [S, S, 3]`` (the image unchanged when the mask is None or empty).
    """
    if mask is None or not mask.any():
        return image
    white = np.where(mask[..., None], image, np.uint8(255)).astype(np.uint8)
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = int(np.ceil(max(y1 - y0, x1 - x0) * (1 + 2 * margin)))
    canvas = np.full((side, side, 3), 255, dtype=np.uint8)
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    top, left = cy - side // 2, cx - side // 2
    sy0, sx0 = max(top, 0), max(left, 0)
    sy1, sx1 = min(top + side, image.shape[0]), min(left + side, image.shape[1])
    canvas[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = white[sy0:sy1, sx0:sx1]
    return canvas


def run(scene: Scene, view_ids: list[int], options: PointEOptions | None = None,
        progress: Progress | None = None) -> Reconstruction:
    """Point-E on ``view_ids``; returns points ``[N, 3]`` in Point-E's object-centred frame.

    N = (base_points + up_points) per sample: one sample per view with ``fuse-samples``
    (concatenated, ``source_view`` = index into ``view_ids``), one sample for the
    ``*-conditioning`` modes (``source_view`` = -1).
    """
    options = options or PointEOptions()
    progress = progress or silent()
    view_ids = [int(v) for v in view_ids]
    METHOD.check_views(view_ids)
    if any(v < 0 or v >= scene.num_views for v in view_ids):
        raise ValueError(f"view ids {view_ids} out of range for {scene.num_views} views")
    if options.multiview not in MULTIVIEW_MODES:
        raise ValueError(f"unknown multiview mode {options.multiview!r}; "
                         f"choose one of {', '.join(MULTIVIEW_MODES)}")
    if int(options.karras_steps) < 1:
        raise ValueError("karras_steps must be at least 1")
    device = pick_device(options.device)
    masked = options.use_object_mask and scene.masks is not None
    for v in view_ids:
        h, w = scene.images[v].shape[:2]
        if min(h, w) < MIN_IMAGE_SIDE:
            raise ValueError(f"view {v} is {w}x{h} pixels; Point-E needs at least "
                             f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} to see an object")
        if masked and not scene.masks[v].any():
            raise ValueError(f"view {v} has an empty object mask: there is no object to reconstruct "
                             "(turn off use_object_mask to use the whole picture)")
    images = [object_image(scene.images[v], scene.masks[v] if masked else None) for v in view_ids]

    with measure(cuda=device.type == "cuda") as measured:
        progress(0.0, "Point-E: loading models")
        model = load_model(options.weights, options.checkpoint_path,
                           options.upsample_checkpoint_path, options.clip_checkpoint_path,
                           str(device))
        progress(0.02, "Point-E: CLIP image grid")
        grid = combine_views(model.condition(images), options.multiview)
        progress.check()
        samples = model.sample_from_grid(
            grid, NoiseSource(int(options.seed)), progress.sub(0.05, 1.0),
            karras_steps=int(options.karras_steps), guidance_scale=float(options.guidance_scale))
    coords, colors = samples_to_points(samples)
    per_sample = coords.shape[1]
    if options.multiview == "fuse-samples":
        source_view = np.repeat(np.arange(len(view_ids), dtype=np.int32), per_sample)
    else:
        source_view = np.full(per_sample, -1, dtype=np.int32)

    config = model.config
    notes = ["Point-E's own object-centred frame (xyz about [-0.5, 0.5]), not the first "
             "camera's: no cameras are predicted; align by centroid, scale and rotation."]
    if options.weights == "random-tiny":
        notes.insert(0, RANDOM_NOTE)
    if len(view_ids) > 1:
        if options.multiview == "fuse-samples":
            notes.append(f"multiview fuse-samples: {len(view_ids)} independent samples (one per "
                         f"view) concatenated without alignment ({per_sample} points each)")
        else:
            notes.append(f"multiview {options.multiview}: one sample conditioned on the "
                         f"{'mean of' if options.multiview == 'average-conditioning' else 'concatenated'}"
                         f" CLIP grid tokens of {len(view_ids)} views")
    notes.append("object cropped from the scene masks onto a white background" if masked
                 else "full images used (no object masks)")
    notes.append(f"{config.base_points} + {config.up_points} points per sample, "
                 f"{options.karras_steps} Karras steps, guidance {options.guidance_scale}")
    counts = model.parameter_counts()
    return Reconstruction(
        method=METHOD.name, version=VERSION, points=coords.reshape(-1, 3),
        colors=colors.reshape(-1, 3), source_view=source_view, view_ids=view_ids,
        options=dataclasses.asdict(options), seconds=measured.seconds,
        peak_memory_bytes=measured.peak_memory_bytes, parameter_count=sum(counts.values()),
        device=str(device), notes=notes,
        extra={"parameter_counts": counts, "samples": int(coords.shape[0]),
               "points_per_sample": int(per_sample), "frame": "pointe-object-centred"})


METHOD = Method(
    name="pointe", label="Point-E", family="generative", version=VERSION,
    options_type=PointEOptions, run=run, availability=availability, min_views=1, max_views=None,
    description=("OpenAI Point-E (2022): CLIP ViT-L/14 image grid -> base40M diffusion "
                 "(1024 points) -> upsampler (4096 coloured points), Karras Heun sampling with "
                 "classifier-free guidance. Output in its own object-centred frame."))
