"""Benchmark plans: public data sets scored with the papers' protocols, in the papers' table shape.

A plan is a TOML file (``benchmarks/co3d.toml``, ``benchmarks/dtu.toml``)::

    name = "co3d-demo"
    protocol = "co3d-pose"            # co3d-pose | dtu
    root = "co3d"                     # a folder under the data-sets root ($RECONBENCH_DATASETS)
    items = ["teddybear/34_1403_4393"]   # co3d: CATEGORY/SEQUENCE; dtu: scan numbers
    methods = ["vggt", "dust3r"]
    views = [10]                      # view counts: CO3D draws them with the protocol's seed
    seed = 0
    aggregation = "per-category"      # co3d only: VGGT's (per category, then mean) or "pooled"
    [options.vggt]                    # per-method options, validated like everywhere else
    weights = "pretrained"

Protocol ``reconbench`` (no data-set ``root``): ``items`` are scene folders relative to the
plan file, each run at ``views`` uniform views with every method and scored with ReconBench's
evaluation (``score = false`` only times them). For every protocol the grid's runs are submitted
as jobs on Ray at once (``--inline`` / ``RECONBENCH_EXECUTOR=inline``: run here, in turn).

:func:`run_plan` imports each item once (into the store's ``benchmarks/scenes/``), runs every
method at every view count through the run cache (so a rerun computes only what is missing),
scores each run with the protocol, and returns the rows and the table in the papers' shape:
one row per category (CO3D, pose AUC@30 / RRA@30 / RTA@30 in percent, VGGT's aggregation) or
per scan (DTU, accuracy / completeness / overall in millimetres) and a mean row, per method and
view count. Tables export as CSV and LaTeX (and read back: :func:`read_csv`, :func:`read_latex`).
"""
from __future__ import annotations

import csv
import io
import json
import re
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from core.errors import UserError

PROTOCOLS = ("co3d-pose", "dtu", "reconbench")

# What the papers report, for the page to show beside the measured table. Reported, not
# reproduced here; each entry says where it comes from and how its protocol differs.
PAPER_NUMBERS: dict[str, list[dict]] = {
    "co3d-pose": [
        {"method": "vggt", "metric": "auc30", "value": 88.2,
         "source": "VGGT (Wang et al., CVPR 2025), Table 1: CO3Dv2, 10 random frames per sequence, "
                   "feed-forward",
         "differences": "the authors draw frames unseeded and use their own test split; ReconBench "
                        "draws with a recorded seed and pairs E_i E_j^-1"},
        {"method": "vggt", "metric": "auc30", "value": 89.5,
         "source": "VGGT released evaluation script (the authors' repository), same data",
         "differences": "as above; the script's relative pose is inv(E_i) E_j in the first camera's frame"},
    ],
    "reconbench": [],
    "dtu": [
        {"method": "dust3r", "metric": "overall_mm", "value": 1.741,
         "source": "as cited in VGGT, Table 3: DTU, unknown ground-truth cameras (accuracy 2.677, "
                   "completeness 0.805)",
         "differences": "aligned to the ground truth before scoring; ReconBench aligns on camera "
                        "centres (Sim(3)), the official protocol itself does no alignment"},
        {"method": "vggt", "metric": "overall_mm", "value": 0.382,
         "source": "VGGT, Table 3: DTU, unknown ground-truth cameras, depth + camera branch "
                   "(accuracy 0.389, completeness 0.374)",
         "differences": "as above"},
    ],
}

METRICS = {"co3d-pose": ("auc30", "rra30", "rta30"), "dtu": ("accuracy_mm", "completeness_mm", "overall_mm"),
           "reconbench": ("chamfer", "fscore", "seconds", "points")}
GROUP = {"co3d-pose": "category", "dtu": "scan", "reconbench": "scene"}


class PlanError(UserError):
    """A plan file that cannot be run as written."""


@dataclass
class Plan:
    """A parsed, validated plan (see the module docstring)."""

    name: str
    protocol: str
    root: str
    items: list[str]
    methods: list[str]
    views: list[int]
    seed: int = 0
    aggregation: str = "per-category"
    options: dict[str, dict] = field(default_factory=dict)
    path: str = ""
    score: bool = True       # reconbench: score each run against the scene's ground truth


