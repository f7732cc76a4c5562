"""Shap-E speed and memory per stage with random weights (no checkpoint needed).

``bench(argv)`` builds Shap-E for each mode with random weights (``--size full``: the published
sizes, CLIP ViT-L/14 + text300M / image300M + the decoder; ``--size tiny``: the tiny
configuration, for tests) and measures, each with seconds, peak RSS and the achieved GFLOP/s
(analytic FLOPs / seconds) next to this machine's fp32 matmul rate measured in the same run
(:func:`core.bench.matmul_gflops`):

- ``clip``: the text embedding of one prompt (text) or the grid of one 256x256 picture (image);
- ``denoiser call``: one model call on the guidance-doubled batch (the first call of a run);
- ``sampling``: ``--steps`` Karras steps measured (2 S - 1 calls), extrapolated per call to
  ``--full-steps`` (published 64 = 127 calls), rows say ``"extrapolated": true``;
- ``decode``: latent -> the MLP's weights (params_proj);
- ``mesh``: SDF on a ``--grid-size``^3 grid (published 128) + marching cubes + vertex colours;
- ``renders``: ``--views`` STF turntable renders of ``--render-size`` pixels.

Options: ``--size full|tiny``, ``--mode text|image|both``, ``--steps``, ``--full-steps``,
``--grid-size``, ``--render-size``, ``--views``, ``--threads``, ``--device``.
"""
from __future__ import annotations

import argparse
import gc
import logging
import platform
import time

import numpy as np
import torch

from core.profiling import measure

from .config import ShapEConfig
from .mesh import decode_mesh
from .modeling_shape import ShapE
from .rendering import pan_cameras, render_stf
from .tokens import tokenize

log = logging.getLogger(__name__)


def transformer_flops(tokens: int, width: int, layers: int, mlp_ratio: int = 4) -> float:
    """Multiply-add FLOPs (x2) of a pre-LN transformer: per layer qkv + output projections
    (4 W^2), the MLP (2 mlp_ratio W^2) per token, and the attention products (2 T^2 W)."""
    per_token = 2 * (4 + 2 * mlp_ratio) * width ** 2
    return float(layers * (tokens * per_token + 2 * 2 * tokens ** 2 * width))


def denoiser_flops(model: ShapE, mode: str, grid_tokens: int) -> float:
    """FLOPs of one guided denoiser call (batch 1 doubled to 2)."""
    config = model.latent_model(mode).config
    tokens = config.latent_ctx + 1 + (1 if mode == "text" else grid_tokens)
    projections = 2 * config.latent_ctx * config.channels * config.width * 3   # input + 2C output
    return 2 * (transformer_flops(tokens, config.width, config.layers) + projections)


