"""Input preparation for OpenLRM, as the authors' inference does it.

- :func:`preprocess_image`: RGB or RGBA ``uint8 HxWx{3,4}`` -> ``float32 [1,3,S,S]`` in [0,1]:
  ``/255``, RGBA composited on white (``rgb·α + 1 - α``), bicubic resize to ``S×S`` with
  ``align_corners=True`` (aspect ratio not kept), clamp to [0,1]. No mean/std normalisation.
- :func:`crop_object`: for a scene view with an object mask, the object's pixels on white,
  cropped to the mask's bounding box, centred and padded to a square with a white border
  (``border_ratio`` of the side, like the authors' recentring step), so the aspect ratio is kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import UserError


class LRMInputError(UserError):
    """A picture LRM cannot use (wrong shape, too small, empty object mask)."""


def preprocess_image(image: np.ndarray, source_size: int) -> torch.Tensor:
    """``uint8 HxWx3`` (RGB) or ``HxWx4`` (RGBA) -> ``float32 [1,3,S,S]`` in [0,1] (module docstring)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise LRMInputError(f"expected an HxWx3 or HxWx4 image, got shape {list(image.shape)}")
    if min(image.shape[:2]) < 2:
        raise LRMInputError(f"image of {image.shape[0]}x{image.shape[1]} pixels is too small for LRM")
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0) / 255.0
    if x.shape[1] == 4:
        x = x[:, :3] * x[:, 3:] + (1 - x[:, 3:])
    x = F.interpolate(x, size=(source_size, source_size), mode="bicubic", align_corners=True)
    return x.clamp(0, 1)


@dataclass
class Crop:
    """Where the square crop lies in the original image (pixels, may extend past its border).

    Attributes:
        top, left: original-image coordinates of the square's top-left corner.
        side: side of the square in original pixels.
    """

    top: float
    left: float
    side: float

    def intrinsics(self, focal: float = 0.75, principal: float = 0.5) -> np.ndarray:
        """``float64 [3,3]`` the model's normalised source intrinsics in original-image pixels."""
        return np.array([[focal * self.side, 0.0, self.left + principal * self.side],
                         [0.0, focal * self.side, self.top + principal * self.side],
                         [0.0, 0.0, 1.0]])


def crop_object(image: np.ndarray, mask: np.ndarray | None, border_ratio: float = 0.2) -> tuple[np.ndarray, Crop]:
    """Object on white, cropped to its mask, centred in a square with a white border.

    Args:
        image: ``uint8 HxWx3``.
        mask: ``bool HxW`` object mask, or None to use the whole picture (padded to a square).
        border_ratio: fraction of the square left as white border (the object's longer side
            spans ``1 - border_ratio`` of it).

    Returns:
        ``uint8 SxSx3`` square picture and its :class:`Crop` in the original image.

    Raises:
        LRMInputError: when the mask is empty or the image is smaller than 2×2 pixels.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise LRMInputError("expected a uint8 HxWx3 image")
    h, w = image.shape[:2]
    if min(h, w) < 2:
        raise LRMInputError(f"image of {h}x{w} pixels is too small for LRM")
    if mask is None:
        top, bottom, left, right = 0, h, 0, w
        content = image
        pad_ratio = 0.0
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (h, w):
            raise LRMInputError(f"mask shape {list(mask.shape)} does not match the image {h}x{w}")
        rows, cols = np.nonzero(mask)
        if len(rows) == 0:
            raise LRMInputError("the object mask of the input view is empty: there is no object to reconstruct")
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        content = np.where(mask[..., None], image, np.uint8(255))[top:bottom, left:right]
        pad_ratio = border_ratio
    ch, cw = content.shape[:2]
    side = int(np.ceil(max(ch, cw) / (1 - pad_ratio)))
    out = np.full((side, side, 3), 255, dtype=np.uint8)
    oy, ox = (side - ch) // 2, (side - cw) // 2
    out[oy:oy + ch, ox:ox + cw] = content
    return out, Crop(top=float(top - oy), left=float(left - ox), side=float(side))