def load_plan(path: Path | str) -> Plan:
    """Read and validate a plan; :class:`PlanError` names what is wrong."""
    from core.models import registry

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise PlanError(f"cannot read plan {path.name}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise PlanError(f"plan {path.name} is not valid TOML: {error}") from None
    if data.get("protocol") == "reconbench":
        data.setdefault("root", "")
    missing = [k for k in ("name", "protocol", "root", "items", "methods", "views") if k not in data]
    if missing:
        raise PlanError(f"plan {path.name} lacks {', '.join(missing)}")
    if data["protocol"] not in PROTOCOLS:
        raise PlanError(f"plan {path.name}: unknown protocol {data['protocol']!r} (choices: {', '.join(PROTOCOLS)})")
    for key in ("items", "methods", "views"):
        if not isinstance(data[key], list) or not data[key]:
            raise PlanError(f"plan {path.name}: {key} must be a non-empty list")
    views = data["views"]
    if not all(isinstance(v, int) and v >= 2 for v in views):
        raise PlanError(f"plan {path.name}: views must be whole numbers >= 2; got {views}")
    unknown = [m for m in data["methods"] if m not in registry.METHOD_MODULES]
    if unknown:
        raise PlanError(f"plan {path.name}: unknown method(s) {', '.join(unknown)} "
                        f"(registered: {', '.join(sorted(registry.METHOD_MODULES))})")
    options = data.get("options", {})
    for method, values in options.items():
        if method not in data["methods"]:
            raise PlanError(f"plan {path.name}: options for {method!r}, which the plan does not run")
        registry.get(method).parse_options(values)   # OptionError names the bad value
    aggregation = data.get("aggregation", "per-category")
    if aggregation not in ("per-category", "pooled"):
        raise PlanError(f"plan {path.name}: aggregation must be per-category or pooled; got {aggregation!r}")
    items = [str(i) for i in data["items"]]
    if data["protocol"] == "dtu" and not all(i.isdigit() for i in items):
        raise PlanError(f"plan {path.name}: DTU items are scan numbers; got {items}")
    if data["protocol"] == "co3d-pose" and not all(i.count("/") == 1 for i in items):
        raise PlanError(f"plan {path.name}: CO3D items are CATEGORY/SEQUENCE; got {items}")
    score = data.get("score", True)
    if not isinstance(score, bool):
        raise PlanError(f"plan {path.name}: score must be true or false; got {score!r}")
    return Plan(name=str(data["name"]), protocol=data["protocol"], root=str(data["root"]), items=items,
                methods=list(data["methods"]), views=list(views), seed=int(data.get("seed", 0)),
                aggregation=aggregation, options=options, path=str(path), score=score)


def dataset_folder(plan: Plan) -> Path:
    """The plan's data-set root, inside the configured data-sets folder (never a web path)."""
    from core.data.datasets import datasets_root

    base = datasets_root().resolve()
    folder = (base / plan.root).resolve()
    if base not in folder.parents and folder != base:
        raise PlanError(f"plan {plan.name}: root {plan.root!r} leaves the data-sets folder")
    if not folder.is_dir():
        raise PlanError(f"plan {plan.name}: no data set at {plan.root!r} under the data-sets folder "
                        f"(set RECONBENCH_DATASETS or put it under datasets/)")
    return folder


def _scene_for(plan: Plan, item: str, store_root: Path):
    """The imported scene of one plan item (imported on first use, reused afterwards)."""
    from core.data.datasets import co3d, dtu
    from core.data.scene import Scene
    from core.store.cache import safe_name

    folder = store_root / "benchmarks" / "scenes" / plan.protocol / safe_name(f"{plan.root}-{item}")
    if not (folder / "scene.json").is_file():
        root = dataset_folder(plan)
        folder.parent.mkdir(parents=True, exist_ok=True)
        if plan.protocol == "co3d-pose":
            category, sequence = item.split("/")
            co3d.import_sequence(root, category, sequence, folder)
        else:
            dtu.import_scan(root, int(item), folder)
    return Scene.load(folder), folder


def _views(plan: Plan, scene, count: int) -> list[int]:
    from core.eval.protocols.co3d_pose import sample_frames

    if count > scene.num_views:
        raise PlanError(f"{scene.name} has {scene.num_views} views; the plan asks for {count}")
    if plan.protocol == "co3d-pose":
        return sample_frames(scene.num_views, count, plan.seed)
    return scene.uniform_views(count)


def _score(plan: Plan, scene, folder: Path, recon, views: list[int], count: int) -> dict:
    if plan.protocol == "co3d-pose":
        from core.eval.protocols.co3d_pose import Co3dPoseOptions, evaluate_sequence

        if recon.cam_from_world is None:
            raise UserError(f"{recon.method} predicts no cameras; the pose protocol needs them")
        options = Co3dPoseOptions(frames=count, seed=plan.seed, aggregation=plan.aggregation)
        return evaluate_sequence(scene, recon.cam_from_world, views, options)
    from core.data.datasets.dtu import DtuEvalData
    from core.eval.protocols.dtu import DtuOptions, evaluate

    return evaluate(scene, recon, DtuEvalData.load(folder), DtuOptions(align="cameras", seed=plan.seed))


@dataclass
class BenchmarkResult:
    """Rows (one per item x method x view count) and the table in the papers' shape."""

    plan: dict
    rows: list[dict]
    table: list[dict]
    seconds: float
    created: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=str)


