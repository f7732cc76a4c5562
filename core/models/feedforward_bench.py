"""The one feed-forward benchmark loop: time a model's forward pass and report its achieved rate.

Used by the VGGT, π³ and DA3 benches and by the roofline report (:mod:`core.studies.roofline`):
each builds its model and inputs, then calls :func:`time_forward` for the wall time and peak
memory of one forward (best of ``repeats``) and :func:`rate_fields` for the achieved GFLOP/s
from the method's analytic FLOP count and its ratio to the machine's float32 matmul rate
(:func:`core.bench.matmul_gflops`) measured in the same process.
"""
from __future__ import annotations

import gc
from typing import Any, Callable

import psutil
import torch

from core.profiling import Measurement, measure


def rss_bytes() -> int:
    """This process's resident set size now."""
    return psutil.Process().memory_info().rss


def time_forward(forward: Callable[[], Any], device: str = "cpu", repeats: int = 1,
                 min_seconds: float = 0.0, max_repeats: int = 3) -> tuple[Measurement, int]:
    """Run ``forward()`` under ``torch.inference_mode``; return the fastest run's
    :class:`~core.profiling.Measurement` (seconds, peak RSS of the process, peak CUDA bytes) and
    the number of runs.

    Runs ``repeats`` times, and more (up to ``max_repeats``) while the fastest run is shorter than
    ``min_seconds`` (short stages get a warm repeat, long ones are run once). The output is
    dropped before the next run; CUDA work is synchronised inside the timed block.
    """
    cuda = str(device).startswith("cuda")
    best: Measurement | None = None
    runs = 0
    while runs < max(1, repeats) or (best.seconds < min_seconds and runs < max_repeats):
        gc.collect()
        with torch.inference_mode(), measure(cuda=cuda) as m:
            out = forward()
            if cuda:
                torch.cuda.synchronize()
        del out
        runs += 1
        if best is None or m.seconds < best.seconds:
            best = m
    return best, runs


def rate_fields(flops: float, seconds: float, matmul_gflops_per_s: float) -> dict:
    """``gflops_per_s`` achieved by ``flops`` in ``seconds`` and ``ratio_to_matmul``."""
    achieved = flops / seconds / 1e9
    return {"flops": flops, "gflops_per_s": achieved, "matmul_gflops_per_s": matmul_gflops_per_s,
            "ratio_to_matmul": achieved / matmul_gflops_per_s}


def forward_row(forward: Callable[[], Any], flops_by_part: dict, matmul_gflops_per_s: float,
                model_rss: int, device: str = "cpu", repeats: int = 1, **fields) -> dict:
    """One benchmark row: ``fields``, then seconds, peak RSS (process, and over ``model_rss``:
    the RSS once the model was built), peak CUDA bytes, the analytic FLOPs (``flops_by_part``
    with its ``total``), achieved rate and ratio to the matmul rate, device, threads, dtype."""
    m, runs = time_forward(forward, device, repeats)
    return {**fields, "device": device, "threads": torch.get_num_threads(), "dtype": "float32",
            "seconds": m.seconds, "runs": runs, "peak_rss_bytes": m.peak_rss_bytes,
            "peak_rss_over_model_bytes": m.peak_rss_bytes - model_rss,
            "peak_cuda_bytes": m.peak_cuda_bytes, "flops_by_part": flops_by_part,
            **rate_fields(flops_by_part["total"], m.seconds, matmul_gflops_per_s)}
