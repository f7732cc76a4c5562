"""Pre- and post-processing around DA3 as the authors' API does it (``InputProcessor`` and the
known-pose alignment).

Images (``upper_bound_resize``, OpenCV): the longest side goes to ``process_res`` (published
default 504), the other to ``max(1, int(round(side · s)))`` (Python round: half to even), with
``cv2.INTER_AREA`` when shrinking and ``INTER_CUBIC`` when enlarging; then each side to the
nearest multiple of 14 (ties up) by a second ``cv2.resize`` (``INTER_CUBIC`` if any side grows,
else ``INTER_AREA``); then ``/255`` and ImageNet normalisation. PIL's resizes differ by up to
119 grey levels on noise, so OpenCV it is. Views whose result differs from the first view's
size are resized to it (ours: the reference batches only equal sizes).

Known intrinsics follow each resize by scaling row 0 of K by w'/w and row 1 by h'/h (the API's
rule). The model's own intrinsics are mapped back to the scene's pixels with ReconBench's
pixel-centre convention (:func:`core.geometry.resize_crop_intrinsics`, a pure resize).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from core import geometry
from core.errors import UserError

from core.models.inputs import check_rgb_image

from .modeling_da3 import IMAGENET_MEAN, IMAGENET_STD

PATCH = 14
DEFAULT_PROCESS_RES = 504


class DA3ImageError(UserError):
    """A picture DA3 cannot take (no views, not RGB, smaller than one 14-pixel patch)."""


@dataclass(frozen=True)
class ImageTransform:
    """How one original image became the network input: a resize from ``original_hw`` to
    ``network_hw`` (two OpenCV resizes, both edge-aligned)."""

    original_hw: tuple[int, int]
    network_hw: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """(sx, sy) = network / original size."""
        return (self.network_hw[1] / self.original_hw[1], self.network_hw[0] / self.original_hw[0])

    def intrinsics_to_original(self, k_network: np.ndarray) -> np.ndarray:
        """``[..., 3, 3]`` network-pixel intrinsics -> the original image's (float64, integer
        pixel centres)."""
        return geometry.resize_crop_intrinsics(k_network, self.scale, inverse=True)

    def warp_mask(self, mask: np.ndarray) -> np.ndarray:
        """``bool [H, W]`` -> ``bool [H', W']`` (nearest)."""
        h, w = self.network_hw
        return cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0


def check_image(image: np.ndarray, index: int) -> np.ndarray:
    """``uint8 [H, W, 3]`` or :class:`DA3ImageError` naming the problem."""
    return check_rgb_image(image, index, "Depth Anything 3", PATCH, DA3ImageError)


def nearest_multiple(side: int, multiple: int = PATCH) -> int:
    """The multiple of ``multiple`` nearest to ``side`` (ties up), at least ``multiple``."""
    return max(multiple, int(np.floor(side / multiple + 0.5)) * multiple)


def resize_upper_bound(image: np.ndarray, process_res: int) -> np.ndarray:
    """The API's two OpenCV resizes (module docstring): ``uint8 [H, W, 3]`` -> ``[H', W', 3]``."""
    h, w = image.shape[:2]
    s = process_res / max(h, w)
    new_w, new_h = max(1, int(round(w * s))), max(1, int(round(h * s)))
    if (new_h, new_w) != (h, w):
        image = cv2.resize(image, (new_w, new_h),
                           interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    final_h, final_w = nearest_multiple(new_h), nearest_multiple(new_w)
    if (final_h, final_w) != (new_h, new_w):
        grows = final_h > new_h or final_w > new_w
        image = cv2.resize(image, (final_w, final_h),
                           interpolation=cv2.INTER_CUBIC if grows else cv2.INTER_AREA)
    return image


def normalize(images: np.ndarray) -> torch.Tensor:
    """``uint8 [S, H, W, 3]`` -> ``float32 [S, 3, H, W]``: /255, then ImageNet mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def denormalize(x: torch.Tensor) -> np.ndarray:
    """The API's ``processed_images``: ``[S, 3, H, W]`` -> ``uint8 [S, H, W, 3]``,
    ``uint8(clip(x·std + mean, 0, 1)·255)`` in float64 (truncation; float32 arithmetic moves
    about a fifth of the values by one level)."""
    rgb = x.detach().float().cpu().permute(0, 2, 3, 1).numpy().astype(np.float64)
    rgb = np.clip(rgb * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN), 0, 1) * 255
    return rgb.astype(np.uint8)


def preprocess_images(images: list[np.ndarray], process_res: int = DEFAULT_PROCESS_RES
                      ) -> tuple[torch.Tensor, list[ImageTransform]]:
    """RGB pictures -> the network input.

    Args:
        images: ``uint8 [H, W, 3]`` each.
        process_res: the longest side before rounding to multiples of 14.

    Returns:
        ``(float32 [S, 3, H', W'] normalised, transforms)``.

    Raises:
        DA3ImageError: no images, grayscale / RGBA / non-uint8, under one patch.
    """
    if images is None or len(images) == 0:
        raise DA3ImageError("Depth Anything 3 needs at least one image; got 0 views")
    checked = [check_image(image, i) for i, image in enumerate(images)]
    resized = [resize_upper_bound(image, process_res) for image in checked]
    h, w = resized[0].shape[:2]
    out = []
    for image in resized:
        if image.shape[:2] != (h, w):
            grows = image.shape[0] < h or image.shape[1] < w
            image = cv2.resize(image, (w, h),
                               interpolation=cv2.INTER_CUBIC if grows else cv2.INTER_AREA)
        out.append(image)
    transforms = [ImageTransform(tuple(image.shape[:2]), (h, w)) for image in checked]
    return normalize(np.stack(out)), transforms


def scale_intrinsics(intrinsics: np.ndarray, original_hw: tuple[int, int],
                     network_hw: tuple[int, int], process_res: int) -> np.ndarray:
    """Known intrinsics ``[3, 3]`` of an original picture -> of the network input, the API's
    way: each of the two resizes scales row 0 by w'/w and row 1 by h'/h (float64)."""
    k = np.asarray(intrinsics, dtype=np.float64).copy()
    h, w = original_hw
    s = process_res / max(h, w)
    mid = (max(1, int(round(h * s))), max(1, int(round(w * s))))
    for (h0, w0), (h1, w1) in (((h, w), mid), (mid, network_hw)):
        k[0] *= w1 / w0
        k[1] *= h1 / h0
    return k


def normalize_extrinsics(extrinsics: torch.Tensor) -> torch.Tensor:
    """What the camera encoder receives: ``[B, S, 4, 4]`` world-to-camera -> ``E_i E_0⁻¹``
    (the first view becomes the identity), translations divided by
    ``max(median_i |centre_i|, 0.1)`` (centres of these poses; ``torch.median``: the lower
    middle value for an even count)."""
    from .camera import invert_rigid

    relative = extrinsics @ invert_rigid(extrinsics[:, :1])
    centres = invert_rigid(relative)[..., :3, 3]
    scale = torch.clamp(centres.norm(dim=-1).median(dim=-1).values, min=0.1)
    out = relative.clone()
    out[..., :3, 3] = relative[..., :3, 3] / scale[:, None, None]
    return out


@dataclass
class PoseAlignment:
    """The Sim(3) taking the known camera centres onto the predicted ones (float64).

    Attributes:
        rotation / translation / scale: ``c_pred ≈ scale · rotation · c_known + translation``.
        aligned_extrinsics: ``[S, 4, 4]`` the known poses mapped by it (world-to-camera).
    """

    rotation: np.ndarray
    translation: np.ndarray
    scale: float
    aligned_extrinsics: np.ndarray


def align_to_known_poses(known_extrinsics: np.ndarray, predicted_extrinsics: np.ndarray
                         ) -> PoseAlignment:
    """The API's ``align_to_input_ext_scale`` alignment (evo's ``PosePath3D.align`` with
    scale): Umeyama on camera centres, known -> predicted. Dividing the predicted depth by
    ``scale`` puts it in the known poses' units.

    Args:
        known_extrinsics: ``[S, 3 or 4, 4]`` world-to-camera, the user's frame and units.
        predicted_extrinsics: ``[S, 3 or 4, 4]`` the network's.
    """
    known = geometry.as_4x4(np.asarray(known_extrinsics, dtype=np.float64))
    predicted = geometry.as_4x4(np.asarray(predicted_extrinsics, dtype=np.float64))
    known_c2w = np.linalg.inv(known)
    predicted_c2w = np.linalg.inv(predicted)
    scale, rotation, translation = geometry.umeyama_parts(known_c2w[:, :3, 3],
                                                          predicted_c2w[:, :3, 3])
    aligned = known_c2w.copy()
    aligned[:, :3, :3] = rotation @ known_c2w[:, :3, :3]
    aligned[:, :3, 3] = scale * known_c2w[:, :3, 3] @ rotation.T + translation
    return PoseAlignment(rotation, translation, scale, np.linalg.inv(aligned))
