"""Benchmark of the combined pipeline: seconds per stage and peak memory, per view.

    python -m core bench combined [--weights random-tiny|pretrained] [--views 0 8 16] [--scene sample_data/toy]
"""
from __future__ import annotations

import argparse

from core.models.combined import method as combined
from core.models.combined.pipeline import run_view
from core.profiling import measure
from core.data.scene import Scene
from core.runner import load_model, resolve_device


def bench(argv: list[str]) -> list[dict]:
    """One dict per view: seconds of each stage, points, peak memory; plus one for model loading."""
    parser = argparse.ArgumentParser(prog="python -m core bench combined")
    parser.add_argument("--scene", default="sample_data/toy")
    parser.add_argument("--views", type=int, nargs="+", default=[0])
    parser.add_argument("--weights", default="random-tiny", choices=("random-tiny", "pretrained"))
    parser.add_argument("--prompt", default="toy")
    args = parser.parse_args(argv)
    scene = Scene.load(args.scene)
    options = combined.METHOD.parse_options({
        "weights": args.weights, "prompt": args.prompt,
        "box_threshold": 0.0 if args.weights == "random-tiny" else 0.35,
        "text_threshold": 0.0 if args.weights == "random-tiny" else 0.25})
    device = resolve_device(options.device)
    stages, load_seconds = load_model(combined.METHOD, options, device)
    rows = [{"bench": "combined", "what": "load models", "weights": args.weights, "device": device,
             "seconds": load_seconds, "parameters": stages.parameter_count}]
    settings = combined.view_settings(options)
    for view in args.views:
        with measure(cuda=device == "cuda") as m:
            result = run_view(scene, view, stages, settings)
        rows.append({"bench": "combined", "what": "view", "view": view, "weights": args.weights, "device": device,
                     "seconds": m.seconds, "stage_seconds": result.seconds, "points": int(len(result.points)),
                     "peak_memory_bytes": m.peak_memory_bytes, "image_hw": list(result.image_hw)})
    return rows
