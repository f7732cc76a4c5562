"""Image preparation as the DUSt3R/Fast3R authors' loader does it, keeping the transform.

``size`` 512 (published models; 64 in the tiny fixtures): resize with PIL so the long side is
``size`` (each side ``int(round(side * size / long))``; LANCZOS when shrinking, BICUBIC
otherwise), centre-crop to multiples of 16 (half-sizes ``((2*(W//2))//16)*8`` and
``((2*(H//2))//16)*8`` around ``(W//2, H//2)``; a square image is cropped to 4:3 landscape unless
``square_ok``), then ``(rgb/255 - 0.5)/0.5`` in [-1, 1]. ``size`` 224: short side to 224 and a
centred 224x224 crop.

:class:`ImageTransform` maps model-pixel intrinsics back to the original image (pixel centres at
integer coordinates in both).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from core import geometry
from core.errors import UserError


class ImageError(UserError):
    """An image the networks cannot take (not uint8 RGB, or too thin for the input size)."""


@dataclass(frozen=True)
class ImageTransform:
    """Original image -> resize -> crop -> model input.

    Attributes:
        original_size: (H, W) of the input image.
        resized_size: (H, W) after the resize.
        crop_offset: (x0, y0) top-left corner of the crop in the resized image.
        model_size: (h, w) of the network input.
    """

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    crop_offset: tuple[int, int]
    model_size: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """(sx, sy) = resized / original per axis."""
        return (self.resized_size[1] / self.original_size[1], self.resized_size[0] / self.original_size[0])

    def intrinsics_to_original(self, k_model: np.ndarray) -> np.ndarray:
        """``[...,3,3]`` intrinsics in model pixels -> the same camera in original-image pixels
        (float64; :func:`core.geometry.resize_crop_intrinsics`, the crop an offset of minus its corner)."""
        x0, y0 = self.crop_offset
        return geometry.resize_crop_intrinsics(k_model, self.scale, (-x0, -y0), inverse=True)

    def mask_to_model(self, mask: np.ndarray) -> np.ndarray:
        """``bool [H, W]`` original-size mask -> ``bool [h, w]`` (nearest resize, same crop)."""
        rh, rw = self.resized_size
        x0, y0 = self.crop_offset
        h, w = self.model_size
        img = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).resize((rw, rh), Image.NEAREST)
        return np.asarray(img)[y0:y0 + h, x0:x0 + w] > 127


def _resize_long_side(img: Image.Image, long_side: int) -> Image.Image:
    s = max(img.size)
    interp = Image.LANCZOS if s > long_side else Image.BICUBIC
    new_size = tuple(int(round(x * long_side / s)) for x in img.size)
    return img.resize(new_size, interp)


def prepare_image(image: np.ndarray, size: int = 512, square_ok: bool = False) -> tuple[torch.Tensor, ImageTransform]:
    """``uint8 [H, W, 3]`` RGB -> (``float32 [3, h, w]`` in [-1, 1], transform).

    Raises :class:`ImageError` for another array type or an image so elongated that a side
    crops to nothing.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 HxWx3 RGB image, got {image.dtype} {list(image.shape)}")
    pil = Image.fromarray(image)
    original = (image.shape[0], image.shape[1])
    if size == 224:
        short = min(pil.size)
        pil = _resize_long_side(pil, round(224 * max(pil.size) / short))
    else:
        pil = _resize_long_side(pil, size)
    w, h = pil.size
    cx, cy = w // 2, h // 2
    if size == 224:
        half = min(cx, cy)
        halfw = halfh = half
    else:
        halfw, halfh = ((2 * cx) // 16) * 8, ((2 * cy) // 16) * 8
        if not square_ok and w == h:
            halfh = 3 * halfw // 4
    if halfw <= 0 or halfh <= 0:
        raise ImageError(f"image {original[1]}x{original[0]} is too small or too elongated for the "
                         f"network input size {size}")
    box = (cx - halfw, cy - halfh, cx + halfw, cy + halfh)
    cropped = np.asarray(pil.crop(box), dtype=np.float32)
    tensor = torch.from_numpy((cropped / 255.0 - 0.5) / 0.5).permute(2, 0, 1).contiguous()
    transform = ImageTransform(original_size=original, resized_size=(h, w),
                               crop_offset=(cx - halfw, cy - halfh), model_size=(2 * halfh, 2 * halfw))
    return tensor, transform


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """Network input ``[3, h, w]`` in [-1, 1] -> ``uint8 [h, w, 3]`` colours."""
    arr = ((image.detach().cpu().permute(1, 2, 0).numpy() + 1.0) * 127.5).round()
    return np.clip(arr, 0, 255).astype(np.uint8)
