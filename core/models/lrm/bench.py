"""Benchmark of OpenLRM v1.1 stages with RANDOM full-size weights (speed/memory only, no quality).

``bench(argv)`` -> one dict per stage: build, encoder, transformer + upsampler (triplanes), rendering
of one view, density grid query, marching cubes. Arguments::

    --variant {small,base,large,tiny}  (default base = openlrm-mix-base-1.1 architecture;
                                    tiny = the conformance fixture's configuration, for smoke tests)
    --render-size N                (default 128; the authors render 288 for base)
    --grid N                       (default 128; the authors use 384)
    --device {auto,cpu,cuda}       (default auto)
"""
from __future__ import annotations

import argparse
import gc
import logging

import numpy as np
import torch

from core.profiling import measure

from .cameras import orbit_cameras, source_camera
from .config import preset, tiny_config
from .mesh import marching_cubes
from .modeling_lrm import LRM

log = logging.getLogger(__name__)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m core bench lrm")
    parser.add_argument("--variant", default="base", choices=("small", "base", "large", "tiny"))
    parser.add_argument("--render-size", type=int, default=128)
    parser.add_argument("--grid", type=int, default=128)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    return parser.parse_args(argv)


@torch.no_grad()
def bench(argv: list[str]) -> list[dict]:
    args = _parse(list(argv))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    cuda = device.startswith("cuda")
    config = tiny_config() if args.variant == "tiny" else preset(args.variant)
    label = "tiny fixture configuration" if args.variant == "tiny" else f"openlrm-mix-{args.variant}-1.1 architecture"
    common = {"method": "lrm", "variant": label,
              "weights": "random (timings and memory only)", "device": device,
              "threads": torch.get_num_threads(), "dtype": "float32"}
    rows: list[dict] = []

    def record(stage: str, m, **extra) -> None:
        row = {**common, "stage": stage, "seconds": round(m.seconds, 4),
               "peak_rss_bytes": m.peak_rss_bytes, "peak_rss_delta_bytes": m.peak_rss_delta_bytes,
               "peak_cuda_bytes": m.peak_cuda_bytes, **extra}
        log.info("%s", row)
        rows.append(row)

    gc.collect()
    with measure(cuda=cuda) as m:
        model = LRM(config).to(device).eval()
    record("build model (random init)", m, parameters=model.num_parameters)

    image = torch.rand(1, 3, config.source_size, config.source_size,
                       generator=torch.Generator().manual_seed(0)).to(device)
    camera = source_camera(config.source_cam_dist).to(device)
    with measure(cuda=cuda) as m:
        feats = model.encode(image)
    record("encoder", m, input=f"{config.source_size}x{config.source_size}", tokens=feats.shape[1])

    with measure(cuda=cuda) as m:
        tokens = model.forward_transformer(feats, model.embed_camera(camera))
        planes = model.upsample(tokens)
    record("transformer + upsampler (triplanes)", m, tokens=tokens.shape[1],
           planes=list(planes.shape))

    cams = orbit_cameras(4)[None, :1].to(device)
    with measure(cuda=cuda) as m:
        out = model.render(planes, cams, args.render_size, 1.0, generator=torch.Generator().manual_seed(0))
    record("render one view", m, resolution=args.render_size,
           samples_per_ray=config.rendering_samples_per_ray,
           rays=args.render_size ** 2, mean_opacity=float(out.images_weight.mean()))

    with measure(cuda=cuda) as m:
        sigma = model.query_grid(planes, args.grid).sigma[0, ..., 0].cpu().numpy()
    record("density grid query", m, grid=args.grid, points=args.grid ** 3)

    level = float(np.quantile(sigma, 0.7))  # random weights: pick a level that has a surface
    with measure() as m:
        vertices, faces = marching_cubes(sigma, level)
    record("marching cubes", m, grid=args.grid, level="70% quantile of the random density",
           vertices=len(vertices), faces=len(faces))
    return rows
