"""Cost before Run: the seconds and peak memory of a method run, estimated before it runs.

The time model of one run (the runner's ``seconds``: the method's ``predict``, model load excluded)::

    seconds = FLOPs / (efficiency x rate)  +  alignment work x seconds per unit

- ``FLOPs``: the method's analytic FLOP model (:meth:`core.models.registry.Method.flops`) for
  the options, the view count and the scene's picture size;
- ``rate``: this machine's float32 matmul rate (:func:`core.bench.matmul_gflops`), measured once
  per process and kept on disk under the cache root together with the CPU model and the thread
  count, so pages do not pay for it again (:func:`machine_rate`);
- ``efficiency``: the fraction of that rate the method achieves. Fitted to the stored runs of the
  same method and model size on this scene when there are any (with a fixed overhead when they
  span several FLOP counts), else the ratio measured by the model benchmarks
  (:data:`REFERENCE_EFFICIENCY`), else :data:`DEFAULT_EFFICIENCY`;
- ``alignment``: iterative work after the network (DUSt3R's global alignment,
  :meth:`Method.alignment_work`): ``iterations x per-iteration overhead + units x seconds per
  unit`` (units = iterations x edges x pixels): both rates fitted (non-negative least squares) to
  the stored runs' ``alignment_seconds`` when three or more runs span :data:`ALIGNMENT_FIT_SPREAD`
  in units, else the defaults :data:`ALIGNMENT_DEFAULTS` scaled by the stored runs' median ratio to
  what they predict (or unscaled without a stored run).

A method without a FLOP model is estimated from a fit of its stored runs' seconds against the
view count (linear; proportional with one stored count). Peak memory (bytes, the process's peak
RSS as the runner records it) is a linear fit of the stored runs' peaks against the view count,
else the full-size reference of the model benchmarks (:data:`REFERENCE_MEMORY`), else the stored
parameter count in float32.

No Streamlit here: the pages show :meth:`Estimate.text` and ask for confirmation when
:func:`needs_confirmation` says so (``RECONBENCH_CONFIRM_SECONDS``, default 60).
"""
from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

CONFIRM_ENV = "RECONBENCH_CONFIRM_SECONDS"
DEFAULT_CONFIRM_SECONDS = 60.0
RATE_ENV = "RECONBENCH_MATMUL_GFLOPS"          # a fixed rate (tests, or a known machine)
RATE_FILE = Path("machine") / "matmul.json"    # under the cache root
MATMUL_SIZE = 2048                              # same reference as the model benchmarks
GIB = 2.0 ** 30

# Achieved fp32 rate / matmul rate of the full-size models (random full-size weights, 518 px,
# 2-8 views, idle 2-core CPU; `python -m core bench vggt|pi3|da3`, issue 14's measurements).
REFERENCE_EFFICIENCY: dict[str, float] = {"vggt": 0.83, "pi3": 0.73, "pi3x": 0.68, "da3-small": 0.47,
                                          "da3-base": 0.51}
DEFAULT_EFFICIENCY = 0.5
# Peak RSS of the same benchmark rows as ``(bytes at 0 views, bytes per view)``, a line through
# the 2- and 8-view rows.
REFERENCE_MEMORY: dict[str, tuple[float, float]] = {
    "vggt": (6.19 * GIB, 0.070 * GIB), "pi3": (4.53 * GIB, 0.103 * GIB), "pi3x": (4.60 * GIB, 0.303 * GIB),
    "da3-small": (1.00 * GIB, 0.235 * GIB), "da3-base": (1.44 * GIB, 0.378 * GIB)}
# DUSt3R's global alignment on this 2-core CPU, idle, 2 threads: (seconds per iteration, seconds
# per iteration x edge x network pixel), solved from two measured runs of different sizes
# (random-tiny 4 views at 64x48, 300 iterations: 1.97 s; random-full 5 views at 512x384, 100
# iterations: 20.78 s; `python -m core bench cost|dust3r`, 2026-11-29). Stored runs rescale both.
ALIGNMENT_DEFAULTS = (0.0047, 1.03e-7)
# Both alignment rates are fitted to the stored runs only when three or more runs span this factor in
# work units; otherwise one scale on the defaults. Two small runs (3 and 4 views: 3 and 6 edges) put
# a 1-s timing jitter on the per-unit rate and multiplied it by 60 at 20 views (estimate 81 s for a
# 34 s run, 2026-11-29); the one-scale fit of the same runs gave 36 s.
ALIGNMENT_FIT_SPREAD = 4.0


