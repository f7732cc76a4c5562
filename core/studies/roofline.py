"""Roofline report: every learned method's heavy stage against this machine's float32 matmul rate.

``python -m core bench roofline [--methods vggt dust3r ...] [--size standard|small] [--out FILE]``
runs in one process: first the matmul rate (best of 3 products of two ``--matmul-size`` square
matrices: the limit), then, one method at a time, the model with seeded random weights (the
published architecture for ``standard``, the fixture's tiny configuration for ``small``: tests
and development), and each of its heavy stages at the standard input (:data:`STANDARD`), timed
with the shared feed-forward loop (:mod:`core.models.feedforward_bench`). One JSON row per
method and stage: seconds, peak RSS, analytic FLOPs (the method's FLOP model, checked against
torch's counter in tests/test_flop_models.py), achieved GFLOP/s, ratio to the matmul rate, the
1-minute load average before and after (``loaded`` when either exceeds the benchmark's own
threads by more than 0.5 per core) and, for
stages below :data:`EXPLAIN_BELOW` of the matmul rate, ``top_non_gemm_ops``: the op types
outside matrix products that took the most self time in a ``torch.profiler`` run of the same
stage at its small profile input (one view / one pair at the same resolution), with their share
of that run's time, and ``gemm_share`` (matrix products' share).

``python -m core bench readme-table FILE`` prints the README's performance section (markdown)
from those rows.

Standard inputs were chosen from the FLOP models at ~250 GFLOP/s (the idle 2-core machine):
about 2–25 s per stage, the whole report in ≈ 6–10 minutes including building the models.
LRM is measured up to its triplanes (:mod:`core.models.lrm.flops`), Point-E per denoiser call
(:mod:`core.models.pointe.flops`), 3D-LMNet per picture (:mod:`core.models.lmnet.flops`).
Methods without a FLOP model (the combined pipeline; the ``shape`` method when it lands) are not
in the report yet: the hook is :data:`BUILDERS` (a builder returning the model and its :class:`Stage`
list, each with its analytic FLOPs) plus its inputs in :data:`STANDARD` and :data:`SMALL`.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from core.models.feedforward_bench import rate_fields, rss_bytes, time_forward

log = logging.getLogger(__name__)

EXPLAIN_BELOW = 0.8
"""Stages achieving less than this fraction of the matmul rate get a profile by op type."""

LOADED_PER_CORE = 0.5
"""A row is flagged when the 1-minute load average (before or after) exceeds the benchmark's own
torch threads by more than this per core: the benchmark's threads are in the load average
themselves (2 busy threads read as about 2.0), only the rest is other work."""


def is_loaded(load_before: float, load_after: float, threads: int, cpus: int) -> bool:
    """Whether other work shared the cores: the load beyond the benchmark's own ``threads``
    above :data:`LOADED_PER_CORE` per core."""
    return max(load_before, load_after) - threads > LOADED_PER_CORE * cpus

GEMM_OPS = frozenset({
    "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
    "aten::convolution", "aten::_convolution", "aten::conv2d", "aten::conv_transpose2d",
    "aten::mkldnn_convolution", "aten::_mkldnn_convolution", "aten::slow_conv_transpose2d",
    "aten::_nnpack_spatial_convolution", "aten::_slow_conv2d_forward",
    "aten::mkldnn_linear", "aten::_addmm_activation",
})
"""Op types counted as matrix products (the work the FLOP models count at the matmul rate)."""

NOTE = "random weights: timings are the real architecture's, outputs are meaningless"


@dataclass
class Stage:
    """One timed stage of a method.

    Attributes:
        name: stage name (``forward``, ``encoder``, ``decoder+heads`` ...).
        inputs: the input, in words (``2 views 392x518``).
        flops: analytic FLOPs by part, with ``total``.
        run: one pass of the stage at the standard input.
        profile_run: one pass at the small profile input (op-type profile).
    """

    name: str
    inputs: str
    flops: dict
    run: Callable[[], Any]
    profile_run: Callable[[], Any]


def _images(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0)) * 2 - 1


# --------------------------------------------------------------------------- per-method builders
# Each builder takes the size ("standard" | "small") and returns (model, stages) at the inputs
# of STANDARD / SMALL: (views or pairs, height, width); DUSt3R's and Fast3R's height and width
# are their network input at the method's image size (512x384, or the tiny 64x48).

STANDARD = {"vggt": (2, 392, 518), "pi3": (2, 392, 518), "pi3x": (2, 392, 518),
            "da3-small": (8, 392, 518), "da3-base": (4, 392, 518), "dust3r": (2, 384, 512),
            "fast3r": (4, 384, 512)}
"""Standard inputs, chosen from the FLOP models for ~2-25 s per stage at ~250 GFLOP/s."""

SMALL = {"vggt": (2, 56, 70), "pi3": (2, 56, 70), "pi3x": (2, 56, 70), "da3-small": (2, 56, 70),
         "da3-base": (2, 56, 70), "dust3r": (2, 48, 64), "fast3r": (2, 48, 64)}
"""Inputs of ``--size small`` (the tiny configurations)."""


def _inputs(name: str, size: str) -> tuple[int, int, int]:
    return (SMALL if size == "small" else STANDARD)[name]

def _vggt(size: str):
    from core.models.vggt.config import VGGTConfig
    from core.models.vggt.flops import vggt_flops
    from core.models.vggt.method import random_full_model, random_tiny_model
    from core.models.vggt.modeling_vggt import HEADS

    model = random_tiny_model() if size == "small" else random_full_model(VGGTConfig())
    s, h, w = _inputs("vggt", size)
    x, x1 = _images(s, 3, h, w), _images(1, 3, h, w)
    return model, [Stage("forward", f"{s} views {h}x{w}", vggt_flops(s, h, w, model.config, HEADS),
                         lambda: model(x, heads=HEADS), lambda: model(x1, heads=HEADS))]


def _pi3_family(variant: str):
    def build(size: str):
        from core.models.pi3.config import Pi3Config
        from core.models.pi3.flops import pi3_flops
        from core.models.pi3.method import random_full_model, random_tiny_model

        model = random_tiny_model(variant, multimodal=False) if size == "small" else \
            random_full_model(Pi3Config(variant=variant, multimodal=False))
        s, h, w = _inputs(variant, size)
        x, x1 = _images(1, s, 3, h, w), _images(1, 1, 3, h, w)
        return model, [Stage("forward", f"{s} views {h}x{w}", pi3_flops(s, h, w, model.config),
                             lambda: model(x), lambda: model(x1))]
    return build


def _da3(variant: str):
    def build(size: str):
        from core.models.da3.config import DA3Config
        from core.models.da3.flops import da3_flops
        from core.models.da3.method import random_full_model, random_tiny_model

        model = random_tiny_model() if size == "small" else \
            random_full_model(DA3Config.small() if variant == "small" else DA3Config.base())
        s, h, w = _inputs(f"da3-{variant}", size)
        x, x1 = _images(1, s, 3, h, w), _images(1, 1, 3, h, w)
        return model, [Stage("forward", f"{s} views {h}x{w}", da3_flops(s, h, w, model.config),
                             lambda: model(x, export_feat_layers=()),
                             lambda: model(x1, export_feat_layers=()))]
    return build


def _croco_model(name: str, size: str) -> torch.nn.Module:
    from core.models import registry

    method = registry.get(name)
    options = method.parse_options({"weights": "random-tiny" if size == "small" else "random-full"})
    model = method.load(options, "cpu")
    return model


def _dust3r(size: str):
    """The encoder on one picture (encode-once inference runs it once per view) and the decoders +
    heads on a batch of ordered pairs (2: the default ``batch_size``)."""
    from core.models.dust3r.flops import dust3r_flops

    model = _croco_model("dust3r", size)
    batch, h, w = _inputs("dust3r", size)
    x = _images(1, 3, h, w)
    with torch.inference_mode():
        feat, pos = model.encode(x)
    f, p = feat.expand(batch, -1, -1).contiguous(), pos.expand(batch, -1, -1).contiguous()
    return model, [
        Stage("encoder", f"1 picture {h}x{w}", dust3r_flops(1, 0, h, w, model.config),
              lambda: model.encode(x), lambda: model.encode(x)),
        Stage("decoder+heads", f"{batch} pairs {h}x{w}", dust3r_flops(0, batch, h, w, model.config),
              lambda: model.decode_and_predict(f, p, f, p, (h, w), (h, w)),
              lambda: model.decode_and_predict(f[:1], p[:1], f[:1], p[:1], (h, w), (h, w)))]


def _fast3r(size: str):
    from core.models.fast3r.flops import fast3r_flops

    model = _croco_model("fast3r", size)
    s, h, w = _inputs("fast3r", size)
    views = [_images(1, 3, h, w) for _ in range(s)]
    return model, [Stage("forward", f"{s} views {h}x{w}", fast3r_flops(s, h, w, model.config),
                         lambda: model(views), lambda: model(views[:1]))]


def _lrm(size: str):
    """OpenLRM (base) up to the triplanes: the DINOv2 encoder, then the triplane transformer and
    upsampler on one picture (rendering and meshing are per-ray/per-point MLPs: not here)."""
    from core.models.lrm.cameras import source_camera
    from core.models.lrm.config import preset, tiny_config
    from core.models.lrm.flops import lrm_flops
    from core.models.lrm.modeling_lrm import LRM

    with torch.no_grad():
        model = LRM(tiny_config() if size == "small" else preset("base")).eval()
    c = model.config
    image = (_images(1, 3, c.source_size, c.source_size) + 1) / 2
    with torch.inference_mode():
        camera = model.embed_camera(source_camera(c.source_cam_dist))
        feats = model.encode(image)
    flops = lrm_flops(c)
    encoder = {"encoder": flops["encoder"], "total": flops["encoder"]}
    rest = {k: v for k, v in flops.items() if k not in ("encoder", "camera", "total")}
    rest["total"] = sum(rest.values())
    inputs = f"1 picture {c.source_size}x{c.source_size}"
    planes = lambda: model.upsample(model.forward_transformer(feats, camera))  # noqa: E731
    return model, [Stage("encoder", inputs, encoder, lambda: model.encode(image), lambda: model.encode(image)),
                   Stage("transformer+upsampler", inputs, rest, planes, planes)]


def _pointe(size: str):
    """One call of each Point-E denoiser (base40M: 1024 points; upsampler: 3072 points given
    1024) at batch 2 (classifier-free guidance), conditioned on a 256-token CLIP grid; a
    sampling stage is 2·steps − 1 such calls. The CLIP tower (once per picture) is not here."""
    from core.models.pointe.config import PointDiffusionTransformerConfig, PointEConfig
    from core.models.pointe.flops import denoiser_flops
    from core.models.pointe.modeling_transformer import (CLIPImageGridPointDiffusionTransformer,
                                                         CLIPImageGridUpsamplePointDiffusionTransformer)

    if size == "small":
        up_name = "CLIPImageGridUpsamplePointDiffusionTransformer"
        base = PointDiffusionTransformerConfig(n_ctx=20, width=32, layers=2, heads=2, clip_grid_dim=24)
        up = PointDiffusionTransformerConfig(name=up_name, n_ctx=30, cond_ctx=20, width=32, layers=2,
                                             heads=2, clip_grid_dim=24)
        grid_tokens = 9
    else:
        config = PointEConfig()
        base, up = config.base_transformer_config(), config.upsample_transformer_config()
        grid_tokens = 256
    torch.manual_seed(0)
    models = torch.nn.ModuleList([CLIPImageGridPointDiffusionTransformer(base).eval(),
                                  CLIPImageGridUpsamplePointDiffusionTransformer(up).eval()])
    batch = 2
    t = torch.zeros(batch, dtype=torch.int64)
    grid = _images(batch, base.clip_grid_dim, grid_tokens)
    x_base, x_up = _images(batch, base.input_channels, base.n_ctx), _images(batch, up.input_channels, up.n_ctx)
    low = _images(batch, up.input_channels, up.cond_ctx)
    return models, [
        Stage("base denoiser call", f"batch {batch}, {base.n_ctx} points",
              denoiser_flops(base, batch, grid_tokens), lambda: models[0](x_base, t, grid),
              lambda: models[0](x_base[:1], t[:1], grid[:1])),
        Stage("upsampler denoiser call", f"batch {batch}, {up.n_ctx}+{up.cond_ctx} points",
              denoiser_flops(up, batch, grid_tokens), lambda: models[1](x_up, t, grid, low),
              lambda: models[1](x_up[:1], t[:1], grid[:1], low[:1]))]


def _lmnet(size: str):
    """3D-LMNet's inference on one picture (as the method runs it): conv encoder + FC decoder."""
    from core.models.lmnet.config import LMNetConfig, tiny_config
    from core.models.lmnet.flops import lmnet_flops
    from core.models.lmnet.modeling import LMNet

    config = tiny_config() if size == "small" else LMNetConfig()
    torch.manual_seed(0)
    model = LMNet(config).eval()
    image = (_images(1, 3, config.image_size, config.image_size) + 1) / 2
    return model, [Stage("inference", f"1 picture {config.image_size}x{config.image_size}",
                         lmnet_flops(config), lambda: model(image), lambda: model(image))]


