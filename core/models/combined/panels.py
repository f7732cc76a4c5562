"""The five panels of the combined pipeline (image, box, mask, depth, masked depth) as RGB images.

Built either from a live :class:`ViewResult` (possibly partial, after a failing stage) or from a
stored Reconstruction's ``extra["views"]`` record, so a page shows cached runs and failed ones
the same way. No Streamlit here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from core.models.combined.detection import clean_label
from core.models.combined.pipeline import ViewResult, unpack_mask


@dataclass
class Panels:
    """What one view's five panels show (None = that stage did not produce it)."""

    view: int
    image: np.ndarray
    box: np.ndarray | None = None
    box_score: float | None = None
    box_label: str = ""
    boxes_found: int = 0
    mask: np.ndarray | None = None
    mask_score: float | None = None
    point: tuple | None = None
    depth: np.ndarray | None = None
    depth_mode: str = "metric"
    reference: str | None = None
    fit: dict | None = None
    fit_note: str = ""
    intrinsics_label: str = ""
    num_points: int | None = None
    seconds: dict = field(default_factory=dict)

    @property
    def masked_depth(self) -> np.ndarray | None:
        if self.depth is None or self.mask is None:
            return None
        return np.where(self.mask, self.depth, 0).astype(np.float32)


def from_result(scene, result: ViewResult) -> Panels:
    seg = result.segmentation
    return Panels(view=result.view, image=scene.images[result.view], box=result.box, box_score=result.box_score,
                  box_label=(result.detections.labels[result.box_index]
                             if result.box_index is not None and result.detections.labels else ""),
                  boxes_found=0 if result.detections is None else len(result.detections),
                  mask=None if seg is None else seg.mask, mask_score=None if seg is None else seg.score,
                  point=None if seg is None else seg.point, depth=result.depth, depth_mode=result.depth_mode,
                  reference=result.reference, fit=None if result.fit is None else result.fit.as_dict(),
                  fit_note=result.fit_note, intrinsics_label=result.intrinsics_label,
                  num_points=None if result.points is None else len(result.points), seconds=dict(result.seconds))


def from_reconstruction(scene, recon, index: int = 0) -> Panels:
    record = recon.extra["views"][index]
    view = int(record["view"])
    h, w = record["image_hw"]
    det = record.get("detections") or {}
    chosen = record.get("box_index")
    seg = record.get("segmentation")
    return Panels(view=view, image=scene.images[view],
                  box=None if chosen is None else np.asarray(det["boxes"][chosen]),
                  box_score=None if chosen is None else float(det["scores"][chosen]),
                  box_label=clean_label((det.get("labels") or [""] * (chosen + 1))[chosen]) if chosen is not None
                  else "",   # runs stored before the labels were cleaned keep "toy. [SEP]"
                  boxes_found=int(det.get("count", 0)),
                  mask=None if seg is None else unpack_mask(seg["mask"], (h, w)),
                  mask_score=None if seg is None else seg["score"], point=None if seg is None else seg["point"],
                  depth=recon.depth_maps[index], depth_mode=record["depth_mode"], reference=record["reference"],
                  fit=record.get("fit"), fit_note=record.get("fit_note", ""),
                  intrinsics_label=record.get("intrinsics_label", ""), num_points=record.get("num_points"),
                  seconds=record.get("seconds", {}))


def draw_box(image: np.ndarray, box: np.ndarray, score: float | None, point=None) -> np.ndarray:
    """``uint8 [H,W,3]`` copy of ``image`` with the box (and SAM's point) drawn, score in the corner."""
    out = image.copy()
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    thickness = max(2, image.shape[1] // 240)
    cv2.rectangle(out, (x0, y0), (x1, y1), (255, 40, 40), thickness)
    if score is not None:
        cv2.putText(out, f"{score:.2f}", (x0 + 3, max(y0 - 6, 16)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.6 * thickness / 2, (255, 40, 40), thickness)
    if point is not None:
        cv2.circle(out, (int(round(point[0])), int(round(point[1]))), 3 * thickness, (40, 220, 40), -1)
    return out


def overlay_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image dimmed outside ``mask``, tinted inside."""
    out = (image.astype(np.float32) * 0.35).astype(np.uint8)
    tint = (0.6 * image + 0.4 * np.array([40, 140, 255])).astype(np.uint8)
    out[mask] = tint[mask]
    return out


def colorize_depth(depth: np.ndarray) -> np.ndarray:
    """``uint8 [H,W,3]`` turbo colouring of depth (near = warm), invalid (0) pixels black.

    The range is the 2nd-98th percentile of the valid pixels.
    """
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    out = np.zeros(depth.shape + (3,), dtype=np.uint8)
    if not valid.any():
        return out
    lo, hi = np.percentile(depth[valid], [2, 98])
    scaled = np.clip((depth - lo) / max(hi - lo, 1e-12), 0, 1)
    colored = cv2.applyColorMap(((1 - scaled) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    out[valid] = colored[valid]
    return out
