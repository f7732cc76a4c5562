"""The combined pipeline on one or several views: detect -> segment -> depth -> back-project -> fuse.

:func:`run_view` runs the four stages on one view and returns a :class:`ViewResult` holding every
intermediate (box, mask, disparity, fitted depth, points) with the time of each stage. A stage
that cannot produce a usable result (no box for the prompt, an empty mask, no depth reference)
raises :class:`StageError`, which carries what the earlier stages produced so a page can keep
showing them. :func:`fuse` puts several views into the first view's camera frame using the
scene's poses (or a VGGT run's, when its cameras are chosen). :class:`Stages` is the loaded
model of the ``combined`` method (the runner caches it as one model).
"""
from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from core import geometry
from core.models.combined import projection as bp
from core.models.combined import depth_fit
from core.models.combined.detection import Detections, Detector
from core.models.combined.segmentation import Segmentation, Segmenter
from core.models.combined.depth import DepthEstimator
from core.errors import UserError
from core.progress import Progress, silent

log = logging.getLogger(__name__)

STAGES = ("detection", "segmentation", "depth", "back-projection")


class StageError(UserError):
    """A stage gave nothing usable (no box for the prompt, an empty mask, no depth reference...).
    ``stage`` names it; ``partial`` holds the earlier results.

    Attributes:
        stage: one of :data:`STAGES`.
        view: scene view id.
        partial: the :class:`ViewResult` of the failing view (earlier stages filled in).
        done: ViewResults of views that completed before it.
    """

    def __init__(self, stage: str, view: int, message: str, partial: "ViewResult", done: list | None = None):
        super().__init__(f"view {view}, {stage}: {message}")
        self.stage, self.view, self.partial, self.done = stage, view, partial, list(done or [])
        self.reason = message


class FusionError(UserError):
    """The chosen views cannot be fused into one frame (a view without a pose, cameras from
    different VGGT runs)."""


@dataclass
class Stages:
    """The three models (any may be a tiny random one): the ``combined`` method's loaded model."""

    detector: Detector
    segmenter: Segmenter
    depth: DepthEstimator

    def modules(self) -> list:
        """The three ``torch.nn.Module`` s (Grounding DINO, SAM, Depth Anything)."""
        return [self.detector.model, self.segmenter.sam, self.depth.model]

    @property
    def parameter_count(self) -> int:
        return self.detector.parameter_count + self.segmenter.parameter_count + self.depth.parameter_count

    @property
    def size_bytes(self) -> int:
        """Bytes the three models' parameters and buffers hold."""
        return sum(t.numel() * t.element_size() for module in self.modules()
                   for t in (*module.parameters(), *module.buffers()))


@dataclass
class ViewSettings:
    """Per-run settings of the stages (a subset of the method options)."""

    prompt: str = "toy"
    box_threshold: float = 0.35
    text_threshold: float = 0.25
    box_index: int = -1
    use_point: bool = True
    point_x: float = -1.0
    point_y: float = -1.0
    depth_reference: str = "auto"
    fit_region: str = "object mask"
    camera: str = "scene"
    fov_deg: float = 60.0
    erode_px: int = 2


