"""The ``combined`` method: Grounding DINO -> SAM -> Depth Anything -> back-projection (family ``pipeline``).

Output frame: the first input view's camera (OpenCV). Depth is in the depth reference's units
(the scene's, or a VGGT run's own scale); in the explicit relative mode it is arbitrary and the
run's notes say so.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields

import numpy as np

from core.models.combined import checkpoints as ckpt
from core.models.combined import depth_fit
from core.models.combined.projection import CAMERA_CHOICES
from core.models.combined.pipeline import Stages, StageError, ViewSettings, fuse, run_view, view_poses
from core.models.registry import Availability, Method, option
from core.models.weights import MissingWeights
from core.profiling import measure
from core.progress import silent
from core.data.scene import Reconstruction

log = logging.getLogger(__name__)

VERSION = "1"
RANDOM_NOTE = "random weights: the geometry and scores are meaningless"
RELATIVE_NOTE = ("relative depth: no reference was used, so depth has arbitrary units and an unknown shift "
                 "(the shape is distorted)")


@dataclass
class CombinedOptions:
    prompt: str = option("toy", help="what to detect (Grounding DINO text prompt)")
    detector: str = option("grounding-dino-tiny", choices=tuple(ckpt.DETECTORS), help="detection model")
    box_threshold: float = option(0.35, min=0.0, max=1.0, step=0.05, help="minimum box score")
    text_threshold: float = option(0.25, min=0.0, max=1.0, step=0.05, help="minimum prompt-token score")
    box_index: int = option(-1, min=-1, help="box to use, by rank (-1 = top-scoring)")
    segmenter: str = option("sam-vit-b", choices=tuple(ckpt.SEGMENTERS), help="Segment Anything variant")
    use_point: bool = option(True, help="also prompt SAM with a positive point")
    point_x: float = option(-1.0, min=-1.0, step=1.0, advanced=True, help="positive point x (px; -1 = box centre)")
    point_y: float = option(-1.0, min=-1.0, step=1.0, advanced=True, help="positive point y (px; -1 = box centre)")
    depth_model: str = option("depth-anything-v2-small", choices=tuple(ckpt.DEPTH_MODELS), help="depth model")
    depth_reference: str = option("auto", choices=depth_fit.REFERENCE_CHOICES,
                                  help="known depths the relative depth is fitted to (auto: scene depth map, "
                                       "COLMAP sparse points, scene points, then a stored VGGT run)")
    fit_region: str = option("object mask", choices=("object mask", "whole view"),
                             help="pixels used for the scale-shift fit")
    camera: str = option("scene", choices=CAMERA_CHOICES,
                         help="intrinsics (and poses for fusion): scene ground truth/COLMAP, a VGGT run, "
                              "or a field-of-view guess")
    fov_deg: float = option(60.0, min=10.0, max=150.0, step=1.0, help="horizontal FOV when guessing without EXIF")
    erode_px: int = option(2, min=0, max=30, help="erode the mask by this many pixels (edge bleeding)")
    weights: str = option("pretrained", choices=("pretrained", "random-tiny"))
    checkpoint_path: str = option("", advanced=True, help="explicit SAM .pth path")
    device: str = option("auto", choices=("auto", "cpu", "cuda"), advanced=True)


def view_settings(options: CombinedOptions) -> ViewSettings:
    names = {f.name for f in fields(ViewSettings)}
    return ViewSettings(**{k: v for k, v in asdict(options).items() if k in names})


def pick_device(choice: str) -> str:
    import torch

    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def availability(options: CombinedOptions | None = None) -> Availability:
    options = options or CombinedOptions()
    if options.weights == "random-tiny":
        return Availability(True)
    problems, commands = [], []
    for key, table in ((options.detector, ckpt.DETECTORS), (options.depth_model, ckpt.DEPTH_MODELS)):
        message = ckpt.missing(key, table)
        if message:
            problems.append(message)
            commands.append(table[key].fetch_key)
    try:
        ckpt.sam_checkpoint(options.segmenter, options.checkpoint_path)
    except MissingWeights as error:
        problems.append(str(error))
        commands.append(ckpt.SEGMENTERS[options.segmenter][1].fetch_key or options.segmenter)
    if not problems:
        return Availability(True)
    return Availability(False, " ".join(problems), "python -m core weights fetch " + " ".join(commands))


def load_stages(options: CombinedOptions, device: str = "cpu") -> Stages:
    """The three models for ``options`` (cached per process). Raises MissingWeights for pretrained ones."""
    from core.models.combined.depth import load_depth_estimator, tiny_depth_estimator
    from core.models.combined.detection import load_detector, tiny_detector
    from core.models.combined.segmentation import load_segmenter, tiny_segmenter

    if options.weights == "random-tiny":
        return Stages(tiny_detector(0, device), tiny_segmenter(0, device), tiny_depth_estimator(0, device), True)
    return Stages(load_detector(options.detector, device),
                  load_segmenter(options.segmenter, options.checkpoint_path, device),
                  load_depth_estimator(options.depth_model, device), False)


def run(scene, view_ids: list[int], options: CombinedOptions | dict | None = None, progress=None,
        stages: Stages | None = None, store=None) -> Reconstruction:
    """Run the combined pipeline on ``view_ids`` of ``scene`` and fuse them (first view's camera frame).

    Raises :class:`StageError` (a ValueError) when a stage produces nothing usable, with the
    earlier stages' results attached.
    """
    if options is None:
        options = CombinedOptions()
    elif isinstance(options, dict):
        options = CombinedOptions(**options)
    progress = progress or silent()
    view_ids = [int(v) for v in view_ids]
    if not view_ids:
        raise ValueError("the combined pipeline needs at least one view")
    bad = [v for v in view_ids if not 0 <= v < scene.num_views]
    if bad:
        raise ValueError(f"view ids {bad} are not in 0..{scene.num_views - 1}")
    device = pick_device(options.device)
    settings = view_settings(options)
    notes = []
    with measure(cuda=device == "cuda") as measurement:
        progress(0.0, "loading the models")
        stages = stages or load_stages(options, device)
        results = []
        vggt_runs = {}
        for i, view in enumerate(view_ids):
            vggt_run = depth_fit.stored_vggt_run(scene, view, store) if options.camera == "vggt" else None
            vggt_runs[view] = vggt_run
            try:
                results.append(run_view(scene, view, stages, settings,
                                        progress.sub(0.05 + 0.9 * i / len(view_ids),
                                                     0.05 + 0.9 * (i + 1) / len(view_ids)), store, vggt_run))
            except StageError as error:
                error.done = results
                raise
        progress(0.96, "fusing the views")
        if options.camera == "vggt":
            keys = {run[0] for run in vggt_runs.values() if run is not None}
            if len(keys) > 1:
                raise ValueError("the chosen views come from different VGGT runs; their cameras cannot be fused")
        poses = view_poses(scene, view_ids, options.camera, vggt_runs.get(view_ids[0]))
        if len(view_ids) > 1 and not np.isfinite(poses).all():
            raise ValueError("some chosen views have no pose, so they cannot be fused; run them one at a time")
        points, colors, source, relative = fuse(results, poses if np.isfinite(poses).all() else
                                                np.eye(4)[None].repeat(len(view_ids), 0))
    frames = {r.reference_frame for r in results}
    if any(r.depth_mode == "relative" for r in results):
        notes.append(RELATIVE_NOTE)
    if len(view_ids) > 1 and any(f.startswith("vggt:") for f in frames) and options.camera != "vggt":
        notes.append("VGGT depth (its own scale) fused with the scene's poses: the views may not agree in scale")
    if stages.random:
        notes.insert(0, RANDOM_NOTE)
    stage_seconds = {stage: float(sum(r.seconds.get(stage, 0.0) for r in results))
                     for stage in ("detection", "segmentation", "depth", "back-projection")}
    progress(1.0, f"combined: {len(points):,} points from {len(view_ids)} view(s)")
    return Reconstruction(
        method="combined", version=VERSION, points=points, colors=colors, source_view=source, view_ids=view_ids,
        cam_from_world=relative, intrinsics=np.stack([r.intrinsics for r in results]),
        depth_maps=np.stack([r.depth for r in results]), options=asdict(options), seconds=measurement.seconds,
        peak_memory_bytes=measurement.peak_memory_bytes, parameter_count=stages.parameter_count, device=device,
        notes=notes,
        extra={"views": [r.summary() for r in results], "stage_seconds": stage_seconds,
               "models": {"detector": stages.detector.name, "segmenter": stages.segmenter.name,
                          "depth": stages.depth.name},
               "frame": "first input view's camera (OpenCV); units of the depth reference"})


METHOD = Method(
    name="combined", label="Combined pipeline (Grounding DINO + SAM + Depth Anything)", family="pipeline",
    version=VERSION, options_type=CombinedOptions, run=run, availability=availability, min_views=1, max_views=None,
    description="Text-prompted detection (Grounding DINO), box-and-point segmentation (Segment Anything), "
                "monocular relative depth (Depth Anything) fitted in inverse depth to a known reference, and "
                "back-projection of the masked depth with the view's intrinsics; several views fuse with the "
                "scene's poses.")
