"""Helpers shared by the DUSt3R and Fast3R method runners (device choice, inputs, point clouds)."""
from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import torch

from ..registry import Availability, checkpoint_availability, options_from_dict
from .preprocess import ImageTransform, prepare_image, to_uint8

RANDOM_NOTE = "random weights: the geometry and scores are meaningless"


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda`` without a GPU raises ValueError."""
    if name in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available")
    return torch.device(name)


def autocast_context(device: torch.device):
    """bf16 (or fp16) autocast on CUDA; nothing on CPU (fp32 only there)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def as_options(options_type: type, options) -> object:
    """Accept an options dataclass, a dict or None."""
    if options is None:
        return options_type()
    if isinstance(options, dict):
        return options_from_dict(options_type, options)
    if not isinstance(options, options_type):
        raise ValueError(f"options must be {options_type.__name__} or a dict, got {type(options).__name__}")
    return options


def options_dict(options) -> dict:
    return dataclasses.asdict(options)


def prepare_views(scene, view_ids: list[int], size: int) -> tuple[list[torch.Tensor], list[ImageTransform]]:
    """Scene views -> network inputs ``[3,h,w]`` in [-1,1] and their transforms.

    Raises ValueError when the views differ in size (after or before preparation) or an index is bad.
    """
    if not view_ids:
        raise ValueError("no views given")
    bad = [v for v in view_ids if not 0 <= int(v) < scene.num_views]
    if bad:
        raise ValueError(f"view index {bad[0]} out of range for a scene of {scene.num_views} views")
    shapes = sorted({tuple(scene.images[v].shape[:2]) for v in view_ids})
    if len(shapes) > 1:
        raise ValueError(f"all views must have the same size; got {', '.join(f'{w}x{h}' for h, w in shapes)}")
    tensors, transforms = [], []
    for v in view_ids:
        tensor, transform = prepare_image(scene.images[int(v)], size=size)
        tensors.append(tensor)
        transforms.append(transform)
    return tensors, transforms


def object_masks(scene, view_ids: list[int], transforms: list[ImageTransform]) -> np.ndarray:
    """``bool [V,h,w]`` scene object masks at the network resolution; ValueError if the scene has none."""
    if scene.masks is None:
        raise ValueError("use_object_masks is set but the scene has no object masks")
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


def intrinsics_matrix(focal: float, height: int, width: int) -> np.ndarray:
    """``[3,3]`` with focal ``f`` and principal point (W/2, H/2) in network pixels."""
    return np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


@contextlib.contextmanager
def seeded(seed: int = 0):
    """Run a block with torch's global RNG seeded, restoring its state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def load_network(model_cls, config_cls, checkpoint, weights: str, checkpoint_path: str = "",
                 device: str = "cpu"):
    """``model_cls`` in eval mode on ``device``: ``random-tiny`` (seed 0, ``config_cls.tiny()``) or
    ``pretrained`` (``checkpoint`` resolved through :mod:`core.models.weights`, full ``config_cls()``).

    Raises ``MissingWeights`` (checkpoint not here) or ``BadCheckpoint`` (it does not fit).
    """
    from .. import weights as weights_lib

    if weights == "random-tiny":
        with seeded(0):
            model = model_cls(config_cls.tiny())
    elif weights == "pretrained":
        path = weights_lib.resolve(checkpoint, checkpoint_path or None)
        model = model_cls.from_state_dict(weights_lib.load_state_dict(path), config_cls())
    else:
        raise ValueError(f"unknown weights {weights!r}; use pretrained or random-tiny")
    return model.to(device).eval()


def network_availability(checkpoint, opts) -> Availability:
    """Ready for ``random-tiny``; otherwise whether ``checkpoint`` (or ``opts.checkpoint_path``) is here."""
    if opts.weights == "random-tiny":
        return Availability(True)
    return checkpoint_availability(checkpoint, opts.checkpoint_path)


def random_full_size(model_cls, config, seed: int = 0):
    """A full-size network with seeded random weights, built without a second copy in memory.

    Built on the meta device, materialised uninitialised on the CPU, then filled: LayerNorm
    weights 1, biases 0, every other tensor N(0, 0.02). For benchmarks only (no checkpoint here).
    """
    with torch.device("meta"):
        model = model_cls(config)
    buffers = {name: buf for name, buf in model.named_buffers() if buf.device.type != "meta"}
    model = model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif param.ndim == 1:
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=gen)
        for name, buf in buffers.items():  # computed buffers (e.g. Fast3R's image-index table)
            owner, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(owner) if owner else model, leaf, buf.clone())
    return model.eval()


def bench_images(num_views: int, height: int = 384, width: int = 512, seed: int = 0) -> list[np.ndarray]:
    """Smooth random ``uint8 [H,W,3]`` pictures for benchmarks."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num_views):
        low = rng.integers(0, 255, (height // 16, width // 16, 3)).astype(np.uint8)
        out.append(np.kron(low, np.ones((16, 16, 1), dtype=np.uint8)))
    return out


def bench_parser(method: str, description: str):
    """The arguments both benchmarks share: ``--views``, ``--size``, ``--device``."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m core bench {method}", description=description)
    parser.add_argument("--views", type=int, nargs="+", default=[2, 5], help="view counts to run")
    parser.add_argument("--size", type=int, default=512, help="network input long side (published 512)")
    parser.add_argument("--device", default="auto")
    return parser


def bench_network(method: str, model_cls, config, reconstruct, make_options, extra_fields, args) -> list[dict]:
    """Run ``reconstruct`` with a random full-size ``model_cls(config)`` on each of ``args.views``
    synthetic views at ``args.size`` (4:3), one JSON-ready row per view count.

    ``make_options(device)`` builds the method's options; ``extra_fields(n, recon)`` adds the
    method's own columns. Rows hold total and network seconds, the process's peak RSS so far
    (``ru_maxrss``: model + everything run before) and the run's own peak increase.
    """
    import logging
    import resource
    import time

    from ...progress import silent
    from ...scene import Scene

    device = pick_device(args.device)
    started = time.perf_counter()
    model = random_full_size(model_cls, config).to(device)
    build_seconds = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())
    images = bench_images(max(args.views), height=args.size * 3 // 4, width=args.size)
    results = []
    for n in args.views:
        scene = Scene(name="bench", images=images[:n], image_names=[f"{i}.png" for i in range(n)],
                      intrinsics=np.tile(np.eye(3), (n, 1, 1)), cam_from_world=np.tile(np.eye(4), (n, 1, 1)))
        rec = reconstruct(model, scene, list(range(n)), make_options(str(device)), silent(), device, args.size)
        row = {
            "method": method, "weights": "random full-size (no checkpoint; geometry meaningless)",
            "views": n, "image_size": rec.extra["model_input_size"], "device": str(device),
            "threads": torch.get_num_threads(), "parameters": params, "build_seconds": round(build_seconds, 2),
            "seconds": round(rec.seconds, 2), "network_seconds": round(rec.extra["network_seconds"], 2),
            **extra_fields(n, rec),
            "process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "run_peak_memory_bytes": rec.peak_memory_bytes,
        }
        results.append(row)
        logging.getLogger(__name__).info("%s bench %s", method, row)
    return results
