"""Point-E speed and memory per stage with random FULL-size weights (no checkpoint needed).

``bench(argv)`` builds CLIP ViT-L/14 + base40M + upsample with random weights (the published
sizes; random weights change no timing), then measures on one 256x256 image:
CLIP conditioning, base sampling (1024 points) and upsampling (+3072 points), each with
seconds and peak RSS. Full sampling (64 Karras steps = 127 model calls per stage) is slow on a
CPU, so by default only ``--steps 2`` (3 calls) are measured per stage and the 64-step time is
extrapolated per model call; such rows say ``"extrapolated": true``.

Options: ``--steps N`` (measured Karras steps per stage, default 2), ``--full-steps N``
(the step count to extrapolate to, default 64), ``--device cpu|cuda``, ``--threads N``.
"""
from __future__ import annotations

import argparse
import logging
import platform

import numpy as np
import torch

from core.profiling import measure

from .config import PointEConfig
from .modeling_pointe import build_random
from .sampler import NoiseSource

log = logging.getLogger(__name__)


def _calls(steps: int) -> int:
    """Model calls of a Heun run with ``steps`` Karras steps (the last step is Euler)."""
    return 2 * steps - 1


def bench(argv: list[str]) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m core bench pointe")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--full-steps", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    common = {"method": "pointe", "weights": "random full-size (CLIP ViT-L/14 + base40M + upsample)",
              "device": str(device), "threads": torch.get_num_threads(), "dtype": "float32",
              "machine": platform.processor() or platform.machine()}
    rows = []

    config = PointEConfig()
    with measure(cuda=device.type == "cuda") as m:
        model = build_random(config, seed=0).to(device)
    counts = model.parameter_counts()
    rows.append({**common, "stage": "build", "seconds": m.seconds, "peak_rss_bytes": m.peak_rss_bytes,
                 "parameters": counts})

    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    with measure(cuda=device.type == "cuda") as m:
        grid = model.condition([image])
    rows.append({**common, "stage": "clip", "seconds": m.seconds, "peak_rss_bytes": m.peak_rss_bytes,
                 "peak_rss_delta_bytes": m.peak_rss_delta_bytes, "peak_cuda_bytes": m.peak_cuda_bytes,
                 "batch": 1})

    sampling = PointEConfig(karras_steps=args.steps)
    noise = NoiseSource(0)
    low_res = None
    for stage, name in ((0, "base"), (1, "upsample")):
        settings = sampling.stage(stage)
        with measure(cuda=device.type == "cuda") as m:
            out = model.sample_stage(stage, grid, noise, low_res=low_res, config=sampling)
        low_res = out if stage == 0 else low_res
        calls = _calls(args.steps)
        per_call = m.seconds / calls
        full_calls = _calls(args.full_steps)
        rows.append({
            **common, "stage": f"{name} sampling", "points": settings["num_points"],
            "measured_karras_steps": args.steps, "measured_model_calls": calls,
            "seconds": m.seconds, "seconds_per_model_call": per_call,
            "peak_rss_bytes": m.peak_rss_bytes, "peak_rss_delta_bytes": m.peak_rss_delta_bytes,
            "peak_cuda_bytes": m.peak_cuda_bytes,
            "full_karras_steps": args.full_steps, "full_model_calls": full_calls,
            "seconds_full_steps": per_call * full_calls,
            "extrapolated": args.steps != args.full_steps,
            "guidance_batch": 2, "tokens": 1 + grid.shape[2] + (0 if stage == 0 else config.base_points)
            + settings["num_points"]})
        log.info("%s: %.1f s for %d calls", name, m.seconds, calls)
    total = rows[1]["seconds"] + rows[2]["seconds_full_steps"] + rows[3]["seconds_full_steps"]
    rows.append({**common, "stage": "total (CLIP + both stages at full steps)",
                 "seconds": total, "extrapolated": args.steps != args.full_steps,
                 "peak_rss_bytes": max(r["peak_rss_bytes"] for r in rows)})
    return rows


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys
    logging.basicConfig(level=logging.INFO)
    for row in bench(sys.argv[1:]):
        sys.stdout.write(json.dumps(row) + "\n")
