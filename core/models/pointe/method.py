"""Point-E as a ReconBench method: one or several photos -> a coloured point cloud.

The result lives in Point-E's own object-centred frame (xyz roughly in [-0.5, 0.5]), not in
the first camera's frame: a generative model predicts no cameras, so evaluation aligns it by
centroid, scale and rotation search.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from core.data.scene import Reconstruction, Scene
from core.errors import UserError
from core.models.registry import Availability, Method, all_available, checkpoint_availability
from core.options import DeviceOptions, option
from core.progress import Progress

from . import checkpoints
from .modeling_pointe import MULTIVIEW_MODES, PointE, combine_views, samples_to_points
from .sampler import NoiseSource

log = logging.getLogger(__name__)

VERSION = "1"
MIN_IMAGE_SIDE = 8  # pixels; smaller pictures carry no object for CLIP to see

Weights = Literal["pretrained", "random-tiny"]
Multiview = Literal[MULTIVIEW_MODES]  # the modes combine_views implements


class PointEInputError(UserError):
    """A view Point-E cannot use: a picture under 8 px, or an empty object mask."""


@dataclass
class PointEOptions(DeviceOptions):
    weights: Weights = option("pretrained", "pretrained: published base40M + upsample + CLIP "
                                            "ViT-L/14; random-tiny: the fixture's tiny "
                                            "configuration with seeded random weights (seconds; "
                                            "meaningless output)")
    checkpoint_path: str = option("", "base40M checkpoint (base_40m.pt); empty = look it up",
                                  advanced=True)
    upsample_checkpoint_path: str = option("", "upsample checkpoint (upsample_40m.pt)",
                                           advanced=True)
    clip_checkpoint_path: str = option("", "CLIP ViT-L/14 weights (transformers "
                                           "model.safetensors or a clip-package state dict)",
                                       advanced=True)
    karras_steps: int = option(64, "Karras Heun steps per stage (published: 64)",
                               min=1, max=256, step=1)
    guidance_scale: float = option(3.0, "classifier-free guidance, both stages (published: 3)",
                                   min=0.0, max=10.0, step=0.5)
    seed: int = option(0, "seed of the sampler's noise", min=0, step=1)
    multiview: Multiview = option("fuse-samples", "several views: one cloud per view "
                                                  "concatenated, or one cloud from averaged / "
                                                  "concatenated CLIP grid tokens")
    use_object_mask: bool = option(True, "crop the object using the scene's masks and put it "
                                         "on a white background (as Point-E expects)")


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


class PointEMethod(Method):
    """Point-E on one or several views: a coloured cloud in its own object-centred frame."""

    name = "pointe"
    label = "Point-E"
    family = "generative"
    version = VERSION
    options_type = PointEOptions
    min_views = 1
    max_views = None
    description = ("OpenAI Point-E (2022): CLIP ViT-L/14 image grid -> base40M diffusion "
                   "(1024 points) -> upsampler (4096 coloured points), Karras Heun sampling with "
                   "classifier-free guidance. Output in its own object-centred frame.")

    def checkpoints(self, options: PointEOptions) -> tuple:
        if options.weights == "random-tiny":
            return ()
        return (checkpoints.BASE40M, checkpoints.UPSAMPLE, checkpoints.CLIP_VIT_L14)

    def availability(self, options: PointEOptions) -> Availability:
        """Each of the three checkpoints resolves, from its own explicit path when given."""
        paths = (options.checkpoint_path, options.upsample_checkpoint_path,
                 options.clip_checkpoint_path)
        return all_available(*(checkpoint_availability(checkpoint, path)
                               for checkpoint, path in zip(self.checkpoints(options), paths)))

    def load(self, options: PointEOptions, device: str) -> PointE:
        """The pipeline (raises MissingWeights / BadCheckpoint). random-tiny weights are always
        drawn with seed 0 (the ``seed`` option seeds the sampler's noise)."""
        if options.weights == "random-tiny":  # the tiny network sampling the published 1,024 + 3,072 points
            return checkpoints.random_tiny(0, device, published_points=True)
        files = checkpoints.resolve_all(options.checkpoint_path, options.upsample_checkpoint_path,
                                        options.clip_checkpoint_path)
        log.info("loading Point-E from %s", ", ".join(map(str, files)))
        return checkpoints.load_pretrained(*files, device=device)

    def predict(self, model: PointE, scene: Scene, view_ids: list[int], options: PointEOptions,
                progress: Progress, device: str) -> Reconstruction:
        """Points ``[N, 3]`` in Point-E's object-centred frame.

        N = (base_points + up_points) per sample: one sample per view with ``fuse-samples``
        (concatenated, ``source_view`` = index into ``view_ids``), one sample for the
        ``*-conditioning`` modes (``source_view`` = -1). Raises :class:`PointEInputError` for a
        picture under 8 px or an empty object mask.
        """
        masked = options.use_object_mask and scene.masks is not None
        for v in view_ids:
            h, w = scene.images[v].shape[:2]
            if min(h, w) < MIN_IMAGE_SIDE:
                raise PointEInputError(f"view {v} is {w}x{h} pixels; Point-E needs at least "
                                       f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} to see an object")
            if masked and not scene.masks[v].any():
                raise PointEInputError(f"view {v} has an empty object mask: there is no object to "
                                       "reconstruct (turn off use_object_mask to use the whole picture)")
        images = [object_image(scene.images[v], scene.masks[v] if masked else None) for v in view_ids]

        progress(0.02, "Point-E: CLIP image grid")
        grid = combine_views(model.condition(images), options.multiview)
        progress.check()
        out = model.sample_from_grid(
            grid, NoiseSource(options.seed), progress.sub(0.05, 1.0),
            karras_steps=options.karras_steps, guidance_scale=options.guidance_scale)
        coords, colors = samples_to_points(out.samples)
        per_sample = coords.shape[1]
        if options.multiview == "fuse-samples":
            source_view = np.repeat(np.arange(len(view_ids), dtype=np.int32), per_sample)
        else:
            source_view = np.full(per_sample, -1, dtype=np.int32)

        config = model.config
        notes = ["Point-E's own object-centred frame (xyz about [-0.5, 0.5]), not the first "
                 "camera's: no cameras are predicted; align by centroid, scale and rotation."]
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
        return Reconstruction(
            method=self.name, points=coords.reshape(-1, 3), colors=colors.reshape(-1, 3),
            source_view=source_view, notes=notes,
            extra={"parameter_counts": model.parameter_counts(), "samples": int(coords.shape[0]),
                   "points_per_sample": int(per_sample), "frame": "pointe-object-centred"})


METHOD = PointEMethod()
