"""Depth Anything 3 (Lin et al., 2025), any-view Small and Base: our implementation.

Covers the Apache-2.0 checkpoints ``depth-anything/DA3-SMALL`` and ``depth-anything/DA3-BASE``
(``model.safetensors`` + ``config.json``, loaded strictly by :mod:`.checkpoints`): the DINOv2
backbone with all-view layers and reference-view selection (:mod:`.backbone`), the DualDPT head
(depth + rays, :mod:`.head`), the camera decoder and encoder (:mod:`.camera`), cameras from rays
with the authors' RANSAC and replayable draws (:mod:`.raypose`), the API's OpenCV preprocessing
and known-pose alignment (:mod:`.processing`). Registered as ``da3-small`` and ``da3-base``
(:mod:`.method`).

Not covered: the metric (DA3METRIC-LARGE), monocular (DA3MONO-LARGE), Large, Giant and nested
(DA3NESTED-GIANT-LARGE) checkpoints (CC BY-NC 4.0 or different networks), the Gaussian-splatting
head, the ≥ 10-view RANSAC alignment variant, and the ``saddle_sim_range`` reference-view
strategy.
"""
from .config import DA3Config
from .modeling_da3 import DA3Output, DepthAnything3

__all__ = ["DA3Config", "DA3Output", "DepthAnything3"]