BUILDERS: dict[str, Callable[[str], tuple]] = {
    "vggt": _vggt,
    "pi3": _pi3_family("pi3"),
    "pi3x": _pi3_family("pi3x"),
    "da3-small": _da3("small"),
    "da3-base": _da3("base"),
    "dust3r": _dust3r,
    "fast3r": _fast3r,
    "lrm": _lrm,
    "pointe": _pointe,
    "lmnet": _lmnet,
}
"""Method name -> builder of (model with random weights, its heavy stages)."""


# --------------------------------------------------------------------------- measurements
def load_average() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def op_profile(run: Callable[[], Any], top: int = 5) -> dict:
    """Self CPU time by op type of one ``run()`` under ``torch.profiler``.

    Returns ``gemm_share`` (matrix products' share of the self time of all ops, :data:`GEMM_OPS`)
    and ``top_non_gemm_ops``: the ``top`` other op types by self time, each
    ``{"op", "share", "calls"}`` (share of the same total).
    """
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    rows = [(e.key, e.self_cpu_time_total, e.count) for e in prof.key_averages()]
    total = sum(t for _, t, _ in rows) or 1.0
    gemm = sum(t for k, t, _ in rows if k in GEMM_OPS)
    others = sorted((r for r in rows if r[0] not in GEMM_OPS), key=lambda r: -r[1])[:top]
    return {"gemm_share": round(gemm / total, 3),
            "top_non_gemm_ops": [{"op": k, "share": round(t / total, 3), "calls": int(c)}
                                 for k, t, c in others]}