@dataclass
class ViewResult:
    """Everything the pipeline made for one view (fields stay None past a failing stage).

    Attributes:
        view: scene view id; image_hw: (H, W).
        detections / box_index: all boxes and the chosen one.
        segmentation: SAM's result (``mask bool [H,W]``).
        disparity: ``float32 [H,W]`` relative inverse depth from Depth Anything.
        depth: ``float32 [H,W]`` depth after the fit (world units of the reference, or relative units).
        reference / fit: the depth reference's label and the scale-shift fit (None in relative mode).
        depth_mode: ``metric`` (fitted to a reference) or ``relative`` (arbitrary units).
        intrinsics / intrinsics_label: ``[3,3]`` used and where it came from.
        mask_used: ``bool [H,W]`` eroded mask the points came from.
        points / colors / pixels: camera-frame points ``float32 [M,3]``, ``uint8 [M,3]``, ``[M,2]`` (row, col).
        seconds: {stage: seconds}.
    """

    view: int
    image_hw: tuple[int, int]
    detections: Detections | None = None
    box_index: int | None = None
    segmentation: Segmentation | None = None
    disparity: np.ndarray | None = None
    depth: np.ndarray | None = None
    reference: str | None = None
    reference_frame: str = "scene"
    fit: depth_fit.ScaleShiftFit | None = None
    fit_note: str = ""
    depth_mode: str = "metric"
    intrinsics: np.ndarray | None = None
    intrinsics_label: str = ""
    mask_used: np.ndarray | None = None
    points: np.ndarray | None = None
    colors: np.ndarray | None = None
    pixels: np.ndarray | None = None
    seconds: dict = field(default_factory=dict)

    @property
    def box(self) -> np.ndarray | None:
        return None if self.detections is None or self.box_index is None else self.detections.boxes[self.box_index]

    @property
    def box_score(self) -> float | None:
        return None if self.box_index is None else float(self.detections.scores[self.box_index])

    @property
    def mask(self) -> np.ndarray | None:
        return None if self.segmentation is None else self.segmentation.mask

    def masked_depth(self) -> np.ndarray | None:
        if self.depth is None or self.mask is None:
            return None
        return np.where(self.mask, self.depth, 0).astype(np.float32)

    def summary(self) -> dict:
        """JSON-ready record (stored in ``Reconstruction.extra["views"]``; the mask bit-packed)."""
        out = {"view": self.view, "image_hw": list(self.image_hw), "seconds": self.seconds,
               "depth_mode": self.depth_mode, "reference": self.reference, "reference_frame": self.reference_frame,
               "fit": None if self.fit is None else self.fit.as_dict(), "fit_note": self.fit_note,
               "intrinsics_label": self.intrinsics_label,
               "intrinsics": None if self.intrinsics is None else np.asarray(self.intrinsics).tolist()}
        if self.detections is not None:
            keep = min(len(self.detections), 20)
            out["detections"] = {"boxes": self.detections.boxes[:keep].tolist(),
                                 "scores": self.detections.scores[:keep].tolist(),
                                 "labels": self.detections.labels[:keep], "prompt": self.detections.prompt,
                                 "count": len(self.detections)}
            out["box_index"] = self.box_index
        if self.segmentation is not None:
            out["segmentation"] = {"score": self.segmentation.score, "scores": self.segmentation.scores.tolist(),
                                   "point": self.segmentation.point, "mask": pack_mask(self.segmentation.mask),
                                   "mask_pixels": int(self.segmentation.mask.sum())}
        if self.points is not None:
            out["num_points"] = int(len(self.points))
        return out


def pack_mask(mask: np.ndarray) -> str:
    """``bool [H,W]`` -> base64 of its packed bits (row-major)."""
    return base64.b64encode(np.packbits(np.asarray(mask, dtype=bool).reshape(-1)).tobytes()).decode()


def unpack_mask(text: str, shape: tuple[int, int]) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8), count=shape[0] * shape[1])
    return bits.reshape(shape).astype(bool)


def _timed(result: ViewResult, stage: str):
    class _Timer:
        def __enter__(self):
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            result.seconds[stage] = time.perf_counter() - self.start
            return False
    return _Timer()


