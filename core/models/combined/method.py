"""The ``combined`` method: Grounding DINO -> SAM -> Depth Anything -> back-projection (family ``pipeline``).

The loaded model is :class:`~core.models.combined.pipeline.Stages` (the three networks, cached by
the runner as one model). Output frame: the first input view's camera (OpenCV). Depth is in the
depth reference's units (the scene's, or a VGGT run's own scale); in the explicit relative mode it
is arbitrary and the run's notes say so.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from typing import Literal

import numpy as np

from core.data.scene import Reconstruction, Scene
from core.models import weights
from core.models.combined import checkpoints as ckpt
from core.models.combined import depth_fit
from core.models.combined.projection import CameraSource
from core.models.combined.pipeline import FusionError, Stages, StageError, ViewSettings, fuse, run_view, view_poses
from core.models.registry import Availability, Method
from core.options import DeviceOptions, option
from core.progress import Progress

log = logging.getLogger(__name__)

VERSION = "1"
RELATIVE_NOTE = ("relative depth: no reference was used, so depth has arbitrary units and an unknown shift "
                 "(the shape is distorted)")

Weights = Literal["pretrained", "random-tiny"]
FitRegion = Literal["object mask", "whole view"]
Camera = CameraSource


@dataclass
class CombinedOptions(DeviceOptions):
    prompt: str = option("toy", "what to detect (Grounding DINO text prompt)")
    detector: ckpt.DetectorName = option("grounding-dino-tiny", "detection model")
    box_threshold: float = option(0.35, "minimum box score", min=0.0, max=1.0, step=0.05)
    text_threshold: float = option(0.25, "minimum prompt-token score", min=0.0, max=1.0, step=0.05)
    box_index: int = option(-1, "box to use, by rank (-1 = top-scoring)", min=-1)
    segmenter: ckpt.SegmenterName = option("sam-vit-b", "Segment Anything variant")
    use_point: bool = option(True, "also prompt SAM with a positive point")
    point_x: float = option(-1.0, "positive point x (px; -1 = box centre)", min=-1.0, step=1.0, advanced=True)
    point_y: float = option(-1.0, "positive point y (px; -1 = box centre)", min=-1.0, step=1.0, advanced=True)
    depth_model: ckpt.DepthModelName = option("depth-anything-v2-small", "depth model")
    depth_reference: depth_fit.ReferenceChoice = option(
        "auto", "known depths the relative depth is fitted to (auto: scene depth map, COLMAP sparse points, "
                "scene points, then a stored VGGT run)")
    fit_region: FitRegion = option("object mask", "pixels used for the scale-shift fit")
    camera: Camera = option("scene", "intrinsics (and poses for fusion): scene ground truth/COLMAP, a VGGT run, "
                                     "or a field-of-view guess")
    fov_deg: float = option(60.0, "horizontal FOV when guessing without EXIF", min=10.0, max=150.0, step=1.0)
    erode_px: int = option(2, "erode the mask by this many pixels (edge bleeding)", min=0, max=30)
    weights: Weights = option("pretrained", "pretrained: the published checkpoints of the three models; "
                                            "random-tiny: tiny untrained models (seconds; meaningless output)")
    checkpoint_path: str = option("", "explicit SAM .pth path", advanced=True)


def view_settings(options: CombinedOptions) -> ViewSettings:
    """The per-view stage settings among ``options``."""
    names = {f.name for f in fields(ViewSettings)}
    return ViewSettings(**{k: v for k, v in asdict(options).items() if k in names})


def _missing_sam(options: CombinedOptions) -> str | None:
    """None when the SAM checkpoint resolves, else one line saying what is missing."""
    checkpoint = ckpt.SEGMENTERS[options.segmenter][1]
    try:
        ckpt.sam_checkpoint(options.segmenter, options.checkpoint_path)
        return None
    except weights.MissingWeights:
        pass
    if options.checkpoint_path:
        return f"{checkpoint.description}: checkpoint_path {options.checkpoint_path} does not exist"
    return _missing_line(checkpoint.description, [checkpoint], checkpoint.url, checkpoint.size_mb,
                         checkpoint.fetch_command)


def _missing_line(label: str, files: list[weights.Checkpoint], source: str, size_mb: float, command: str) -> str:
    size = f", {size_mb:,.0f} MB" if size_mb else ""
    return f"{label} needs {', '.join(c.filename for c in files)} ({source}{size}): {command}"


class CombinedMethod(Method):
    """Detection, segmentation, monocular depth and back-projection per view, fused across views."""

    name = "combined"
    label = "Combined pipeline (Grounding DINO + SAM + Depth Anything)"
    label_options = ("prompt",)
    family = "pipeline"
    version = VERSION
    options_type = CombinedOptions
    description = ("Text-prompted detection (Grounding DINO), box-and-point segmentation (Segment Anything), "
                   "monocular relative depth (Depth Anything) fitted in inverse depth to a known reference, and "
                   "back-projection of the masked depth with the view's intrinsics; several views fuse with the "
                   "scene's poses.")

    def checkpoints(self, options: CombinedOptions) -> tuple:
        """The weights file of each of the three models (none for random-tiny)."""
        if options.weights == "random-tiny":
            return ()
        return (ckpt.DETECTORS[options.detector].weights_checkpoint,
                ckpt.DEPTH_MODELS[options.depth_model].weights_checkpoint,
                ckpt.SEGMENTERS[options.segmenter][1])

    def availability(self, options: CombinedOptions) -> Availability:
        """Ready, or every missing file of the three models with each model's one fetch command."""
        if options.weights == "random-tiny":
            return Availability(True)
        problems, fetch_keys = [], []
        for model in (ckpt.DETECTORS[options.detector], ckpt.DEPTH_MODELS[options.depth_model]):
            files = ckpt.missing_files(model)
            if files:
                problems.append(_missing_line(model.label, files, model.repo_id, model.size_mb,
                                              files[0].fetch_command))
                fetch_keys.append(model.fetch_key)
        sam = _missing_sam(options)
        if sam:
            problems.append(sam)
            if not options.checkpoint_path:
                checkpoint = ckpt.SEGMENTERS[options.segmenter][1]
                fetch_keys.append(checkpoint.fetch_key or checkpoint.key)
        if not problems:
            return Availability(True)
        folder = weights.weights_folder()
        looked = f"${weights.WEIGHTS_ENV} ({folder if folder else 'unset'}) and the Hugging Face cache"
        count = {1: "1 of the three models is", 2: "2 of the three models are", 3: "The three models are"}
        missing = f"{count[len(problems)]} not on this machine (looked in {looked}). " + "; ".join(problems) + "."
        fix = "python -m core weights fetch " + " ".join(fetch_keys) if fetch_keys else ""
        # The page lists each model's files and shows the one command for all of them once.
        details = tuple(line.split(": python -m core weights fetch")[0] for line in problems)
        return Availability(False, missing, fix, details)

    def load(self, options: CombinedOptions, device: str) -> Stages:
        """The three models for ``options`` on ``device``. Raises MissingWeights for pretrained ones."""
        from core.models.combined.depth import load_depth_estimator, tiny_depth_estimator
        from core.models.combined.detection import load_detector, tiny_detector
        from core.models.combined.segmentation import load_segmenter, tiny_segmenter

        if options.weights == "random-tiny":
            return Stages(tiny_detector(0, device), tiny_segmenter(0, device), tiny_depth_estimator(0, device))
        return Stages(load_detector(options.detector, device),
                      load_segmenter(options.segmenter, options.checkpoint_path, device),
                      load_depth_estimator(options.depth_model, device))

    def parameter_count(self, model: Stages) -> int:
        return model.parameter_count

    def cost_bytes(self, model: Stages) -> int:
        return model.size_bytes

    def predict(self, model: Stages, scene: Scene, view_ids: list[int], options: CombinedOptions,
                progress: Progress, device: str) -> Reconstruction:
        """Run the pipeline on ``view_ids`` of ``scene`` and fuse them (first view's camera frame).

        Returns points ``float32 [N,3]``, colours, ``source_view`` (index into ``view_ids``), the
        relative poses ``cam_from_world [V,4,4]`` (cam_from_first-camera), intrinsics ``[V,3,3]`` and
        the fitted depth ``[V,H,W]``. Raises :class:`StageError` (a UserError) when a stage produces
        nothing usable, with the earlier stages' results attached, and :class:`FusionError` when
        the views cannot be fused.
        """
        settings = view_settings(options)
        notes = []
        results = []
        vggt_runs = {}
        for i, view in enumerate(view_ids):
            vggt_run = depth_fit.stored_vggt_run(scene, view) if options.camera == "vggt" else None
            vggt_runs[view] = vggt_run
            try:
                results.append(run_view(scene, view, model, settings,
                                        progress.sub(0.05 + 0.9 * i / len(view_ids),
                                                     0.05 + 0.9 * (i + 1) / len(view_ids)), vggt_run=vggt_run))
            except StageError as error:
                error.done = results
                raise
        progress(0.96, "fusing the views")
        if options.camera == "vggt":
            keys = {run[0] for run in vggt_runs.values() if run is not None}
            if len(keys) > 1:
                raise FusionError("the chosen views come from different VGGT runs; their cameras cannot be fused")
        poses = view_poses(scene, view_ids, options.camera, vggt_runs.get(view_ids[0]))
        if len(view_ids) > 1 and not np.isfinite(poses).all():
            raise FusionError("some chosen views have no pose, so they cannot be fused; run them one at a time")
        points, colors, source, relative = fuse(results, poses if np.isfinite(poses).all() else
                                                np.eye(4)[None].repeat(len(view_ids), 0))
        frames = {r.reference_frame for r in results}
        if any(r.depth_mode == "relative" for r in results):
            notes.append(RELATIVE_NOTE)
        if len(view_ids) > 1 and any(f.startswith("vggt:") for f in frames) and options.camera != "vggt":
            notes.append("VGGT depth (its own scale) fused with the scene's poses: the views may not agree in scale")
        stage_seconds = {stage: float(sum(r.seconds.get(stage, 0.0) for r in results))
                         for stage in ("detection", "segmentation", "depth", "back-projection")}
        progress(1.0, f"combined: {len(points):,} points from {len(view_ids)} view(s)")
        return Reconstruction(
            method=self.name, points=points, colors=colors, source_view=source, view_ids=list(view_ids),
            cam_from_world=relative, intrinsics=np.stack([r.intrinsics for r in results]),
            depth_maps=np.stack([r.depth for r in results]), notes=notes,
            extra={"views": [r.summary() for r in results], "stage_seconds": stage_seconds,
                   "models": {"detector": model.detector.name, "segmenter": model.segmenter.name,
                              "depth": model.depth.name},
                   "frame": "first input view's camera (OpenCV); units of the depth reference"})


METHOD = CombinedMethod()
