"""Pre- and post-processing around π³ / Pi3X, as the authors' ``load_images_as_tensor`` and
example script do.

Resize: the target size comes from the FIRST picture (W x H) and a pixel limit L (published
default 255,000): s = √(L / (W·H)), k = round(W·s/14), m = round(H·s/14) (Python round); while
14k·14m > L, k -= 1 when k/m > W/H, else m -= 1; target 14k x 14m. Every picture is resized to it
with PIL LANCZOS (a picture of another shape is stretched: aspect ratio not kept), RGB, /255.

Pixel coordinates are ReconBench's (pixel centres at integers); a view's transform is a pure
scale ``(W'/W, H'/H)`` with no offset (:func:`core.geometry.resize_crop_intrinsics`). Pi3X's
intrinsics input uses the authors' convention (pixel centres at +0.5): :func:`intrinsics_to_network`
converts.

Confidence filter: the example keeps pixels with ``sigmoid(conf) > 0.1``; a percentile cut over the
valid pixels (like VGGT's) can be added.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from core import geometry
from core.models.inputs import check_rgb_image

from .modeling_pi3 import Pi3InputError

PATCH = 14
PIXEL_LIMIT = 255_000
MIN_CONFIDENCE = 0.1


class Pi3ImageError(Pi3InputError):
    """A picture π³ cannot take (not RGB, smaller than one patch, unsupported dtype)."""


def target_size(width: int, height: int, pixel_limit: int = PIXEL_LIMIT, patch: int = PATCH
                ) -> tuple[int, int]:
    """``(W', H')`` of the authors' pixel-limit resize for a ``width x height`` first picture."""
    scale = (pixel_limit / (width * height)) ** 0.5
    k, m = round(width * scale / patch), round(height * scale / patch)
    while k >= 1 and m >= 1 and (patch * k) * (patch * m) > pixel_limit:
        if k / m > width / height:
            k -= 1
        else:
            m -= 1
    if k < 1 or m < 1:
        raise Pi3ImageError(f"a {width}x{height} picture cannot be resized to whole {patch}-pixel "
                            f"patches within {pixel_limit} pixels (too elongated or limit too small)")
    return patch * k, patch * m


def check_image(image: np.ndarray, index: int) -> np.ndarray:
    """``uint8 [H, W, 3]`` of a picture, or :class:`Pi3ImageError` naming what is wrong."""
    return check_rgb_image(image, index, "π³", PATCH, Pi3ImageError)


def preprocess_images(images: list[np.ndarray], pixel_limit: int = PIXEL_LIMIT
                      ) -> tuple[torch.Tensor, list[tuple[float, float]]]:
    """RGB pictures -> ``(float32 [S, 3, H', W'] in [0, 1], per-view scale (sx, sy))``.

    Raises:
        Pi3ImageError: no pictures, a picture under one patch, grayscale / RGBA, bad dtype.
    """
    if images is None or len(images) == 0:
        raise Pi3ImageError("π³ needs at least one image; got 0 views")
    arrays = [check_image(image, i) for i, image in enumerate(images)]
    width, height = target_size(arrays[0].shape[1], arrays[0].shape[0], pixel_limit)
    out, scales = [], []
    for array in arrays:
        resized = Image.fromarray(array).resize((width, height), Image.LANCZOS)
        out.append(torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1))
        scales.append((width / array.shape[1], height / array.shape[0]))
    return torch.stack(out).contiguous(), scales


def intrinsics_to_network(k: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """A scene camera's intrinsics (integer pixel centres) -> Pi3X's intrinsics input for the
    resized picture (the authors' +0.5 pixel centres)."""
    out = geometry.resize_crop_intrinsics(k, scale)
    out[..., 0, 2] += 0.5 * out[..., 2, 2]
    out[..., 1, 2] += 0.5 * out[..., 2, 2]
    return out


def confidence_keep(probability: np.ndarray, min_confidence: float = MIN_CONFIDENCE,
                    percentile: float = 0.0, valid: np.ndarray | None = None) -> np.ndarray:
    """``bool`` mask: ``probability > min_confidence`` (the authors' ``sigmoid(conf) > 0.1``) and,
    when ``percentile > 0``, ``>=`` that percentile of the valid entries' probabilities."""
    probability = np.asarray(probability)
    keep = np.isfinite(probability) if valid is None else np.asarray(valid, bool) & np.isfinite(probability)
    if not keep.any():
        return keep
    if percentile > 0:
        keep &= probability >= np.percentile(probability[keep], percentile)
    return keep & (probability > min_confidence)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically safe logistic function (float32)."""
    x = np.asarray(x, dtype=np.float64)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)
