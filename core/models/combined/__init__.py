"""Combined pipeline: Grounding DINO detection -> SAM segmentation -> Depth Anything -> back-projection.

Each stage is usable alone (``Detector``, ``Segmenter``, ``DepthEstimator``, the fit and the
back-projection functions); :func:`run_view` chains them on one view and ``METHOD`` (in
``.method``) runs and fuses several views through the run cache.
"""
from core.models.combined.projection import backproject, erode_mask, view_intrinsics
from core.models.combined.depth import DepthEstimator, load_depth_estimator, tiny_depth_estimator
from core.models.combined.depth_fit import (NoDepthReference, ScaleShiftFit, disparity_to_depth, find_reference,
                                            fit_inverse_depth, relative_depth)
from core.models.combined.detection import Detections, Detector, load_detector, tiny_detector
from core.models.combined.pipeline import StageError, Stages, ViewResult, ViewSettings, run_view
from core.models.combined.segmentation import Segmentation, Segmenter, load_segmenter, tiny_segmenter

__all__ = ["backproject", "erode_mask", "view_intrinsics", "DepthEstimator", "load_depth_estimator",
           "tiny_depth_estimator", "NoDepthReference", "ScaleShiftFit", "disparity_to_depth", "find_reference",
           "fit_inverse_depth", "relative_depth", "Detections", "Detector", "load_detector", "tiny_detector",
           "StageError", "Stages", "ViewResult", "ViewSettings", "run_view", "Segmentation", "Segmenter",
           "load_segmenter", "tiny_segmenter"]
