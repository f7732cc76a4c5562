"""3D-LMNet as a ReconBench method: one photo -> 2,048 points (generative family).

The cloud is in the model's object-centred canonical frame (the training shapes' frame: y up,
front towards +z, unit box), not in the first camera's frame; evaluation aligns it by centroid,
scale and rotation search. The shipped weights were trained here on a small procedural
ShapeNet-like set (chairs, tables, lamps, mugs, airplanes), so other objects come out as the
nearest of those categories.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from core.data.scene import Reconstruction, Scene
from core.models.registry import Availability, Method
from core.options import WeightsKind, option
from core.progress import Progress

from . import inference
from .config import VARIANTS
from .inference import predict, shipped_dir
from .modeling import LMNet

log = logging.getLogger(__name__)

VERSION = "1"
FRAME_NOTE = ("points are in 3D-LMNet's object-centred canonical frame (y up, unit box), "
              "not in the camera's frame")
# "shipped" stays the value's name: the committed runs in cache/runs/ hash it.
Weights = Literal["shipped", "random-tiny"]
Variant = Literal[VARIANTS]


@dataclass
class LMNetOptions:
    variant: Variant = option("original", "original (PointNet auto-encoder) or improved (DGCNN "
                                          "auto-encoder)")
    weights: Weights = option("shipped", "shipped: the checkpoint trained here on procedural "
                                         "shapes; random-tiny: the tiny configuration with seeded "
                                         "random weights (tests, demos; meaningless output)")
    checkpoint_path: str = option("", "a model.safetensors (with its config.json beside it) "
                                      "instead of the shipped one", advanced=True)
    use_object_mask: bool = option(True, "crop the object with the scene's mask and put it on "
                                         "white (otherwise: non-white pixels are the object)")


class LMNetMethod(Method):
    """3D-LMNet on one view: 2,048 points in its object-centred canonical frame."""

    name = "lmnet"
    label = "3D-LMNet"
    label_options = ("variant",)
    family = "generative"
    version = VERSION
    options_type = LMNetOptions
    min_views = 1
    max_views = 1
    description = ("3D-LMNet (Mandikal et al., BMVC 2018): a point-cloud auto-encoder and an "
                   "image encoder matched in its latent space; one image -> 2,048 points. "
                   "Variants: the original PointNet auto-encoder, or a DGCNN auto-encoder. "
                   "Trained here on procedural shapes; output in an object-centred frame.")

    def weights_kind(self, options: LMNetOptions) -> WeightsKind:
        return "random-tiny" if options.weights == "random-tiny" else "trained-here"

    def availability(self, options: LMNetOptions) -> Availability:
        """The shipped checkpoint of the variant (or ``checkpoint_path``) is on disk."""
        if options.weights == "random-tiny":
            return Availability(True)
        path = options.checkpoint_path or shipped_dir(options.variant) / "model.safetensors"
        if Path(path).expanduser().exists():
            return Availability(True)
        return Availability(False, f"3D-LMNet checkpoint {path} is missing.",
                            f"python -m core lmnet train --data DIR --out RUN --variant {options.variant}")

    def load(self, options: LMNetOptions, device: str) -> LMNet:
        """A new model on ``device`` (raises MissingWeights / BadCheckpoint); the runner caches it."""
        return inference.build_model(options.variant, options.weights, options.checkpoint_path).to(device)

    def predict(self, model: LMNet, scene: Scene, view_ids: list[int], options: LMNetOptions,
                progress: Progress, device: str) -> Reconstruction:
        """``float32 [num_points,3]`` for the object of ``view_ids[0]`` (2,048 shipped, 256
        random-tiny), in the canonical frame. Raises LMNetInputError when there is no object."""
        view = view_ids[0]
        mask = scene.masks[view] if options.use_object_mask and scene.masks is not None else None
        progress(0.3, "predicting the point cloud")
        points = predict(model, scene.images[view], mask)
        notes = [FRAME_NOTE]
        if options.weights != "random-tiny":
            notes.append("trained on a small procedural set of chairs, tables, lamps, mugs and airplanes")
        if mask is None:
            notes.append("no object mask: non-white pixels were taken as the object")
        progress(1.0, "done")
        return Reconstruction(method=self.name, points=points, notes=notes,
                              extra={"variant": options.variant, "frame": "object-centred canonical"})


def run_on_image(image, variant: str = "original", weights: str = "shipped",
                 checkpoint_path: str = "", mask: np.ndarray | None = None) -> np.ndarray:
    """The Generative page's upload path: one picture -> ``float32 [2048,3]`` points (256 for
    random-tiny) in the object-centred canonical frame, with the model from the runner's cache.

    ``image``: ``uint8 [H,W,3|4]`` (or PIL / encoded bytes), the object on a white background
    (or with alpha, or with ``mask``). Raises LMNetInputError for non-images and images without
    an object, OptionError for unknown choices, MissingWeights / BadCheckpoint for unusable
    checkpoints.
    """
    from core.runner import load_model

    options = METHOD.parse_options({"variant": variant, "weights": weights,
                                    "checkpoint_path": checkpoint_path})
    model, _ = load_model(METHOD, options, "cpu")
    return predict(model, image, mask)


METHOD = LMNetMethod()
