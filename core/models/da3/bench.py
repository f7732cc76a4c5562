"""Benchmark: DA3-SMALL / DA3-BASE with RANDOM weights, float32.

``python -m core bench da3 --views 2 5 8 --size 518 [--variant small|base]
[--weights random-full|random-tiny]`` builds the architecture with seeded random weights (no
checkpoint needed: the timings are the real model's, the outputs meaningless), measures this
machine's float32 matmul rate (:func:`core.bench.matmul_gflops`) in the same run, then runs one
forward pass per view count on ``size x size`` images (``--height`` for other shapes) and returns
one dict per measurement: seconds, peak RSS, analytic FLOPs (:mod:`.flops`), achieved GFLOP/s
and its ratio to the matmul rate.
"""
from __future__ import annotations

import argparse
import logging
import time

import psutil
import torch

from core.models.feedforward_bench import forward_row

from .config import DA3Config
from .flops import da3_flops
from .method import random_full_model, random_tiny_model

log = logging.getLogger(__name__)

NOTE = "random weights: timings are real, outputs are meaningless"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m core bench da3", description=__doc__)
    parser.add_argument("--views", type=int, nargs="+", default=[2, 5, 8])
    parser.add_argument("--size", type=int, default=518, help="image width (multiple of 14)")
    parser.add_argument("--height", type=int, default=None, help="image height (default: size)")
    parser.add_argument("--variant", choices=("small", "base"), default="small")
    parser.add_argument("--weights", choices=("random-full", "random-tiny"), default="random-full")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--matmul-size", type=int, default=2048,
                        help="side of the matrices timing the fp32 matmul rate")
    return parser.parse_args(argv)


def bench(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark (module docstring). Returns JSON-serialisable dicts."""
    from core.bench import matmul_gflops

    args = _parse(list(argv or []))
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = args.size, args.height or args.size
    if width % 14 or height % 14:
        raise ValueError(f"image sides must be multiples of 14, got {height}x{width}")
    process = psutil.Process()
    base_rss = process.memory_info().rss
    started = time.perf_counter()
    if args.weights == "random-tiny":
        model = random_tiny_model().to(args.device)
    else:
        config = DA3Config.small() if args.variant == "small" else DA3Config.base()
        model = random_full_model(config, device=args.device)
    build_s = time.perf_counter() - started
    model_rss = process.memory_info().rss
    params = sum(p.numel() for p in model.parameters())
    matmul_rate = matmul_gflops(args.matmul_size, device=args.device)
    generator = torch.Generator().manual_seed(0)
    results = []
    for views in args.views:
        images = torch.randn(1, views, 3, height, width, generator=generator).to(args.device)
        flops = da3_flops(views, height, width, model.config)
        for repeat in range(args.repeats):
            row = forward_row(lambda: model(images, export_feat_layers=()), flops, matmul_rate,
                              model_rss, args.device, method=f"da3-{args.variant}",
                              weights=args.weights, note=NOTE, views=views, height=height,
                              width=width, repeat=repeat, model_rss_bytes=model_rss - base_rss,
                              parameters=params, build_seconds=round(build_s, 2))
            results.append(row)
            log.info("%d view(s): %.2f s, %.1f GFLOP/s", views, row["seconds"], row["gflops_per_s"])
    return results
