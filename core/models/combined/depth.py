"""Stage 3, monocular depth: Depth Anything V1/V2 (Hugging Face transformers).

The network predicts *relative inverse depth* (disparity up to an unknown scale and shift);
:mod:`.depth_fit` turns it into depth against a reference.
"""
from __future__ import annotations


import numpy as np
import torch

from core.models.combined.checkpoints import DEPTH_MODELS, ModelWithProcessor


class DepthEstimator(ModelWithProcessor):
    """A Depth Anything model with its DPT image processor."""

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Relative inverse depth ``float32 [H,W]`` (>= 0, larger = nearer) at the image's size.

        The network output (a multiple of 14 pixels, aspect kept) is resized bilinearly.
        """
        h, w = image.shape[:2]
        inputs = self.processor(images=image, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            predicted = self.model(**inputs).predicted_depth  # [1, h', w']
            resized = torch.nn.functional.interpolate(predicted[:, None].float(), size=(h, w), mode="bilinear",
                                                      align_corners=False)[0, 0]
        return resized.clamp_min(0).cpu().numpy().astype(np.float32)


def load_depth_estimator(key: str, device: str = "cpu") -> DepthEstimator:
    """The pretrained Depth Anything ``key`` (local cache only; raises MissingWeights)."""
    from transformers import AutoImageProcessor, DepthAnythingForDepthEstimation

    return DepthEstimator.from_local(DEPTH_MODELS[key], DepthAnythingForDepthEstimation, AutoImageProcessor, device)


def tiny_depth_estimator(seed: int = 0, device: str = "cpu") -> DepthEstimator:
    from transformers import DepthAnythingForDepthEstimation

    from core.models.combined import tiny

    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(tiny.tiny_depth_anything_config()).eval()
    tiny.calibrate_tiny_depth_head(model, seed)
    return DepthEstimator(model, tiny.tiny_depth_processor(), device, "depth-anything (random tiny)")