def clip_flops(model: ShapE, mode: str) -> float:
    config = model.config
    if mode == "text":
        return transformer_flops(config.clip_context_length, config.clip_text_width, config.clip_text_layers)
    tokens = (config.clip_image_size // config.clip_patch_size) ** 2 + 1
    patch = 2 * (tokens - 1) * 3 * config.clip_patch_size ** 2 * config.clip_width
    return transformer_flops(tokens, config.clip_width, config.clip_layers) + patch


def mlp_flops_per_point(model: ShapE) -> float:
    return float(sum(2 * layer.in_features * layer.out_features
                     for layer in model.decoder.renderer.nerstf.mlp))


def _random_model(size: str, mode: str, device: torch.device) -> ShapE:
    from . import checkpoints
    return checkpoints.random_full(mode, 0, device, ShapEConfig.tiny() if size == "tiny" else None)


def bench(argv: list[str]) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m core bench shape")
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--mode", choices=("text", "image", "both"), default="both")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--full-steps", type=int, default=64)
    parser.add_argument("--grid-size", type=int, default=128)
    parser.add_argument("--render-size", type=int, default=64)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from core.bench import matmul_gflops
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    def limit() -> float:
        return matmul_gflops(3072, 3, str(device)) if args.size == "full" else matmul_gflops(256, 2, str(device))

    matmul = limit()
    common = {"method": "shape", "weights": f"random {args.size}-size", "device": str(device),
              "threads": torch.get_num_threads(), "dtype": "float32",
              "machine": platform.processor() or platform.machine(), "matmul_gflops": round(matmul, 1)}
    rows: list[dict] = []

    def row(stage: str, m, flops: float | None = None, **extra) -> dict:
        out = {**common, "stage": stage, "seconds": m.seconds, "peak_rss_bytes": m.peak_rss_bytes,
               "peak_rss_delta_bytes": m.peak_rss_delta_bytes, "peak_cuda_bytes": m.peak_cuda_bytes,
               **extra}
        if flops is not None and m.seconds > 0:
            out["gflop"] = flops / 1e9
            out["gflops_per_s"] = flops / 1e9 / m.seconds
            out["fraction_of_matmul"] = out["gflops_per_s"] / matmul
        rows.append(out)
        return out

    modes = ("text", "image") if args.mode == "both" else (args.mode,)
    for mode in modes:
        with measure(cuda=cuda) as m:
            model = _random_model(args.size, mode, device)
        row(f"{mode}: build", m, parameters=model.parameter_counts())
        with measure(cuda=cuda) as m:
            if mode == "text":
                cond = model.condition_text(tokenize("a plush toy rabbit"))
            else:
                image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
                cond = model.condition_images([image])
        row(f"{mode}: clip", m, clip_flops(model, mode))
        grid_tokens = cond.shape[2] if mode == "image" else 0
        call_flops = denoiser_flops(model, mode, grid_tokens)
        times: list[float] = []
        last = [time.perf_counter()]

        def on_call(calls: int) -> None:
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now

        with measure(cuda=cuda) as m:
            last[0] = time.perf_counter()
            latent = model.sample_latents(mode, cond, None, on_call, karras_steps=args.steps)
        calls, full_calls = len(times), 2 * args.full_steps - 1

        class _One:   # the first call alone, as a measurement
            seconds = times[0]
            peak_rss_bytes = m.peak_rss_bytes
            peak_rss_delta_bytes = m.peak_rss_delta_bytes
            peak_cuda_bytes = m.peak_cuda_bytes

        row(f"{mode}: one denoiser call", _One, call_flops, guidance_batch=2)
        per_call = m.seconds / calls
        sampling = row(f"{mode}: sampling", m, call_flops * calls, measured_karras_steps=args.steps,
                       measured_model_calls=calls, seconds_per_model_call=per_call,
                       full_karras_steps=args.full_steps, full_model_calls=full_calls,
                       seconds_full_steps=per_call * full_calls,
                       extrapolated=args.steps != args.full_steps)
        with measure(cuda=cuda) as m, torch.no_grad():
            meta = model.decoder.bottleneck_to_params(latent)
        proj_flops = 2.0 * sum(p.proj.weight.numel() for p in model.decoder.params_proj.projections.values())
        row(f"{mode}: decode (params_proj)", m, proj_flops)
        with measure(cuda=cuda) as m:
            mesh = decode_mesh(model.decoder, meta, args.grid_size)
        row(f"{mode}: mesh", m, mlp_flops_per_point(model) * (args.grid_size ** 3 + len(mesh.vertices)),
            grid_size=args.grid_size, vertices=len(mesh.vertices), faces=len(mesh.faces))
        with measure(cuda=cuda) as m:
            views = np.linspace(0, 20, args.views, endpoint=False).astype(int)
            render_stf(torch.from_numpy(mesh.vertices), torch.from_numpy(mesh.faces),
                       torch.from_numpy(mesh.linear_colors), pan_cameras(args.render_size, views))
        row(f"{mode}: renders (stf)", m, views=args.views, render_size=args.render_size)
        total = sum(r["seconds"] for r in rows[-6:] if r["stage"] in (
            f"{mode}: clip", f"{mode}: decode (params_proj)", f"{mode}: mesh", f"{mode}: renders (stf)"))
        rows.append({**common, "stage": f"{mode}: total (clip + {args.full_steps} steps + decode + "
                                        "mesh + renders)",
                     "seconds": total + sampling["seconds_full_steps"],
                     "extrapolated": args.steps != args.full_steps,
                     "peak_rss_bytes": max(r.get("peak_rss_bytes", 0) for r in rows[-7:])})
        del model, cond, latent, meta, mesh
        gc.collect()
    # The limit is the best GEMM rate this process reaches: measured again after the stages (a
    # reading taken while the thread pool or the CPU clock is still settling came out 40 % low).
    matmul = max(matmul, limit())
    for out in rows:
        out["matmul_gflops"] = round(matmul, 1)
        if "gflops_per_s" in out:
            out["fraction_of_matmul"] = out["gflops_per_s"] / matmul
    return rows


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys
    logging.basicConfig(level=logging.INFO)
    for item in bench(sys.argv[1:]):
        sys.stdout.write(json.dumps(item) + "\n")
