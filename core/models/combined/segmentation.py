"""Stage 2, promptable segmentation: Segment Anything (the official ``segment_anything`` package).

SAM is prompted with the detection box and an optional positive point (default: the box
centre); it returns three candidate masks (multimask output) and the one with the best
predicted IoU is kept.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from core.models import weights
from core.models.combined.checkpoints import SEGMENTERS, sam_checkpoint

log = logging.getLogger(__name__)


@dataclass
class Segmentation:
    """SAM's answer for one prompt.

    Attributes:
        mask: ``bool [H,W]`` the best-scoring mask.
        score: its predicted IoU.
        scores: ``float32 [3]`` predicted IoU of every candidate mask.
        box: ``float32 [4]`` the box prompt (x0, y0, x1, y1) pixels.
        point: ``(x, y)`` the positive point in pixels, or None.
    """

    mask: np.ndarray
    score: float
    scores: np.ndarray
    box: np.ndarray
    point: tuple[float, float] | None


def box_centre(box: np.ndarray) -> tuple[float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return (x0 + x1) / 2, (y0 + y1) / 2


class Segmenter:
    """A SAM model wrapped in ``segment_anything.SamPredictor``."""

    def __init__(self, sam, device: str = "cpu", name: str = "") -> None:
        from segment_anything import SamPredictor

        self.sam = sam.to(device).eval()
        self.predictor = SamPredictor(self.sam)
        self.device = device
        self.name = name

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.sam.parameters())

    def segment(self, image: np.ndarray, box: np.ndarray, point: tuple[float, float] | None = None,
                use_point: bool = True) -> Segmentation:
        """Mask of the object in ``box`` of ``image`` (``uint8 HxWx3``).

        Args:
            box: ``[4]`` (x0, y0, x1, y1) pixels.
            point: positive point (x, y) pixels; None = the box centre (when ``use_point``).
        """
        box = np.asarray(box, dtype=np.float32).reshape(4)
        if use_point and point is None:
            point = box_centre(box)
        with torch.inference_mode():
            self.predictor.set_image(np.ascontiguousarray(image), image_format="RGB")
            masks, scores, _ = self.predictor.predict(
                point_coords=None if not use_point else np.array([point], dtype=np.float32),
                point_labels=None if not use_point else np.array([1]),
                box=box, multimask_output=True)
        best = int(np.argmax(scores))
        return Segmentation(mask=masks[best].astype(bool), score=float(scores[best]),
                            scores=np.asarray(scores, dtype=np.float32), box=box,
                            point=None if not use_point else (float(point[0]), float(point[1])))


def build_sam(variant: str):
    """An untrained SAM of ``variant`` (``vit_b``/``vit_l``/``vit_h``) from the package's builders."""
    from segment_anything import sam_model_registry

    return sam_model_registry[variant](checkpoint=None)


def load_segmenter(key: str, checkpoint_path: str = "", device: str = "cpu") -> Segmenter:
    """SAM ``key`` with its official weights (explicit path or the weights folder; never downloads)."""
    variant, _ = SEGMENTERS[key]
    path = sam_checkpoint(key, checkpoint_path)
    log.info("loading %s from %s", key, path)
    sam = build_sam(variant)
    state = weights.load_state_dict(path)
    weights.check_state_dict(sam, state)
    sam.load_state_dict(state, strict=True)
    return Segmenter(sam, device, key)


def tiny_segmenter(seed: int = 0, device: str = "cpu") -> Segmenter:
    from core.models.combined import tiny

    return Segmenter(tiny.tiny_sam(seed), device, "sam (random tiny)")