@dataclass(frozen=True)
class MachineRate:
    """The float32 matmul rate of this machine (GFLOP/s) and what it was measured on."""

    gflops: float
    cpu: str
    threads: int
    device: str
    measured_unix: float


@dataclass
class Estimate:
    """What a run will cost: ``seconds`` (predict time) and ``peak_bytes`` (process peak), with the
    pieces and where each number came from (``basis``: one short line per piece)."""

    method: str
    n_views: int
    seconds: float | None
    peak_bytes: float | None
    flops: float | None = None
    rate_gflops: float | None = None
    efficiency: float | None = None
    parts: dict[str, float] = field(default_factory=dict)
    basis: list[str] = field(default_factory=list)

    def text(self) -> str:
        """``about 12 s, 1.3 GB`` (``time unknown`` / ``memory unknown`` where there is no model)."""
        time_text = "time unknown" if self.seconds is None else f"about {format_seconds(self.seconds)}"
        memory_text = "memory unknown" if self.peak_bytes is None else f"{self.peak_bytes / 1e9:.1f} GB"
        return f"{time_text}, {memory_text}"


def format_seconds(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``4.5 min``, ``1.2 h``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def confirm_seconds() -> float:
    """The threshold above which a page asks before running (``RECONBENCH_CONFIRM_SECONDS``)."""
    value = os.environ.get(CONFIRM_ENV, "")
    try:
        return float(value) if value.strip() else DEFAULT_CONFIRM_SECONDS
    except ValueError:
        log.warning("%s=%r is not a number; using %g s", CONFIRM_ENV, value, DEFAULT_CONFIRM_SECONDS)
        return DEFAULT_CONFIRM_SECONDS


def needs_confirmation(estimate: Estimate | None, threshold: float | None = None) -> bool:
    """True when the estimated time exceeds the threshold (an unknown time never asks)."""
    if estimate is None or estimate.seconds is None:
        return False
    return estimate.seconds > (confirm_seconds() if threshold is None else threshold)


# ----------------------------------------------------------------------------- machine rate

def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_rates: dict[tuple, MachineRate] = {}


def machine_rate(device: str = "cpu", root: Path | None = None,
                 measure: Callable[..., float] | None = None, refresh: bool = False) -> MachineRate:
    """This machine's fp32 matmul rate: ``RECONBENCH_MATMUL_GFLOPS`` when set, else the value
    kept in ``<cache root>/machine/matmul.json`` for this CPU model, thread count and device, else
    measured now (:func:`core.bench.matmul_gflops`, 2048³, best of 3; about a second) and kept.
    Memoised per process (one measurement per process whatever the cache root). ``refresh``
    measures again and replaces the kept value (the cost benchmark does, on an idle machine)."""
    import torch

    threads = torch.get_num_threads()
    cpu = cpu_model() if device == "cpu" else f"{device}:{torch.cuda.get_device_name() if device == 'cuda' else ''}"
    fixed = os.environ.get(RATE_ENV, "").strip()
    if fixed:
        return MachineRate(float(fixed), cpu, threads, device, 0.0)
    if root is None:
        from core.store.cache import cache_root

        root = cache_root()
    key = (cpu, threads, device)
    if key in _rates and not refresh:
        return _rates[key]
    path = Path(root) / RATE_FILE
    entry_key = f"{cpu}|{threads}|{device}"
    table = {}
    if path.is_file():
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
    entry = table.get(entry_key)
    if entry and float(entry.get("gflops", 0)) > 0 and not refresh:
        rate = MachineRate(float(entry["gflops"]), cpu, threads, device, float(entry.get("measured_unix", 0)))
    else:
        if measure is None:
            from core.bench import matmul_gflops as measure
        rate = MachineRate(float(measure(MATMUL_SIZE, device=device)), cpu, threads, device, time.time())
        table[entry_key] = {"gflops": rate.gflops, "measured_unix": rate.measured_unix, "size": MATMUL_SIZE}
        try:
            from core.store.cache import atomic_write_bytes

            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, json.dumps(table, indent=1, sort_keys=True).encode())
        except OSError as error:  # a read-only cache still gets the in-process value
            log.warning("could not keep the matmul rate in %s: %s", path, error)
    _rates[key] = rate
    return rate


