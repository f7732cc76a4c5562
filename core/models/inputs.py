"""Checks every model applies to its input pictures, with one message per problem."""
from __future__ import annotations

import numpy as np

from core.errors import UserError


def check_rgb_image(image, index: int, model: str, min_side: int, error: type[UserError] = UserError
                    ) -> np.ndarray:
    """``uint8 [H, W, 3]`` of picture ``index`` for ``model``, or ``error`` naming the problem:
    grayscale, RGBA or another channel count, a side under ``min_side`` pixels (one patch), or a
    dtype other than uint8 (float pictures in [0, 1] are converted)."""
    image = np.asarray(image)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise error(f"image {index} is grayscale ({list(image.shape)}); {model} needs RGB HxWx3 images")
    if image.ndim != 3 or image.shape[2] != 3:
        channels = image.shape[2] if image.ndim == 3 else "?"
        what = "RGBA" if channels == 4 else f"{channels}-channel"
        raise error(f"image {index} is {what} ({list(image.shape)}); {model} needs RGB HxWx3 images "
                    "(composite RGBA onto a background first)")
    h, w = image.shape[:2]
    if h < min_side or w < min_side:
        raise error(f"image {index} is {h}x{w} pixels; {model} needs at least {min_side}x{min_side} "
                    "(one patch)")
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.size and image.min() >= 0 and image.max() <= 1:
            return np.round(image * 255).astype(np.uint8)
        raise error(f"image {index} has dtype {image.dtype}; expected uint8 (or float in [0, 1])")
    return image
