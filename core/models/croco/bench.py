"""The benchmark loop DUSt3R and Fast3R share: one run through the runner per view count.

``python -m core bench dust3r|fast3r`` takes the method's own options (one flag each, as
``python -m core run``) with ``weights`` defaulting to ``random-full``: the published
architecture with random weights, so no checkpoint is needed and the time and memory are the
real network's while the geometry is meaningless.
"""
from __future__ import annotations

import argparse
import logging
import resource

import numpy as np
import torch

from core import options as opts
from core import runner
from core.data.scene import Scene
from core.models.registry import CannotRun

from .runner import CroCoNetworkMethod

log = logging.getLogger(__name__)


def bench_images(num_views: int, height: int = 384, width: int = 512, seed: int = 0) -> list[np.ndarray]:
    """Smooth random ``uint8 [H,W,3]`` pictures (16-pixel blocks) for benchmarks."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num_views):
        low = rng.integers(0, 255, (-(-height // 16), -(-width // 16), 3)).astype(np.uint8)
        out.append(np.kron(low, np.ones((16, 16, 1), dtype=np.uint8))[:height, :width])
    return out


def bench_parser(method: CroCoNetworkMethod, description: str) -> argparse.ArgumentParser:
    """``--views`` and one flag per option of ``method`` (see :func:`bench_options`)."""
    parser = argparse.ArgumentParser(prog=f"python -m core bench {method.name}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, nargs="+", default=[2, 5], help="view counts to run")
    opts.add_arguments(parser, method.options_type, f"{method.label} options (weights default: random-full)")
    return parser


def bench_options(method: CroCoNetworkMethod, args: argparse.Namespace):
    """The method's validated options from the flags, ``weights=random-full`` unless given."""
    return opts.from_namespace(method.options_type, args, ["weights=random-full"])


def bench_network(method: CroCoNetworkMethod, options, extra_fields, views: list[int]) -> list[dict]:
    """Run ``method`` through :func:`core.runner.execute` on each of ``views`` synthetic 4:3 views
    at the network's input size; one JSON-ready row per view count.

    ``extra_fields(n, recon)`` adds the method's own columns. Rows hold the model load seconds
    (``build_seconds``), total and network seconds, the process's peak RSS so far (``ru_maxrss``:
    model + everything run before) and the run's own peak increase (RSS on CPU, allocator peak on
    CUDA). Raises :class:`CannotRun` when the weights are not here.
    """
    available = method.availability(options)
    if not available.ok:
        raise CannotRun(f"{method.label} cannot run: {available.message()}")
    device = runner.resolve_device(options.device)
    model, build_seconds = runner.load_model(method, options, device)
    size = method.input_size(options)
    images = bench_images(max(views), height=size * 3 // 4, width=size)
    results = []
    for n in views:
        scene = Scene(name="bench", images=images[:n], image_names=[f"{i}.png" for i in range(n)],
                      intrinsics=np.tile(np.eye(3), (n, 1, 1)), cam_from_world=np.tile(np.eye(4), (n, 1, 1)))
        rec = runner.execute(method, scene, list(range(n)), options)
        row = {
            "method": method.name, "weights": rec.weights_kind,
            "note": "random weights: the timings and memory are real, the geometry is meaningless"
            if runner.is_random(rec) else "",
            "views": n, "image_size": rec.extra["model_input_size"], "device": device,
            "threads": torch.get_num_threads(), "parameters": method.parameter_count(model),
            "build_seconds": round(build_seconds, 2),
            "seconds": round(rec.seconds, 2), "network_seconds": round(rec.extra["network_seconds"], 2),
            **extra_fields(n, rec),
            "process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "run_peak_memory_bytes": rec.peak_memory_bytes,
        }
        results.append(row)
        log.info("%s bench %s", method.name, row)
    return results