# ----------------------------------------------------------------------------- the estimate

@dataclass(frozen=True)
class _Observed:
    """One stored run of the method as the fits see it."""

    n_views: int
    seconds: float
    network_seconds: float
    alignment_seconds: float
    alignment_iterations: float
    alignment_units: float
    flops: float | None
    peak_bytes: float
    parameter_count: int


def _size_class(method, options) -> str:
    """``tiny`` for the random-tiny configuration, ``full`` otherwise (a different model)."""
    return "tiny" if getattr(options, "weights", None) == "random-tiny" else "full"


def _observations(method, options, scene, store, device: str) -> list[_Observed]:
    """The stored runs of ``method`` on ``scene`` with a model of the same size class, on
    ``device``, as :class:`_Observed` (their FLOPs recomputed for their own options)."""
    if store is None or scene is None:
        return []
    height, width = scene.images[0].shape[:2]
    wanted = _size_class(method, options)
    out = []
    for record in store.runs(scene.name):
        meta = record.meta
        if record.method != method.name or not meta.get("seconds") or not meta.get("view_ids"):
            continue
        if meta.get("device", "cpu") != device:
            continue
        try:
            stored_options = method.parse_options(meta.get("options") or {})
        except Exception:  # noqa: BLE001 -- runs of an older option surface are simply skipped
            continue
        if _size_class(method, stored_options) != wanted:
            continue
        n = len(meta["view_ids"])
        extra = meta.get("extra") or {}
        align = float(extra.get("alignment_seconds") or 0.0)
        iterations, units = method.alignment_work(stored_options, n, height, width)
        network = float(extra.get("network_seconds") or (float(meta["seconds"]) - align))
        flops = method.flops(stored_options, n, height, width)
        out.append(_Observed(n, float(meta["seconds"]), network, align, float(iterations), float(units),
                             None if flops is None else float(flops), float(meta.get("peak_memory_bytes") or 0),
                             int(meta.get("parameter_count") or 0)))
    return out


def _fit_line(x: list[float], y: list[float]) -> tuple[float, float]:
    """``(intercept, slope)`` of a least-squares line (through the origin's direction with one
    distinct x: intercept 0, slope mean y/x); the intercept is clipped at 0."""
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    if len(set(xs.tolist())) < 2:
        return 0.0, float(np.mean(ys / np.maximum(xs, 1e-30)))
    slope, intercept = np.polyfit(xs, ys, 1)
    if intercept < 0 or slope <= 0:   # overhead cannot be negative: refit through the origin
        return 0.0, float(np.sum(xs * ys) / np.sum(xs * xs))
    return float(intercept), float(slope)