def run_view(scene, view: int, stages: Stages, settings: ViewSettings, progress: Progress | None = None,
             store=None, vggt_run=None) -> ViewResult:
    """Run detection, segmentation, depth and back-projection on ``view`` of ``scene``.

    Args:
        vggt_run: (key, Reconstruction) of a stored VGGT run, used when its cameras are chosen.
    Returns:
        A complete :class:`ViewResult` (points in the view's camera frame).
    Raises:
        StageError: a stage produced nothing usable (``error.partial`` holds the earlier stages).
    """
    progress = progress or silent()
    image = scene.images[view]
    h, w = image.shape[:2]
    result = ViewResult(view=view, image_hw=(h, w))

    def fail(stage: str, message: str):
        raise StageError(stage, view, message, result)

    progress(0.0, f"view {view}: detecting {settings.prompt!r}")
    with _timed(result, "detection"):
        try:
            detections = stages.detector.detect(image, settings.prompt, settings.box_threshold,
                                                settings.text_threshold)
        except ValueError as error:  # empty prompt
            fail("detection", str(error))
        result.detections = detections
        try:
            result.box_index = detections.choose(settings.box_index)
        except ValueError as error:
            fail("detection", str(error))
    progress.check()

    progress(0.3, f"view {view}: segmenting the box")
    with _timed(result, "segmentation"):
        point = None
        if settings.point_x >= 0 and settings.point_y >= 0:
            point = (float(settings.point_x), float(settings.point_y))
        segmentation = stages.segmenter.segment(image, result.box, point, settings.use_point)
        result.segmentation = segmentation
        if not segmentation.mask.any():
            fail("segmentation", "SAM returned an empty mask for this box: pick another box, move the point, "
                                 "or change the prompt")
    progress.check()

    progress(0.55, f"view {view}: estimating depth")
    with _timed(result, "depth"):
        result.disparity = stages.depth.predict(image)
        try:
            reference = depth_fit.find_reference(scene, view, settings.depth_reference, store)
        except depth_fit.NoDepthReference as error:
            fail("depth", str(error))
        if reference is None:
            result.depth = depth_fit.relative_depth(result.disparity)
            result.depth_mode = "relative"
            result.reference = "none: relative depth (arbitrary units, unknown scale and shift)"
        else:
            result.reference, result.reference_frame = reference.label, reference.frame
            region = None
            if settings.fit_region == "object mask":
                region = segmentation.mask
                if np.count_nonzero(region & (reference.depth > 0)) < depth_fit.MIN_SAMPLES:
                    region = None
                    result.fit_note = "too few reference samples inside the mask; fitted on the whole view"
            try:
                fit = depth_fit.fit_inverse_depth(result.disparity, reference.depth, region)
            except depth_fit.NoDepthReference as error:
                fail("depth", f"cannot fit the depth to {reference.label}: {error}")
            result.fit = fit
            result.depth = depth_fit.disparity_to_depth(result.disparity, fit.scale, fit.shift)
    progress.check()

    progress(0.8, f"view {view}: back-projecting")
    with _timed(result, "back-projection"):
        try:
            result.intrinsics, result.intrinsics_label = bp.view_intrinsics(scene, view, settings.camera,
                                                                            settings.fov_deg, vggt_run)
        except ValueError as error:
            fail("back-projection", str(error))
        result.mask_used = bp.erode_mask(segmentation.mask, settings.erode_px)
        result.points, result.colors, result.pixels = bp.backproject(result.depth, result.mask_used,
                                                                     result.intrinsics, image)
        if len(result.points) == 0:
            fail("back-projection", f"no pixel of the mask (eroded by {settings.erode_px} px) has a valid depth: "
                                    "reduce the erosion or check the depth reference")
    progress(1.0, f"view {view}: {len(result.points):,} points")
    return result


def view_poses(scene, view_ids: list[int], camera: str, vggt_run=None) -> np.ndarray:
    """``[V,4,4]`` cam_from_world used to fuse views: the VGGT run's when its cameras are chosen, else the scene's."""
    if camera == "vggt" and vggt_run is not None:
        _, recon = vggt_run
        return np.stack([np.asarray(recon.cam_from_world[recon.view_ids.index(v)], dtype=np.float64)
                         for v in view_ids])
    return np.asarray(scene.cam_from_world[view_ids], dtype=np.float64)


def fuse(results: list[ViewResult], poses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points of every view in the first view's camera frame.

    Returns ``points float32 [N,3]``, ``colors uint8 [N,3]``, ``source_view int32 [N]`` (index into
    ``results``) and the relative poses ``[V,4,4]`` (cam_from_first-camera).
    """
    reference = poses[0]
    relative = geometry.relative_pose(reference, poses)  # [V,4,4]
    points, colors, source = [], [], []
    for i, (result, pose) in enumerate(zip(results, poses)):
        if i == 0:
            points.append(result.points.astype(np.float64))
        else:
            if not np.isfinite(pose).all():
                raise FusionError(f"view {result.view} has no pose, so it cannot be fused; run it alone")
            points.append(bp.to_reference_frame(result.points.astype(np.float64), pose, reference))
        colors.append(result.colors)
        source.append(np.full(len(result.points), i, dtype=np.int32))
    return (np.concatenate(points).astype(np.float32), np.concatenate(colors), np.concatenate(source), relative)
