"""Benchmark: VGGT's full architecture (1.26 B parameters) with RANDOM weights, float32.

``--against-authors PATH`` instead times the authors' implementation (a checkout of
facebookresearch/vggt at PATH, fetched for the comparison and never committed) against ours in
one process, same weights and inputs, alternating, and reports the time ratio and the largest
output differences (:func:`against_authors`).

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

import numpy as np
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
    parser.add_argument("--against-authors", metavar="PATH", default="",
                        help="a checkout of facebookresearch/vggt (fetched for the comparison, never "
                             "committed): time its VGGT against ours with the same weights and "
                             "inputs, alternating, and compare the outputs")
    return parser.parse_args(argv)


OUTPUT_FIELDS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")
"""The outputs both implementations return for the camera, depth and point heads."""


def authors_model(path: str, ours: torch.nn.Module, tiny: bool = False) -> torch.nn.Module:
    """The authors' ``vggt.models.vggt.VGGT`` imported from the checkout at ``path``, holding
    ``ours``'s weights (the published checkpoint's names on both sides). Built with its own
    initialisation (its constructor also computes buffers the checkpoint does not hold), then
    its parameters are replaced by ours (``assign``: the tensors are shared, the freshly
    initialised ones freed).

    ``tiny``: the checkout's constructor is given ``tiny=True`` (a stand-in package in tests).
    Raises ``ValueError`` when the state dicts' names or shapes differ.
    """
    import sys

    sys.path.insert(0, str(path))
    try:
        from vggt.models.vggt import VGGT as AuthorsVGGT
    finally:
        sys.path.remove(str(path))
    state = ours.state_dict()
    # The released constructor builds the track head by default; ours is built without it here.
    kwargs = {} if any(name.startswith("track_head.") for name in state) else {"enable_track": False}
    with torch.no_grad():
        try:
            theirs = AuthorsVGGT(tiny=True, **kwargs) if tiny else AuthorsVGGT(**kwargs)
        except TypeError:  # a checkout whose constructor has no enable_track
            theirs = AuthorsVGGT(tiny=True) if tiny else AuthorsVGGT()
    missing = sorted(set(theirs.state_dict()) - set(state))
    extra = sorted(set(state) - set(theirs.state_dict()))
    if missing or extra:
        raise ValueError(f"the authors' VGGT does not match ours: missing {missing[:5]}, unexpected {extra[:5]}")
    theirs.load_state_dict(state, strict=True, assign=True)
    return theirs.eval()


def against_authors(model: torch.nn.Module, theirs: torch.nn.Module, images: torch.Tensor,
                    repeats: int) -> dict:
    """Alternate forward passes of ``model`` (ours, camera/depth/point heads) and ``theirs`` on
    ``images [S,3,H,W]``, ``repeats`` rounds (the order swaps every round); the best seconds of
    each, their ratio (ours / authors'), each round's ratio and their median (the paired
    statistic, steadier where the machine's speed drifts between rounds) and the largest
    absolute difference of every output."""
    from core.models.feedforward_bench import time_forward

    ours_s, theirs_s = [], []
    outputs = {}

    def run_ours():
        outputs["ours"] = model(images, heads=HEADS)
        return outputs["ours"]

    def run_theirs():
        outputs["theirs"] = theirs(images)
        return outputs["theirs"]

    for round_ in range(max(1, repeats)):
        order = ((run_ours, ours_s), (run_theirs, theirs_s))
        for run, times in (order if round_ % 2 == 0 else order[::-1]):
            m, _ = time_forward(run)
            times.append(m.seconds)
    differences = {}
    for field in OUTPUT_FIELDS:
        a = getattr(outputs["ours"], field).float()
        b = outputs["theirs"][field].float()
        differences[field] = float((a - b.reshape(a.shape)).abs().max())
    round_ratios = [o / t for o, t in zip(ours_s, theirs_s)]
    return {"ours_seconds": ours_s, "authors_seconds": theirs_s,
            "ratio_to_authors": min(ours_s) / min(theirs_s),
            "round_ratios": round_ratios, "median_round_ratio": float(np.median(round_ratios)),
            "max_abs_difference": differences,
            "identical_outputs": all(d == 0.0 for d in differences.values())}


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
    if args.against_authors:
        theirs = authors_model(args.against_authors, model, tiny=args.tiny)
        for views in args.views:
            images = torch.rand(views, 3, height, width, generator=generator).to(args.device)
            row = {"method": "vggt", "comparison": "against the authors' code", "views": views,
                   "height": height, "width": width, "threads": torch.get_num_threads(),
                   "repeats": args.repeats, **against_authors(model, theirs, images, args.repeats)}
            results.append(row)
            log.info("%d view(s): %.3f of the authors' time", views, row["ratio_to_authors"])
        return results
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
