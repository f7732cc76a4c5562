"""Fast3R benchmark: time and memory of a full-size network with RANDOM weights on N views.

``bench(["--views", "2", "5"])`` -> one dict per view count: total seconds, network seconds,
peak RSS of the process so far (``ru_maxrss``) and the run's own peak increase. No checkpoint is
needed (none can be downloaded here); the numbers measure the computation, the geometry is
meaningless. Camera estimation (PnP) is included when ``core.models.fast3r.poses`` exists.
"""
from __future__ import annotations

import argparse
import logging
import resource
import time

import numpy as np
import torch

from ...progress import silent
from ...scene import Scene
from ..croco.runner import bench_images, pick_device, random_full_size
from .config import Fast3RConfig
from .method import Fast3ROptions, reconstruct
from .modeling_fast3r import Fast3R

log = logging.getLogger(__name__)


def bench(argv: list[str]) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m core bench fast3r", description=__doc__)
    parser.add_argument("--views", type=int, nargs="+", default=[2, 5], help="view counts to run")
    parser.add_argument("--size", type=int, default=512, help="network input long side (published 512)")
    parser.add_argument("--no-cameras", action="store_true", help="skip camera estimation")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    started = time.perf_counter()
    model = random_full_size(Fast3R, Fast3RConfig()).to(device)
    build_seconds = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())
    images = bench_images(max(args.views), height=args.size * 3 // 4, width=args.size)
    results = []
    for n in args.views:
        scene = Scene(name="bench", images=images[:n], image_names=[f"{i}.png" for i in range(n)],
                      intrinsics=np.tile(np.eye(3), (n, 1, 1)), cam_from_world=np.tile(np.eye(4), (n, 1, 1)))
        opts = Fast3ROptions(estimate_cameras=not args.no_cameras, device=str(device))
        rec = reconstruct(model, scene, list(range(n)), opts, silent(), device, args.size)
        row = {
            "method": "fast3r", "weights": "random full-size (no checkpoint; geometry meaningless)",
            "views": n, "image_size": rec.extra["model_input_size"], "device": str(device),
            "threads": torch.get_num_threads(), "parameters": params, "build_seconds": round(build_seconds, 2),
            "seconds": round(rec.seconds, 2), "network_seconds": round(rec.extra["network_seconds"], 2),
            "process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "run_peak_memory_bytes": rec.peak_memory_bytes,
            "notes": [n_ for n_ in rec.notes],
        }
        results.append(row)
        log.info("fast3r bench %s", row)
    return results