def run_plan(plan: Plan, store=None, progress: Callable | None = None, inline: bool | None = None
             ) -> BenchmarkResult:
    """Run every item x method x view count through the run cache and score it (module docstring).

    Each item is imported once, here. On Ray (the default executor) every run of the grid is then
    submitted as a job at once (the cluster runs what fits in parallel and attaches to runs
    already computing); each finished job's run is read back from the store and scored with the
    protocol here. ``inline`` (default: ``RECONBENCH_EXECUTOR=inline``) runs them in this process,
    one after the other. A run that fails with a :class:`UserError` (no cameras, too few views, a
    failed job...) becomes a row with an ``error``; anything else is a bug and propagates.
    """
    from core.jobs import client
    from core.store.cache import RunStore

    store = store or RunStore()
    report = progress or (lambda fraction, message="": None)
    inline = not client.use_ray() if inline is None else inline
    if plan.protocol == "reconbench":
        return _run_scene_grid(plan, store, report, inline)
    started = time.perf_counter()
    scenes = {item: _scene_for(plan, item, store.root) for item in plan.items}   # each item imported once
    grid = [(item, method, count) for item in plan.items for method in plan.methods for count in plan.views]
    rows, pending = [], []
    for index, (item, method, count) in enumerate(grid):
        scene, folder = scenes[item]
        row = {"item": item, GROUP[plan.protocol]: item.split("/")[0] if plan.protocol == "co3d-pose"
               else f"scan{int(item)}", "method": method, "views": count}
        rows.append(row)
        try:
            views = _views(plan, scene, count)
            if inline:
                from core.runner import run_method

                report(index / len(grid), f"{item}: {method} on {count} views")
                result = run_method(scene, method, views, plan.options.get(method), store=store, evaluate=False)
                row.update({"weights": result.recon.weights_kind, "key": result.key, "cached": result.cached,
                            "seconds": result.recon.seconds})
                row.update(_protocol_scores(plan, scene, folder, result.recon, views, count))
            else:
                spec = client.run_spec(scene, folder, method, views, plan.options.get(method), store, evaluate=False)
                pending.append((row, scene, folder, views, count, client.submit(spec)[0]))
        except UserError as error:
            row["error"] = str(error)
    for index, (row, scene, folder, views, count, job_id) in enumerate(pending):
        report(index / len(pending), f"waiting for {row['method']} on {row['item']} ({count} views)")
        row["job"] = job_id
        try:
            done = client.wait(job_id)["result"]
            row.update({"weights": done["weights_kind"], "key": done["key"], "cached": done["cached"],
                        "seconds": done["seconds"]})
            recon = store.load(scene.name, row["method"], done["key"])
            row.update(_protocol_scores(plan, scene, folder, recon, views, count))
        except UserError as error:
            row["error"] = str(error)
    report(1.0, "plan complete")
    return BenchmarkResult(plan=asdict(plan), rows=rows, table=paper_table(plan, rows),
                           seconds=time.perf_counter() - started, created=time.strftime("%Y-%m-%d %H:%M:%S"))