def machine_fields() -> dict:
    import platform

    return {"machine": platform.machine(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__}


def roofline(methods: list[str], size: str = "standard", matmul_size: int = 3072,
             emit: Callable[[dict], None] | None = None) -> list[dict]:
    """Measure the matmul rate, then every stage of ``methods`` (see the module docstring).

    ``emit(row)`` is called with each row as soon as it is measured (the CLI prints it). Returns
    the rows: first ``{"method": "matmul", ...}``, then one per method and stage.
    Raises ``ValueError`` for a method without a builder.
    """
    from core.bench import matmul_gflops

    unknown = [m for m in methods if m not in BUILDERS]
    if unknown:
        raise ValueError(f"no roofline stage for {', '.join(unknown)}; available: {', '.join(BUILDERS)}")
    emit = emit or (lambda row: None)
    cpus = os.cpu_count() or 1
    rows = []
    before = load_average()
    started = time.perf_counter()
    matmul = matmul_gflops(matmul_size)
    row = {"method": "matmul", "stage": f"fp32 GEMM {matmul_size}x{matmul_size}", "seconds":
           time.perf_counter() - started, "gflops_per_s": matmul, "ratio_to_matmul": 1.0,
           "load_before": before, "load_after": load_average(), "size": size, **machine_fields()}
    row["loaded"] = is_loaded(row["load_before"], row["load_after"], torch.get_num_threads(), cpus)
    rows.append(row)
    emit(row)
    for name in methods:
        gc.collect()
        base_rss = rss_bytes()
        built = time.perf_counter()
        model, stages = BUILDERS[name](size)
        build_seconds = time.perf_counter() - built
        model_rss = rss_bytes()
        params = sum(p.numel() for p in model.parameters())
        for stage in stages:
            before = load_average()
            m, runs = time_forward(stage.run, "cpu", repeats=1, min_seconds=5.0)
            after = load_average()
            row = {"method": name, "stage": stage.name, "inputs": stage.inputs, "size": size,
                   "note": NOTE, "parameters": params, "build_seconds": round(build_seconds, 2),
                   "seconds": m.seconds, "runs": runs, "peak_rss_bytes": m.peak_rss_bytes,
                   "peak_rss_over_model_bytes": m.peak_rss_bytes - model_rss,
                   "model_rss_bytes": model_rss - base_rss, "flops_by_part": stage.flops,
                   **rate_fields(stage.flops["total"], m.seconds, matmul),
                   "load_before": before, "load_after": after,
                   "loaded": is_loaded(before, after, torch.get_num_threads(), cpus), **machine_fields()}
            if row["ratio_to_matmul"] < EXPLAIN_BELOW:
                row.update(op_profile(stage.profile_run))
            rows.append(row)
            emit(row)
            log.info("%s %s: %.2f s, %.1f GFLOP/s (%.2f of matmul)", name, stage.name, m.seconds,
                     row["gflops_per_s"], row["ratio_to_matmul"])
        del model, stages
    return rows


def bench(argv: list[str]) -> list[dict]:
    """``python -m core bench roofline``: rows are printed as they come (and appended to --out)."""
    parser = argparse.ArgumentParser(prog="python -m core bench roofline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(BUILDERS), choices=list(BUILDERS),
                        metavar="METHOD", help=f"methods to run (default all: {' '.join(BUILDERS)})")
    parser.add_argument("--size", choices=("standard", "small"), default="standard",
                        help="standard: published architectures at the standard inputs; "
                             "small: the tiny test configurations (seconds)")
    parser.add_argument("--matmul-size", type=int, default=3072, help="side of the reference GEMM")
    parser.add_argument("--out", default="", help="also write the JSON rows to this file")
    args = parser.parse_args(argv)
    out = open(args.out, "w") if args.out else None
    command = "python -m core bench roofline " + " ".join(argv)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def emit(row: dict) -> None:
        row.setdefault("bench", "roofline")
        row["command"], row["date"] = command.strip(), date
        if out is not None:
            out.write(json.dumps(row) + "\n")
            out.flush()

    try:
        return roofline(args.methods, args.size, args.matmul_size, emit)
    finally:
        if out is not None:
            out.close()


def _gib(n: float) -> str:
    return f"{n / 2 ** 30:.1f}"


def readme_table(rows: list[dict]) -> str:
    """The README's performance section (markdown) from roofline rows: the command, date and
    machine, the matmul rate, then one line per method and stage."""
    matmul = next((r for r in rows if r["method"] == "matmul"), None)
    if matmul is None:
        from core.errors import UserError

        raise UserError("no matmul row: not the output of `python -m core bench roofline --out FILE`")
    lines = [f"Measured with `{matmul.get('command', 'python -m core bench roofline')}` on "
             f"{matmul.get('date', '?')}: {matmul['cpus']} CPU cores, {matmul['threads']} torch threads, "
             f"torch {matmul['torch']}, float32, random weights (the published architectures' "
             f"timings; outputs meaningless). Limit: {matmul['stage']} at "
             f"**{matmul['gflops_per_s']:.0f} GFLOP/s**.", ""]
    for r in rows:  # the current rule, also for files written before it
        if "load_before" in r and "threads" in r and "cpus" in r:
            r["loaded"] = is_loaded(r["load_before"], r["load_after"], r["threads"], r["cpus"])
    loaded = [r for r in rows if r.get("loaded")]
    if loaded:
        lines += [f"**{len(loaded)} row(s) were taken with the 1-minute load above the benchmark's own "
                  f"threads + {LOADED_PER_CORE} per core (marked ⚠): re-measure on an idle machine.**", ""]
    lines += ["| method | stage | input | seconds | GFLOP | GFLOP/s | of matmul | peak RSS (GiB) | "
              "load before/after | where the rest goes (share of op time) |",
              "|---|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        if r["method"] == "matmul":
            continue
        why = ""
        if "top_non_gemm_ops" in r:
            ops = ", ".join(f"{o['op'].removeprefix('aten::')} {o['share']:.0%}"
                            for o in r["top_non_gemm_ops"][:3])
            why = f"GEMM {r['gemm_share']:.0%}; {ops}"
        flag = " ⚠" if r.get("loaded") else ""
        lines.append(f"| {r['method']} | {r['stage']} | {r['inputs']} | {r['seconds']:.2f} | "
                     f"{r['flops'] / 1e9:,.4g} | {r['gflops_per_s']:.3g} | {r['ratio_to_matmul']:.2f} | "
                     f"{_gib(r['peak_rss_bytes'])} | {r['load_before']:.2f}/{r['load_after']:.2f}{flag} | "
                     f"{why} |")
    return "\n".join(lines)


def bench_readme_table(argv: list[str]) -> list[dict]:
    """``python -m core bench readme-table FILE``: print the markdown; returns no rows."""
    parser = argparse.ArgumentParser(prog="python -m core bench readme-table",
                                     description="the README performance section from roofline rows")
    parser.add_argument("file", help="JSON lines written by `python -m core bench roofline --out FILE`")
    args = parser.parse_args(argv)
    with open(args.file) as handle:
        rows = [json.loads(line) for line in handle if line.strip().startswith("{")]
    sys.stdout.write(readme_table(rows) + "\n")
    return []
