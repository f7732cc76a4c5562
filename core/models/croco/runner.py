"""Method code shared by DUSt3R and Fast3R: their network per weights choice, inputs, point clouds.

:class:`CroCoNetworkMethod` is what the two methods share under the method contract
(:mod:`core.models.registry`): the ``weights`` choice (published checkpoint, the fixture's tiny
configuration or the full architecture with random weights), the checkpoint it needs, the model
cache key and the network input size. Options, views, device, caching, timing and the
random-weights note are the runner's (:func:`core.runner.execute`).
"""
from __future__ import annotations

import contextlib
from typing import ClassVar, Literal

import numpy as np
import torch

from core.errors import UserError
from core.options import RANDOM_WEIGHTS

from ..registry import Method
from ..weights import Checkpoint
from .preprocess import ImageTransform, prepare_image, to_uint8

Weights = Literal["pretrained", "random-tiny", "random-full"]
ImageSize = Literal[224, 512]

TINY_SIZE = 64
"""Network input long side of ``random-tiny`` (the conformance fixtures' size)."""


class CroCoNetworkMethod(Method):
    """A method whose model is one CroCo-based network (``network_cls(config_cls(...))``).

    Subclasses set ``network_cls``, ``config_cls`` (with a ``tiny()`` classmethod: the fixture's
    configuration) and ``checkpoint`` (the published weights), declare options with ``weights``
    (:data:`Weights`), ``checkpoint_path`` and ``image_size`` (:data:`ImageSize`), and implement
    ``predict``.
    """

    network_cls: ClassVar[type]
    config_cls: ClassVar[type]
    checkpoint: ClassVar[Checkpoint]

    def checkpoints(self, options) -> tuple:
        return () if options.weights in RANDOM_WEIGHTS else (self.checkpoint,)

    def model_key(self, options) -> tuple:
        """The weights choice, and the explicit file for ``pretrained`` (the input size does not
        change the network)."""
        if options.weights in RANDOM_WEIGHTS:
            return (("weights", options.weights),)
        return tuple(item for item in super().model_key(options) if item[0] in ("weights", "checkpoint_path"))

    def load(self, options, device: str) -> torch.nn.Module:
        return load_network(self.network_cls, self.config_cls, self.checkpoint, options.weights,
                            options.checkpoint_path, device)

    def input_size(self, options) -> int:
        """Network input long side in pixels: ``image_size``, or :data:`TINY_SIZE` for random-tiny."""
        return TINY_SIZE if options.weights == "random-tiny" else int(options.image_size)

    def network_config(self, options):
        """The configuration the options load (``config_cls.tiny()`` for random-tiny)."""
        return self.config_cls.tiny() if options.weights == "random-tiny" else self.config_cls()

    def network_hw(self, options, height: int, width: int) -> tuple[int, int]:
        """Network input ``(h, w)`` pixels for pictures of ``height x width`` (:func:`prepare_image`'s
        resize and crop)."""
        tensor, _ = prepare_image(np.zeros((int(height), int(width), 3), np.uint8), size=self.input_size(options))
        return int(tensor.shape[1]), int(tensor.shape[2])


def load_network(model_cls, config_cls, checkpoint: Checkpoint, weights: str, checkpoint_path: str = "",
                 device: str = "cpu") -> torch.nn.Module:
    """``model_cls`` in eval mode on ``device`` for a :data:`Weights` choice.

    ``random-tiny``: ``config_cls.tiny()`` with torch's default initialisation under seed 0;
    ``random-full``: ``config_cls()`` filled by :func:`random_full_size`; ``pretrained``:
    ``checkpoint`` (or ``checkpoint_path``) resolved through :mod:`core.models.weights` into the
    full ``config_cls()``.

    Raises ``MissingWeights`` (checkpoint not here) or ``BadCheckpoint`` (it does not fit).
    """
    from .. import weights as weights_lib

    if weights == "random-tiny":
        with seeded(0):
            model = model_cls(config_cls.tiny())
        return model.to(device).eval()
    if weights == "random-full":
        return random_full_size(model_cls, config_cls(), device=device)
    if weights != "pretrained":
        raise ValueError(f"unknown weights {weights!r} (choices: pretrained, random-tiny, random-full)")
    path = weights_lib.resolve(checkpoint, checkpoint_path or None)
    model = model_cls.from_state_dict(weights_lib.load_state_dict(path), config_cls())
    return model.to(device).eval()