def _protocol_scores(plan: Plan, scene, folder: Path, recon, views: list[int], count: int) -> dict:
    """A co3d-pose or dtu row's measured fields: the protocol's metrics, plus the per-pair errors
    (CO3D, degrees) or the alignment used (DTU)."""
    scores = _score(plan, scene, folder, recon, views, count)
    if plan.protocol == "co3d-pose":
        return {"rre_deg": scores["rre_deg"], "rte_deg": scores["rte_deg"],
                **{m: scores[m] for m in METRICS[plan.protocol]}}
    return {**{m: scores[m] for m in METRICS[plan.protocol]}, "alignment": scores["alignment"]["mode"]}


def scene_folders(plan: Plan) -> list[Path]:
    """The reconbench plan's scene folders (items relative to the plan file's folder)."""
    base = Path(plan.path).parent if plan.path else Path.cwd()
    folders = [(base / item).resolve() for item in plan.items]
    missing = [str(f) for f in folders if not (f / "scene.json").is_file()]
    if missing:
        raise PlanError(f"plan {plan.name}: no scene folder at {', '.join(missing)}")
    return folders


def _run_scene_grid(plan: Plan, store, report: Callable, inline: bool) -> BenchmarkResult:
    """The ``reconbench`` protocol: every scene folder x method x view count (uniform views) run
    and scored with ReconBench's evaluation. On Ray (the default executor) the whole grid is
    submitted first, so the cluster runs what fits in parallel (and attaches to runs already
    computing); ``inline`` runs it here, one after the other."""
    from core.data.scene import Scene
    from core.jobs import client

    started = time.perf_counter()
    scenes = [(Scene.load(folder), folder) for folder in scene_folders(plan)]
    grid = [(scene, folder, method, count) for scene, folder in scenes for method in plan.methods
            for count in plan.views]
    rows, pending = [], []
    for scene, folder, method, count in grid:
        row = {"scene": scene.name, "item": str(folder), "method": method, "views": count}
        rows.append(row)
        try:
            views = scene.uniform_views(count) if count <= scene.num_views else None
            if views is None:
                raise PlanError(f"{scene.name} has {scene.num_views} views; the plan asks for {count}")
            if not inline:
                spec = client.run_spec(scene, folder, method, views, plan.options.get(method), store,
                                       evaluate=plan.score, score_random_weights=plan.score)
                pending.append((row, client.submit(spec)[0]))
            else:
                from core.runner import run_method

                result = run_method(scene, method, views, plan.options.get(method), store=store,
                                    evaluate=plan.score)
                row.update(_grid_row(result.key, result.cached, result.recon.weights_kind, result.recon.seconds,
                                     len(result.recon.points), result.evaluation))
        except UserError as error:
            row["error"] = str(error)
    for index, (row, job_id) in enumerate(pending):
        report(index / max(len(pending), 1), f"waiting for {row['method']} on {row['scene']} ({row['views']} views)")
        try:
            done = client.wait(job_id)["result"]
            row.update({"job": job_id, **_grid_row(done["key"], done["cached"], done["weights_kind"],
                                                   done["seconds"], done["points"], done["evaluation"])})
        except UserError as error:
            row.update({"job": job_id, "error": str(error)})
    report(1.0, "plan complete")
    return BenchmarkResult(plan=asdict(plan), rows=rows, table=paper_table(plan, rows),
                           seconds=time.perf_counter() - started, created=time.strftime("%Y-%m-%d %H:%M:%S"))


def _grid_row(key: str, cached: bool, weights: str, seconds: float, points: int, evaluation: dict | None) -> dict:
    """A reconbench row's measured fields: Chamfer and F-score at 0.01 (normalised units) when scored."""
    from core.eval.scores import Scores, ScoresFormatError

    chamfer = fscore = None
    if evaluation is not None:
        try:
            scores = Scores.from_json(evaluation)
            if scores.scored:
                chamfer, fscore = scores.chamfer, scores.fscore_at(0.01)
        except ScoresFormatError:
            pass
    return {"weights": weights, "key": key, "cached": cached, "seconds": seconds, "points": points,
            "chamfer": chamfer, "fscore": fscore}