def estimate(method_name: str, options, n_views: int, scene, store=None, device: str | None = None,
             rate: MachineRate | None = None) -> Estimate:
    """What running ``method_name`` with ``options`` on ``n_views`` views of ``scene`` will cost
    here (see the module docstring). ``store``: the run store whose runs calibrate the estimate
    (None: references only). ``device``: where it will run (default: the options' resolved
    device). Never runs the method; measures the matmul rate once if it is not kept yet."""
    from core.models import registry

    method = registry.get(method_name)
    options = method.parse_options(options)
    if device is None:
        from core.runner import resolve_device

        try:
            device = resolve_device(getattr(options, "device", "cpu"))
        except Exception:  # noqa: BLE001 -- cuda asked for, not here: the run itself will say so
            device = "cpu"
    height, width = scene.images[0].shape[:2]
    n = int(n_views)
    seen = _observations(method, options, scene, store, device)
    result = Estimate(method_name, n, None, None)
    flops = method.flops(options, n, height, width)
    iterations, units = method.alignment_work(options, n, height, width)

    if flops is not None:
        rate = rate or machine_rate(device)
        result.flops, result.rate_gflops = float(flops), rate.gflops
        with_flops = [o for o in seen if o.flops]
        overhead = 0.0
        if with_flops:
            # seconds = overhead + FLOPs / (efficiency x rate)
            overhead, slope = _fit_line([o.flops for o in with_flops], [o.network_seconds for o in with_flops])
            efficiency = 1.0 / (slope * rate.gflops * 1e9)
            result.basis.append(f"efficiency {efficiency:.2f} of the matmul rate fitted to {len(with_flops)} "
                                f"stored run(s)" + (f", overhead {overhead:.2f} s" if overhead else ""))
        elif method_name in REFERENCE_EFFICIENCY and _size_class(method, options) == "full":
            efficiency = REFERENCE_EFFICIENCY[method_name]
            result.basis.append(f"efficiency {efficiency:.2f} of the matmul rate (the model benchmark's)")
        else:
            efficiency = DEFAULT_EFFICIENCY
            result.basis.append(f"efficiency {efficiency:.2f} of the matmul rate assumed (no stored run yet)")
        result.efficiency = efficiency
        network = overhead + float(flops) / (efficiency * rate.gflops * 1e9)
        result.parts["network"] = network
        source = f"{RATE_ENV}" if rate.measured_unix == 0 else "measured here"
        result.basis.insert(0, f"{flops / 1e12:.3g} TFLOP at {rate.gflops:.0f} GFLOP/s ({device} matmul, {source})")
    else:
        if seen:
            intercept, slope = _fit_line([o.n_views for o in seen], [o.network_seconds for o in seen])
            result.parts["network"] = intercept + slope * n
            result.basis.append(f"no FLOP model: time against views fitted to {len(seen)} stored run(s)")
        else:
            result.basis.append("no FLOP model and no stored run of this method yet")
    if iterations > 0:
        per_iteration, per_unit = ALIGNMENT_DEFAULTS
        timed = [o for o in seen if o.alignment_iterations > 0 and o.alignment_seconds > 0]
        scale = 1.0
        design = np.array([[o.alignment_iterations, o.alignment_units] for o in timed], dtype=np.float64)
        spread = (design[:, 1].max() / max(design[:, 1].min(), 1e-30)) if len(timed) else 0.0
        if (len(timed) >= 3 and spread >= ALIGNMENT_FIT_SPREAD
                and np.linalg.matrix_rank(design / np.maximum(design.max(axis=0), 1e-30)) == 2):
            # both rates from the stored runs (non-negative least squares over the two terms)
            from scipy.optimize import nnls

            fitted, _ = nnls(design, np.array([o.alignment_seconds for o in timed]))
            per_iteration, per_unit = float(fitted[0]), float(fitted[1])
            result.basis.append(f"alignment rates fitted to {len(timed)} stored runs")
        elif timed:
            scale = float(np.median([o.alignment_seconds / (per_iteration * o.alignment_iterations
                                                            + per_unit * o.alignment_units) for o in timed]))
            result.basis.append(f"alignment rate scaled by {scale:.2f} from {len(timed)} stored run(s)")
        else:
            result.basis.append("alignment priced from the default rates (no stored run yet)")
        result.parts["alignment"] = scale * (per_iteration * iterations + per_unit * units)
    if "network" in result.parts:
        result.seconds = float(sum(result.parts.values()))

    peaks = [o for o in seen if o.peak_bytes > 0]
    if peaks:
        intercept, slope = _fit_line([o.n_views for o in peaks], [o.peak_bytes for o in peaks]) \
            if len({o.n_views for o in peaks}) > 1 else (float(np.mean([o.peak_bytes for o in peaks])), 0.0)
        result.peak_bytes = intercept + slope * n
        result.basis.append(f"memory fitted to {len(peaks)} stored run(s)")
    elif method_name in REFERENCE_MEMORY and _size_class(method, options) == "full":
        base, per_view = REFERENCE_MEMORY[method_name]
        result.peak_bytes = base + per_view * n
        result.basis.append("memory from the model benchmark's peaks")
    elif any(o.parameter_count for o in seen):
        result.peak_bytes = 4.0 * max(o.parameter_count for o in seen)
        result.basis.append("memory: parameters in float32 only (activations not counted)")
    return result