def random_full_size(model_cls, config, seed: int = 0, device: str = "cpu") -> torch.nn.Module:
    """``model_cls(config)`` with seeded random weights, built without a second copy in memory.

    Built on the meta device, materialised uninitialised on ``device``, then filled: 1-D weights
    (norms) 1, biases 0, every other tensor N(0, 0.02) from one generator seeded with ``seed`` on
    ``device`` (so CPU and CUDA draws differ). Buffers the constructor computes (Fast3R's
    image-index table) are kept as computed. The outputs are meaningless; time and memory are the
    real network's.
    """
    with torch.device("meta"):
        model = model_cls(config)
    buffers = {name: buf for name, buf in model.named_buffers() if buf.device.type != "meta"}
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif param.ndim == 1:
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=gen)
        for name, buf in buffers.items():
            owner, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(owner) if owner else model, leaf, buf.to(device))
    return model.eval()


@contextlib.contextmanager
def seeded(seed: int = 0):
    """Run a block with torch's global CPU RNG seeded, restoring its state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def autocast_context(device: str):
    """bf16 (fp16 where bf16 is unsupported) autocast on ``cuda``; nothing on ``cpu`` (fp32 there)."""
    if device != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def prepare_views(scene, view_ids: list[int], size: int) -> tuple[list[torch.Tensor], list[ImageTransform]]:
    """Scene views -> network inputs ``float32 [3,h,w]`` in [-1,1] and their transforms.

    ``view_ids`` are already checked (the runner's job); raises :class:`UserError` when the views
    differ in size (the networks' pairs and batches need one size).
    """
    shapes = sorted({tuple(scene.images[v].shape[:2]) for v in view_ids})
    if len(shapes) > 1:
        raise UserError(f"all views must have the same size; got {', '.join(f'{w}x{h}' for h, w in shapes)}")
    tensors, transforms = [], []
    for v in view_ids:
        tensor, transform = prepare_image(scene.images[int(v)], size=size)
        tensors.append(tensor)
        transforms.append(transform)
    return tensors, transforms


def object_masks(scene, view_ids: list[int], transforms: list[ImageTransform]) -> np.ndarray:
    """``bool [V,h,w]`` scene object masks at the network resolution.

    Raises :class:`UserError` when the scene has no object masks.
    """
    if scene.masks is None:
        raise UserError("use_object_masks is set but the scene has no object masks")
    return np.stack([t.mask_to_model(scene.masks[int(v)]) for v, t in zip(view_ids, transforms)])


def point_cloud(point_maps: np.ndarray, confidence: np.ndarray, images: list[torch.Tensor],
                percentile: float = 0.0, masks: np.ndarray | None = None) -> dict:
    """Flatten per-view point maps into a cloud.

    Args:
        point_maps: ``float [V,h,w,3]`` world points.
        confidence: ``float [V,h,w]``.
        images: V network inputs ``[3,h,w]`` (for colours).
        percentile: drop points whose confidence is below this percentile over all views (0 keeps all).
        masks: optional ``bool [V,h,w]`` pixels to keep (object masks).

    Returns:
        dict ``points [N,3]``, ``colors [N,3] uint8``, ``confidence [N]``, ``source_view [N]``
        (index into the input views), ``kept [V,h,w] bool``.
    """
    keep = np.isfinite(point_maps).all(-1) & np.isfinite(confidence)
    if masks is not None:
        keep &= masks
    if percentile > 0 and keep.any():
        threshold = np.percentile(confidence[keep], percentile)
        keep &= confidence >= threshold
    colors = np.stack([to_uint8(img) for img in images])
    views = np.broadcast_to(np.arange(len(point_maps))[:, None, None], keep.shape)
    return {"points": point_maps[keep].astype(np.float32), "colors": colors[keep],
            "confidence": confidence[keep].astype(np.float32), "source_view": views[keep].astype(np.int32),
            "kept": keep}