def paper_table(plan: Plan, rows: list[dict]) -> list[dict]:
    """The table in the papers' shape: per category / scan rows and a mean row, per method and
    view count. CO3D in percent (AUC@30, RRA@30, RTA@30) with the plan's aggregation; DTU in mm."""
    group = GROUP[plan.protocol]
    table = []
    for method in plan.methods:
        for count in plan.views:
            done = [r for r in rows if r["method"] == method and r["views"] == count and "error" not in r]
            if not done:
                continue
            if plan.protocol == "reconbench":
                for r in done:
                    table.append({group: r[group], "method": method, "views": count,
                                  **{m: r[m] for m in METRICS[plan.protocol]}})
                table.append({group: "mean", "method": method, "views": count,
                              **{m: _mean([r[m] for r in done]) for m in METRICS[plan.protocol]}})
            elif plan.protocol == "co3d-pose":
                from core.eval.protocols.co3d_pose import aggregate

                summary = aggregate([{"category": r[group], "rre_deg": r["rre_deg"], "rte_deg": r["rte_deg"]}
                                     for r in done], plan.aggregation)
                for name, scores in summary["categories"].items():
                    table.append({group: name, "method": method, "views": count,
                                  **{m: 100.0 * scores[m] for m in METRICS[plan.protocol]}})
                table.append({group: "mean", "method": method, "views": count,
                              **{m: 100.0 * summary[m] for m in METRICS[plan.protocol]}})
            else:
                for r in done:
                    table.append({group: r[group], "method": method, "views": count,
                                  **{m: r[m] for m in METRICS[plan.protocol]}})
                table.append({group: "mean", "method": method, "views": count,
                              **{m: sum(r[m] for r in done) / len(done) for m in METRICS[plan.protocol]}})
    return table


def _mean(values: list) -> float | None:
    """Mean of the numbers among ``values`` (None when there are none: unscored runs)."""
    numbers = [v for v in values if isinstance(v, (int, float)) and v == v]
    return sum(numbers) / len(numbers) if numbers else None


# ----------------------------------------------------------------------------- storage
def results_path(store_root: Path, plan_name: str) -> Path:
    from core.store.cache import safe_name

    return Path(store_root) / "benchmarks" / f"{safe_name(plan_name)}.json"


