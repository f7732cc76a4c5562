"""Benchmarks (``python -m core bench NAME ...``): each prints one JSON object per line.

Speed and memory targets are checked here, never in timed tests.
"""
from __future__ import annotations

import argparse
import importlib
import platform
import time

import numpy as np

from core.profiling import measure

# name -> "module:function"; each function takes argv and returns a list of dicts.
BENCHES: dict[str, str] = {
    "metrics": "core.bench:bench_metrics",
    "lrm": "core.models.lrm.bench:bench",
    "vggt": "core.models.vggt.bench:bench",
    "pointe": "core.models.pointe.bench:bench",
    "shape": "core.models.shape.bench:bench",
    "combined": "core.models.combined.bench:bench",
    "sfm": "core.data.prepare.bench:bench",
    "dense": "core.data.prepare.bench:bench_dense",
    "dust3r": "core.models.dust3r.bench:bench",
    "fast3r": "core.models.fast3r.bench:bench",
    "attention": "core.studies.attention:bench",
    "attribution": "core.studies.attribution:bench",
    "pi3": "core.models.pi3.bench:bench",
    "da3": "core.models.da3.bench:bench",
    "roofline": "core.studies.roofline:bench",
    "readme-table": "core.studies.roofline:bench_readme_table",
    "cost": "core.studies.cost:bench",
}


def machine() -> dict:
    import os

    return {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()}


def matmul_gflops(size: int = 2048, repeats: int = 3, device: str = "cpu") -> float:
    """This machine's float32 matrix-multiply rate in GFLOP/s: the best of ``repeats`` products of
    two ``size x size`` matrices (2·size³ FLOPs each) on ``device`` with the current torch threads;
    the reference that model benchmarks report their achieved rate against."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.rand(size, size, generator=generator).to(device)
    b = torch.rand(size, size, generator=generator).to(device)
    cuda = str(device).startswith("cuda")
    torch.matmul(a, b)                                  # warm-up (BLAS threads, CUDA context)
    best = float("inf")
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        torch.matmul(a, b)
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2.0 * size ** 3 / best / 1e9


def bench_metrics(argv: list[str]) -> list[dict]:
    """Chamfer (10k, 100k points per side), exact EMD (1k, 2k) and ICP (20k points) on random clouds."""
    from core import geometry
    from core.eval import metrics

    parser = argparse.ArgumentParser(prog="python -m core bench metrics")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    out = []

    def timed(name, fn, **fields):
        best = None
        for _ in range(args.repeat):
            with measure() as m:
                value = fn()
            best = m.seconds if best is None else min(best, m.seconds)
        out.append({"bench": "metrics", "operation": name, "seconds": round(best, 5), "repeat": args.repeat,
                    "value": value, **fields, **machine()})

    metrics.earth_movers_distance(rng.normal(size=(8, 3)), rng.normal(size=(8, 3)))  # import POT untimed
    for n in (10_000, 100_000):
        p, q = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
        timed("chamfer", lambda: metrics.chamfer_distance(p, q), points_per_side=n)
    for n in (1_000, 2_048):
        p, q = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
        timed("emd_exact", lambda: metrics.earth_movers_distance(p, q), points_per_side=n)
    # ICP on the sample toy's surface (normalised), started 10 degrees and 10 % scale away.
    from core.data.scene import Scene
    from core.store.cache import REPO_ROOT

    gt = Scene.load(REPO_ROOT / "sample_data" / "toy").gt_points.astype(np.float64)
    surface = geometry.transform_points(metrics.normalization_transform(gt), gt)
    source = metrics.subsample(surface, 20_000, 0)
    transform = geometry.sim3_matrix(1.3, geometry.random_rotation(rng), rng.normal(size=3) * 0.05)
    target = geometry.transform_points(transform, source)
    angle = np.radians(10)
    start = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    init = transform @ geometry.sim3_matrix(1.1, start, np.zeros(3))
    timed("icp_multiscale", lambda: metrics.icp(source, target, init, (0.2, 0.1, 0.05, 0.025))[1],
          points=20_000, note="value = final fitness (1.0 = converged)")
    return out


def run(name: str, argv: list[str]) -> list[dict]:
    if name not in BENCHES:
        from core.cli import CliError

        raise CliError(f"unknown benchmark {name!r}; available: {', '.join(sorted(BENCHES))}")
    module_name, function_name = BENCHES[name].split(":")
    started = time.time()
    rows = getattr(importlib.import_module(module_name), function_name)(argv)
    for row in rows:
        row.setdefault("bench", name)
        row.setdefault("started_unix", round(started, 1))
    return rows
