"""Pre- and post-processing around VGGT: image preparation and point-cloud extraction.

Pixel coordinates are ReconBench's (pixel centres at integers). A transform is the resize
factor ``(sx, sy)`` and the offset ``(tx, ty)`` added after resizing (crop: negative, pad:
positive): original pixel ``u`` is shown at network pixel ``u' = sx (u + 1/2) - 1/2 + tx``
(:func:`core.geometry.resize_crop_pixels`; this is where PIL's resize puts it), and intrinsics map
with :func:`core.geometry.resize_crop_intrinsics`.

Modes (as the authors' ``load_and_preprocess_images``):

- ``crop``: width 518, height scaled by the same factor and rounded to a multiple of 14;
  taller than 518 is centre-cropped to 518.
- ``pad``: the longer side 518, the other scaled and rounded to a multiple of 14, then padded
  with white (1.0) to 518 x 518, centred.

Images are resized with PIL bicubic (as the reference). When views differ in size the batch
is padded with white to the largest size (centred).

VGGT's own cameras: its decoded intrinsics put the principal point at ``(W/2, H/2)`` of the
network input (its one convention quirk: :func:`core.geometry.dust3r_principal_point`), and the
authors' ``unproject_depth_map`` lifts pixel (row v, column u) at the integer coordinates (u, v),
ReconBench's pixel convention: :func:`core.geometry.depth_to_point_map` with those intrinsics
reproduces it. So :meth:`ImageTransform.intrinsics_to_original` maps them with the same
integer-centre convention, and the result projects the method's points back onto the original
pixels they were seen at (``tests/test_vggt_method.py`` measures this with a ramp image). The
authors' inference code maps no intrinsics back; their training code resizes intrinsics with
this same pixel-centre convention, so there is no VGGT-specific resize convention to reproduce.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from core import geometry
from core.errors import UserError
from core.models.inputs import check_rgb_image

TARGET_SIZE = 518
PATCH = 14
MODES = ("crop", "pad")
BRANCHES = ("depth+camera", "point map")


@dataclass(frozen=True)
class ImageTransform:
    """How one original image became the network input.

    Attributes:
        original_hw: (H, W) of the original image.
        resized_hw: (h, w) after resizing, before crop/pad.
        network_hw: (H', W') of the network input.
        scale: (sx, sy) resize factors.
        offset: (tx, ty) pixels added after resizing (negative = cropped away).
    """

    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    network_hw: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[float, float]

    def intrinsics_to_original(self, k_network: np.ndarray) -> np.ndarray:
        """``[...,3,3]`` intrinsics of the network input -> of the original image (float64;
        integer pixel centres in both, see the module docstring)."""
        return geometry.resize_crop_intrinsics(k_network, self.scale, self.offset, inverse=True)

    def intrinsics_to_network(self, k_original: np.ndarray) -> np.ndarray:
        """``[...,3,3]`` intrinsics of the original image -> of the network input (float64)."""
        return geometry.resize_crop_intrinsics(k_original, self.scale, self.offset)

    def valid_mask(self) -> np.ndarray:
        """``bool [H', W']``: network pixels that show the image (not padding)."""
        h, w = self.network_hw
        rh, rw = self.resized_hw
        tx, ty = int(round(self.offset[0])), int(round(self.offset[1]))
        mask = np.zeros((h, w), dtype=bool)
        mask[max(ty, 0):min(h, ty + rh), max(tx, 0):min(w, tx + rw)] = True
        return mask

    def warp(self, array: np.ndarray, fill=0, resample=Image.NEAREST) -> np.ndarray:
        """Apply the same resize/crop/pad to a per-pixel map ``[H, W]`` or ``[H, W, C]``."""
        array = np.asarray(array)
        is_bool = array.dtype == bool
        src = array.astype(np.uint8) * 255 if is_bool else array
        rh, rw = self.resized_hw
        resized = np.asarray(Image.fromarray(src).resize((rw, rh), resample))
        out = _place(resized, self.network_hw, self.offset, fill)
        return out > 127 if is_bool else out


def _place(resized: np.ndarray, network_hw: tuple[int, int], offset: tuple[float, float],
           fill) -> np.ndarray:
    h, w = network_hw
    tx, ty = int(round(offset[0])), int(round(offset[1]))
    out = np.full((h, w) + resized.shape[2:], fill, dtype=resized.dtype)
    rh, rw = resized.shape[:2]
    ys, xs = max(ty, 0), max(tx, 0)
    ye, xe = min(h, ty + rh), min(w, tx + rw)
    out[ys:ye, xs:xe] = resized[ys - ty:ye - ty, xs - tx:xe - tx]
    return out


class VGGTImageError(UserError):
    """A picture VGGT cannot take (not RGB, smaller than one patch, unsupported dtype)."""


def _check_image(image: np.ndarray, index: int) -> np.ndarray:
    return check_rgb_image(image, index, "VGGT", PATCH, VGGTImageError)


def preprocess_images(images: list[np.ndarray], mode: str = "crop",
                      target_size: int = TARGET_SIZE
                      ) -> tuple[torch.Tensor, list[ImageTransform]]:
    """Prepare RGB images for VGGT.

    Args:
        images: list of ``uint8 [H, W, 3]`` RGB images (sizes may differ).
        mode: ``crop`` or ``pad`` (see module docstring).
        target_size: 518 (the network's training width); must be a multiple of 14.

    Returns:
        ``(images [S, 3, H', W'] float32 in [0, 1], transforms)`` with one
        :class:`ImageTransform` per image.

    Raises:
        VGGTImageError: no images, images smaller than 14 px, grayscale/RGBA; ValueError: unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"unknown preprocess mode {mode!r}; use one of {MODES}")
    if target_size % PATCH:
        raise ValueError(f"target_size must be a multiple of {PATCH}, got {target_size}")
    if images is None or len(images) == 0:
        raise VGGTImageError("VGGT needs at least one image; got 0 views")
    arrays, transforms = [], []
    for index, image in enumerate(images):
        image = _check_image(image, index)
        h, w = image.shape[:2]
        if mode == "pad" and h > w:
            new_h, new_w = target_size, round(w * (target_size / h) / PATCH) * PATCH
        else:
            new_w, new_h = target_size, round(h * (target_size / w) / PATCH) * PATCH
        if new_h < PATCH or new_w < PATCH:
            raise ValueError(f"image {index} ({h}x{w}) is too elongated: it would be "
                             f"{new_h}x{new_w} at width {target_size}")
        resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC))
        if mode == "crop":
            out_h = min(new_h, target_size)
            offset = (0.0, -float((new_h - target_size) // 2) if new_h > target_size else 0.0)
            network_hw = (out_h, new_w)
        else:
            offset = (float((target_size - new_w) // 2), float((target_size - new_h) // 2))
            network_hw = (target_size, target_size)
        transforms.append(ImageTransform((h, w), (new_h, new_w), network_hw,
                                         (new_w / w, new_h / h), offset))
        arrays.append(resized)
    max_h = max(t.network_hw[0] for t in transforms)
    max_w = max(t.network_hw[1] for t in transforms)
    tensors = []
    for i, (resized, t) in enumerate(zip(arrays, transforms)):
        offset = t.offset
        if t.network_hw != (max_h, max_w):  # pad the batch to a common size (centred, white)
            dy, dx = (max_h - t.network_hw[0]) // 2, (max_w - t.network_hw[1]) // 2
            offset = (offset[0] + dx, offset[1] + dy)
            t = ImageTransform(t.original_hw, t.resized_hw, (max_h, max_w), t.scale, offset)
            transforms[i] = t
        placed = _place(resized.astype(np.float32) / 255.0, t.network_hw, t.offset, 1.0)
        tensors.append(torch.from_numpy(placed).permute(2, 0, 1))
    return torch.stack(tensors).contiguous(), transforms


def confidence_keep(confidence: np.ndarray, percentile: float = 50.0, min_confidence: float = 0.0,
                    valid: np.ndarray | None = None) -> np.ndarray:
    """``bool`` mask of entries with confidence >= the ``percentile``-th percentile (over the
    valid entries) and >= ``min_confidence`` (and > 1e-5, as the authors' demo)."""
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"confidence percentile must be in [0, 100], got {percentile}")
    confidence = np.asarray(confidence)
    valid = np.ones(confidence.shape, bool) if valid is None else np.asarray(valid, bool)
    valid = valid & np.isfinite(confidence)
    if not valid.any():
        return valid
    threshold = np.percentile(confidence[valid], percentile) if percentile > 0 else -np.inf
    return valid & (confidence >= threshold) & (confidence >= min_confidence) & (confidence > 1e-5)


@dataclass
class PointCloud:
    """Points selected from per-pixel predictions (all arrays share the first axis N).

    Attributes:
        points: ``float32 [N, 3]`` world (first camera) frame.
        colors: ``uint8 [N, 3]`` from the network input images.
        confidence: ``float32 [N]``.
        source_view: ``int32 [N]`` index of the view (input order).
        pixel: ``int32 [N, 2]`` (row, column) in the network input.
    """

    points: np.ndarray
    colors: np.ndarray
    confidence: np.ndarray
    source_view: np.ndarray
    pixel: np.ndarray


def point_cloud(world_points: np.ndarray, confidence: np.ndarray, images: np.ndarray,
                transforms: list[ImageTransform] | None = None, percentile: float = 50.0,
                min_confidence: float = 0.0, masks: np.ndarray | None = None) -> PointCloud:
    """Filter per-pixel points into a cloud.

    Args:
        world_points: ``[S, H, W, 3]`` (unprojected depth or the point map; NaN = invalid).
        confidence: ``[S, H, W]`` matching confidence.
        images: ``[S, 3, H, W]`` float in [0, 1] or ``[S, H, W, 3]`` uint8 (colours).
        transforms: per-view transforms (padding pixels are dropped).
        percentile: confidence percentile below which points are dropped (0 keeps all).
        min_confidence: absolute confidence floor.
        masks: optional ``bool [S, H, W]`` object masks in network pixels.
    """
    world_points = np.asarray(world_points)
    s, h, w = world_points.shape[:3]
    valid = np.isfinite(world_points).all(-1)
    if transforms is not None:
        valid &= np.stack([t.valid_mask() for t in transforms])
    if masks is not None:
        valid &= np.asarray(masks, dtype=bool)
    keep = confidence_keep(confidence, percentile, min_confidence, valid)
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = np.clip(np.round(images.transpose(0, 2, 3, 1) * 255), 0, 255).astype(np.uint8)
    view, row, col = np.nonzero(keep)
    return PointCloud(points=world_points[keep].astype(np.float32), colors=images[keep],
                      confidence=np.asarray(confidence)[keep].astype(np.float32),
                      source_view=view.astype(np.int32),
                      pixel=np.stack((row, col), -1).astype(np.int32))
