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

from core.models import weights
from core.models.registry import Availability, Method, option
from core.profiling import measure
from core.progress import Progress, silent
from core.data.scene import Reconstruction, Scene

from .inference import get_model, predict, shipped_dir

log = logging.getLogger(__name__)

VERSION = "1"
RANDOM_NOTE = "random weights: the geometry and scores are meaningless"
FRAME_NOTE = ("points are in 3D-LMNet's object-centred canonical frame (y up, unit box), "
              "not in the camera's frame")


@dataclass
class LMNetOptions:
    variant: str = option("original", choices=("original", "dgcnn"),
                          help="original (PointNet auto-encoder) or improved (DGCNN auto-encoder)")
    weights: str = option("shipped", choices=("shipped", "random-tiny"),
                          help="checkpoint trained here on procedural shapes, or the tiny "
                               "configuration with seeded random weights (tests, demos)")
    checkpoint_path: str = option("", help="a model.safetensors (with its config.json beside it) "
                                           "instead of the shipped one", advanced=True)
    use_object_mask: bool = option(True, help="crop the object with the scene's mask and put it "
                                              "on white (otherwise: non-white pixels are the object)")


def availability(options: LMNetOptions | None = None) -> Availability:
    options = options or LMNetOptions()
    if options.weights == "random-tiny":
        return Availability(True)
    if options.weights != "shipped":
        return Availability(False, f"unknown weights {options.weights!r}")
    path = options.checkpoint_path or shipped_dir(options.variant) / "model.safetensors"
    if Path(path).expanduser().exists():
        return Availability(True)
    return Availability(False, f"3D-LMNet checkpoint {path} is missing.",
                        f"python -m core lmnet train --data DIR --out RUN --variant {options.variant}")


def run(scene: Scene, view_ids: list[int], options: LMNetOptions | None = None,
        progress: Progress | None = None) -> Reconstruction:
    """Reconstruct the object of one view of ``scene`` (see the module docstring for the frame)."""
    options = options or LMNetOptions()
    progress = progress or silent()
    if len(view_ids) != 1:
        raise ValueError(f"3D-LMNet takes exactly 1 view; got {len(view_ids)}")
    view = int(view_ids[0])
    if not 0 <= view < scene.num_views:
        raise ValueError(f"view {view} does not exist (the scene has {scene.num_views})")
    with measure() as m:
        progress(0.05, "loading 3D-LMNet")
        try:
            model = get_model(options.variant, options.weights, options.checkpoint_path)
        except weights.MissingWeights as error:
            raise ValueError(str(error)) from None
        progress.check()
        mask = scene.masks[view] if options.use_object_mask and scene.masks is not None else None
        progress(0.3, "predicting the point cloud")
        points = predict(model, scene.images[view], mask)
    notes = [FRAME_NOTE]
    if options.weights == "random-tiny":
        notes.append(RANDOM_NOTE)
    else:
        notes.append("trained on a small procedural set of chairs, tables, lamps, mugs and airplanes")
    if mask is None:
        notes.append("no object mask: non-white pixels were taken as the object")
    progress(1.0, "done")
    return Reconstruction(
        method="lmnet", version=VERSION, points=points, view_ids=[view],
        options=dict(vars(options)), seconds=m.seconds, peak_memory_bytes=m.peak_memory_bytes,
        parameter_count=int(sum(p.numel() for p in model.parameters())), device="cpu",
        notes=notes, extra={"variant": options.variant, "frame": "object-centred canonical"})


METHOD = Method(
    name="lmnet", label="3D-LMNet", family="generative", version=VERSION, options_type=LMNetOptions,
    run=run, availability=availability, min_views=1, max_views=1,
    description="3D-LMNet (Mandikal et al., BMVC 2018): a point-cloud auto-encoder and an image "
                "encoder matched in its latent space; one image -> 2,048 points. Variants: the "
                "original PointNet auto-encoder, or a DGCNN auto-encoder. Trained here on "
                "procedural shapes; output in an object-centred frame.")
