"""Benchmark: VGGT's full architecture (1.26 B parameters) with RANDOM weights, float32.

``bench(["--views", "1", "2", "4", "8", "--size", "518"])`` builds VGGT-1B's architecture with
seeded random weights (no checkpoint needed; the timings are those of the real model, the
outputs are meaningless), runs one forward pass per view count on the chosen device and
returns one dict per measurement: views, image size, seconds, peak RSS (process, and increase
over the loaded model), analytic FLOPs (:mod:`.flops`), achieved GFLOP/s and its ratio to this
machine's float32 matmul rate measured in the same run (:func:`core.bench.matmul_gflops`).
"""
from __future__ import annotations

import argparse
import logging
import time

import psutil
import torch

from core.models.feedforward_bench import forward_row

from .config import VGGTConfig
from .flops import vggt_flops
from .method import random_full_model
from .modeling_vggt import HEADS

log = logging.getLogger(__name__)

NOTE = "random weights (VGGT-1B architecture): timings are real, outputs are meaningless"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m core bench vggt", description=__doc__)
    parser.add_argument("--views", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--size", type=int, default=518, help="image width (multiple of 14)")
    parser.add_argument("--height", type=int, default=None,
                        help="image height (default: = size, square)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--frames-chunk-size", type=int, default=2)
    parser.add_argument("--heads", nargs="+", default=list(HEADS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--matmul-size", type=int, default=2048,
                        help="side of the reference float32 matmul (best of 3)")
    parser.add_argument("--tiny", action="store_true",
                        help="the fixture's tiny configuration instead of VGGT-1B (tests)")
    return parser.parse_args(argv)


def bench(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark; see the module docstring. Returns JSON-serialisable dicts."""
    args = _parse(list(argv or []))
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = args.size, args.height or args.size
    for side in (width, height):
        if side % 14:
            raise ValueError(f"image sides must be multiples of 14, got {height}x{width}")
    process = psutil.Process()
    base_rss = process.memory_info().rss
    started = time.perf_counter()
    config = VGGTConfig.tiny() if args.tiny else VGGTConfig()
    model = random_full_model(config, device=args.device)
    build_s = time.perf_counter() - started
    model_rss = process.memory_info().rss
    params = sum(p.numel() for p in model.parameters())
    log.info("built VGGT-1B (%d params) with random weights in %.1f s", params, build_s)
    from core.bench import matmul_gflops

    matmul = matmul_gflops(args.matmul_size, device=args.device)
    results = []
    generator = torch.Generator().manual_seed(0)
    note = NOTE if not args.tiny else NOTE.replace("VGGT-1B architecture", "tiny test configuration")
    for views in args.views:
        images = torch.rand(views, 3, height, width, generator=generator).to(args.device)
        flops = vggt_flops(views, height, width, model.config, args.heads)
        for repeat in range(args.repeats):
            row = forward_row(
                lambda: model(images, heads=args.heads, frames_chunk_size=args.frames_chunk_size),
                flops, matmul, model_rss, args.device, method="vggt", note=note, views=views,
                height=height, width=width, repeat=repeat, heads=list(args.heads),
                model_rss_bytes=model_rss - base_rss, parameters=params,
                build_seconds=round(build_s, 2))
            results.append(row)
            log.info("%d view(s): %.2f s", views, row["seconds"])
    return results