# ----------------------------------------------------------------------------- benchmark

def bench(argv: list[str]) -> list[dict]:
    """``python -m core bench cost --method M --views N [--option key=value ...]
    [--calibrate-views K ...]``: the estimate printed before running, then the measured run.

    With ``--calibrate-views K ...`` K-view runs of the same method and options run first (into
    the same store) and the estimate is made again from it: the "fit of stored runs" path the
    pages use once a method has run here. Runs go to a fresh temporary store unless ``--store``
    names one, so nothing cached earlier short-cuts the measurement. One JSON line per estimate
    and per measured run; the last line has ``ratio`` = estimate / measured.
    """
    import argparse
    import tempfile

    from core.data.scene import Scene
    from core.options import parse_assignments
    from core.models import registry
    from core.runner import run_method
    from core.store.cache import REPO_ROOT, RunStore

    parser = argparse.ArgumentParser(prog="python -m core bench cost")
    parser.add_argument("--method", required=True)
    parser.add_argument("--views", type=int, required=True)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--calibrate-views", type=int, nargs="+", default=[],
                        help="run these view counts first and re-estimate from those stored runs (two or more "
                             "counts also fit a fixed overhead and DUSt3R's two alignment rates)")
    parser.add_argument("--scene", default=str(REPO_ROOT / "sample_data" / "toy"))
    parser.add_argument("--store", default="", help="run store folder (default: a fresh temporary one)")
    parser.add_argument("--no-run", action="store_true", help="print the estimate only")
    args = parser.parse_args(argv)
    method = registry.get(args.method)
    options = method.parse_options(parse_assignments(method.options_type, args.option))
    scene = Scene.load(args.scene)
    temporary = None if args.store else tempfile.TemporaryDirectory(prefix="reconbench-cost-")
    store = RunStore(args.store or temporary.name)
    machine_rate(refresh=True)     # this run's machine state, kept for the pages too
    rows = []

    def estimate_row(stage: str) -> dict:
        found = estimate(args.method, options, args.views, scene, store)
        return {"stage": stage, "method": args.method, "views": args.views, "options": summary_text(options),
                "estimate_seconds": found.seconds, "estimate_peak_gb": None if found.peak_bytes is None
                else found.peak_bytes / 1e9, "flops": found.flops, "matmul_gflops": found.rate_gflops,
                "efficiency": found.efficiency, "parts": found.parts, "basis": found.basis}

    def measured_row(n: int, stage: str) -> dict:
        views = scene.uniform_views(n)
        result = run_method(scene, args.method, views, options, store=store, evaluate=False)
        return {"stage": stage, "method": args.method, "views": n, "measured_seconds": result.recon.seconds,
                "measured_peak_gb": result.recon.peak_memory_bytes / 1e9,
                "alignment_seconds": result.recon.extra.get("alignment_seconds")}

    try:
        rows.append(estimate_row("estimate from references"))
        print(json.dumps(rows[-1]), flush=True)
        if args.calibrate_views:
            for count in args.calibrate_views:
                rows.append(measured_row(count, "calibration run"))
                print(json.dumps(rows[-1]), flush=True)
            rows.append(estimate_row("estimate after calibration"))
            print(json.dumps(rows[-1]), flush=True)
        if not args.no_run:
            row = measured_row(args.views, "measured")
            predicted = rows[-1]["estimate_seconds"]
            row["estimate_seconds"] = predicted
            row["ratio"] = None if predicted is None else predicted / row["measured_seconds"]
            rows.append(row)
    finally:
        if temporary is not None:
            temporary.cleanup()
    return rows[-1:] if not args.no_run else []


def summary_text(options) -> str:
    from core.options import summary

    return summary(options)
