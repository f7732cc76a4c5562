"""Benchmark: π³ / Pi3X with RANDOM weights, float32 (``python -m core bench pi3 ...``).

``bench(["--views", "2", "5", "8", "--size", "518", "--variant", "pi3"])`` builds the published
architecture (``--weights random-full``, default) or the fixture's tiny configuration
(``random-tiny``: tests) with seeded random weights (the timings are the real model's, the outputs
meaningless), measures this machine's float32 matmul rate in the same run
(:func:`core.bench.matmul_gflops`), then runs one forward pass per view count on ``size x height``
images and returns one dict per measurement: seconds, peak RSS, analytic FLOPs (:mod:`.flops`),
achieved GFLOP/s and its ratio to the matmul rate.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import time

import psutil
import torch

from core.models.feedforward_bench import forward_row

from .config import VARIANTS, Pi3Config
from .flops import pi3_flops
from .method import random_full_model

log = logging.getLogger(__name__)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m core bench pi3", description=__doc__)
    parser.add_argument("--views", type=int, nargs="+", default=[2, 5, 8])
    parser.add_argument("--size", type=int, default=518, help="image width (multiple of 14)")
    parser.add_argument("--height", type=int, default=None, help="image height (default: = size)")
    parser.add_argument("--variant", choices=VARIANTS, default="pi3")
    parser.add_argument("--weights", choices=("random-full", "random-tiny"), default="random-full")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--matmul-size", type=int, default=2048,
                        help="side of the reference float32 matmul (best of 3)")
    return parser.parse_args(argv)


def bench(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark; see the module docstring. Returns JSON-serialisable dicts."""
    from core.bench import matmul_gflops

    args = _parse(list(argv or []))
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = args.size, args.height or args.size
    if width % 14 or height % 14 or min(width, height) < 14:
        raise ValueError(f"image sides must be positive multiples of 14, got {height}x{width}")
    if min(args.views) < 1:
        raise ValueError("--views must be >= 1")
    config = Pi3Config.tiny(args.variant) if args.weights == "random-tiny" \
        else Pi3Config(variant=args.variant)
    config = dataclasses.replace(config, multimodal=False)   # images only: conditioning unused
    process = psutil.Process()
    base_rss = process.memory_info().rss
    started = time.perf_counter()
    model = random_full_model(config, device=args.device)
    build_s = time.perf_counter() - started
    model_rss = process.memory_info().rss
    params = model.parameter_count
    matmul = matmul_gflops(args.matmul_size, device=args.device)
    log.info("built %s (%d params) in %.1f s; matmul %.1f GFLOP/s", args.variant, params, build_s,
             matmul)
    note = (f"random weights ({args.variant}, {'tiny test configuration' if args.weights == 'random-tiny' else 'published architecture'}): "
            "timings are real, outputs are meaningless")
    results = []
    generator = torch.Generator().manual_seed(0)
    for views in args.views:
        images = torch.rand(1, views, 3, height, width, generator=generator).to(args.device)
        flops = pi3_flops(views, height, width, config)
        for repeat in range(args.repeats):
            row = forward_row(lambda: model(images), flops, matmul, model_rss, args.device,
                              method=args.variant, note=note, weights=args.weights, views=views,
                              height=height, width=width, repeat=repeat,
                              model_rss_bytes=model_rss - base_rss, parameters=params,
                              build_seconds=round(build_s, 2))
            results.append(row)
            log.info("%d view(s): %.2f s, %.1f GFLOP/s", views, row["seconds"], row["gflops_per_s"])
    return results