def save_result(result: BenchmarkResult, store_root: Path) -> Path:
    """Write the result atomically beside the run store's runs."""
    from core.data.scene import atomic_write_bytes

    path = results_path(store_root, result.plan["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, result.to_json().encode())
    return path


def load_result(store_root: Path, plan_name: str) -> BenchmarkResult | None:
    """The stored result of a plan, or None (an unreadable file is reported as a UserError)."""
    path = results_path(store_root, plan_name)
    if not path.is_file():
        return None
    try:
        return BenchmarkResult(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as error:
        raise UserError(f"stored benchmark {path.name} is unreadable ({error}); run the plan again") from None


# ----------------------------------------------------------------------------- for the page
PLANS_ENV = "RECONBENCH_PLANS"


def plans_folder() -> Path:
    """Where plans are listed from: ``$RECONBENCH_PLANS`` or ``<repo>/benchmarks``."""
    import os

    from core.store.cache import REPO_ROOT

    value = os.environ.get(PLANS_ENV)
    return Path(value).expanduser() if value else REPO_ROOT / "benchmarks"


def list_plans() -> dict[str, Path]:
    """{plan file stem: path} of the ``*.toml`` plans in :func:`plans_folder`."""
    folder = plans_folder()
    return {p.stem: p for p in sorted(folder.glob("*.toml"))} if folder.is_dir() else {}


UNITS = {"co3d-pose": "percent", "dtu": "mm", "reconbench": "normalised units; seconds"}


def display_table(table: list[dict], protocol: str) -> list[dict]:
    """The table with readable column names and rounded numbers (the stored table keeps full precision)."""
    names = {"auc30": "AUC@30 (%)", "rra30": "RRA@30 (%)", "rta30": "RTA@30 (%)", "accuracy_mm": "accuracy (mm)",
             "completeness_mm": "completeness (mm)", "overall_mm": "overall (mm)"}
    digits = 1 if protocol == "co3d-pose" else 3
    return [{names.get(k, k): (round(v, digits) if isinstance(v, float) else v) for k, v in row.items()}
            for row in table]


def table_caption(protocol: str) -> str:
    if protocol == "reconbench":
        return ("Per scene: ReconBench's evaluation (Chamfer in normalised units, lower is better; F-score at "
                "0.01, higher is better), the run's seconds and points; mean over scenes.")
    if protocol == "co3d-pose":
        return ("Per category: pairs i < j of the drawn frames pooled per category; mean: the average of the "
                "categories (VGGT's aggregation). Higher is better.")
    return ("Per scan: the official DTU evaluation (0.2 mm thinning, observation mask, plane, 20 mm cut) after "
            "a Sim(3) on camera centres; mean over scans. Lower is better.")


def paper_rows(protocol: str) -> list[dict]:
    """What the papers report for this protocol (:data:`PAPER_NUMBERS`), as table rows."""
    return [{"method": e["method"], "metric": e["metric"], "reported": e["value"], "source": e["source"],
             "differences from this protocol": e["differences"]} for e in PAPER_NUMBERS[protocol]]


# ----------------------------------------------------------------------------- exports
def table_columns(protocol: str) -> list[str]:
    return [GROUP[protocol], "method", "views", *METRICS[protocol]]


def to_csv(table: list[dict], columns: list[str]) -> str:
    """The table as CSV (full precision)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow(row)
    return buffer.getvalue()


def _typed(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def read_csv(text: str) -> list[dict]:
    """Rows of :func:`to_csv` with numbers as numbers."""
    return [{k: _typed(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


def _latex_escape(value) -> str:
    return re.sub(r"([_&%#$])", r"\\\1", str(value))


def to_latex(table: list[dict], columns: list[str], caption: str = "", digits: int = 3) -> str:
    """A booktabs ``tabular`` (numbers with ``digits`` decimals), for a paper or a handout."""
    header = " & ".join(_latex_escape(c) for c in columns) + r" \\"
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{" + "l" * 2 + "r" * (len(columns) - 2) + "}",
             r"\toprule", header, r"\midrule"]
    for row in table:
        cells = []
        for column in columns:
            value = row.get(column, "")
            cells.append(f"{value:.{digits}f}" if isinstance(value, float) else _latex_escape(value))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + _latex_escape(caption) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def read_latex(text: str) -> list[dict]:
    """Rows of a table written by :func:`to_latex` (numbers as numbers, escapes undone)."""
    body = text.split(r"\midrule", 1)[1].split(r"\bottomrule", 1)[0]
    header = text.split(r"\toprule", 1)[1].split(r"\midrule", 1)[0]
    unescape = lambda cell: re.sub(r"\\([_&%#$])", r"\1", cell.strip())  # noqa: E731
    split = lambda line: [unescape(c) for c in re.split(r"(?<!\\)&", line.strip().removesuffix(r"\\"))]  # noqa: E731
    columns = split(header)
    return [{c: _typed(v) for c, v in zip(columns, split(line))} for line in body.strip().splitlines()]


# ----------------------------------------------------------------------------- command line
def register(subparsers) -> None:
    """``python -m core batch PLAN.toml``: run a plan, print one JSON line per row, then the table."""
    parser = subparsers.add_parser("batch", help="run a benchmark plan (data set x methods x view counts) and "
                                                 "write its table")
    parser.add_argument("plan", help="plan file (TOML), e.g. benchmarks/co3d.toml")
    parser.add_argument("--csv", help="also write the table as CSV to this file")
    parser.add_argument("--latex", help="also write the table as LaTeX to this file")
    parser.add_argument("--inline", action="store_true", default=None,
                        help="run every run in this process, one after the other, without Ray "
                             "(also RECONBENCH_EXECUTOR=inline); default: each run is a job")
    parser.set_defaults(func=_cli)


def _cli(args) -> int:
    from core.progress import to_stderr
    from core.store.cache import RunStore

    plan = load_plan(args.plan)
    store = RunStore(args.cache) if args.cache else RunStore()
    result = run_plan(plan, store, to_stderr(), inline=args.inline)
    save_result(result, store.root)
    for row in result.rows:
        print(json.dumps({"kind": "row", **{k: v for k, v in row.items() if k not in ("rre_deg", "rte_deg")}},
                         default=str), flush=True)
    for row in result.table:
        print(json.dumps({"kind": "table", **row}), flush=True)
    columns = table_columns(plan.protocol)
    if args.csv:
        Path(args.csv).write_text(to_csv(result.table, columns))
    if args.latex:
        Path(args.latex).write_text(to_latex(result.table, columns, caption=f"{plan.name} ({plan.protocol})"))
    return 0
