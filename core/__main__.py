"""ReconBench command line: the same code paths as the pages.

    python -m core evaluate --scene sample_data/toy --reconstruction FILE [--protocol reconbench|co3d-pose|dtu]
    python -m core datasets import co3d --root ROOT --sequence CATEGORY/SEQUENCE --out SCENE_DIR
    python -m core run METHOD --scene sample_data/toy --views 0 8 16 [--option key=value ...]
    python -m core runs --scene toy
    python -m core prepare --images DIR --out SCENE_DIR [--no-dense]   (or --video FILE --frames N)
    python -m core scaling --scene sample_data/toy --views 1 3 5 8 [--option weights=random-tiny]
    python -m core lmnet data|train|evaluate|export ...
    python -m core bench metrics|vggt|dust3r|fast3r|pointe|lrm|combined|sfm
    python -m core weights list | fetch KEY...
    python -m core synth toy --out sample_data/toy

Results go to stdout as JSON; progress and errors to stderr; bad input exits with status 2
and a one-line message.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from core.cli import CliError, load_scene
from core.data.scene import to_json


# Further commands live beside the code they drive: each module has register(subparsers), which adds
# its parser(s) with set_defaults(func=...); a func returns the exit status and raises core.cli.CliError.
COMMAND_MODULES: list[str] = [
    "core.data.prepare.cli",
    "core.studies.scaling_cli",
    "core.models.lmnet.cli",
    "core.data.datasets.cli",
    "core.studies.benchmarks",
    "core.jobs.cli",
    "core.export.cli",
    "core.store.cli",
]


def cmd_evaluate(args) -> int:
    if args.protocol == "co3d-pose":
        from core.eval.protocols import co3d_pose

        return co3d_pose.evaluate_cli(args)
    if args.protocol == "dtu":
        from core.eval.protocols import dtu

        return dtu.evaluate_cli(args)
    from core import options as option_surface
    from core.eval import metrics
    from core.store.cache import RunStore
    from core.data.importers import ReconstructionFileError
    from core.progress import to_stderr
    from core.runner import import_file

    scene = load_scene(args.scene)
    path = Path(args.reconstruction)
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    options = option_surface.from_namespace(metrics.EvaluationOptions, args)
    store = RunStore(args.cache) if args.cache else RunStore()
    from core.jobs import cli as jobs_cli

    if not jobs_cli.inline(args):
        from core.jobs.client import evaluate_spec

        spec = evaluate_spec(scene, args.scene, path.read_bytes(), path.name, args.views, options, store,
                             owner=args.owner)
        result = jobs_cli.submit_and_follow(spec, args)
        if result is not None:
            print(to_json(result["evaluation"]))
        return 0
    try:
        result, _ = import_file(scene, path.read_bytes(), path.name, args.views, store=store, options=options,
                                progress=to_stderr() if args.verbose else None)
    except (ReconstructionFileError, metrics.EvaluationError) as error:
        raise CliError(str(error)) from None
    print(to_json(result.evaluation))
    return 0


def cmd_run(args) -> int:
    from core import options as option_surface
    from core.models import registry
    from core.progress import Stopped, to_stderr
    from core.runner import run_method
    from core.store.cache import RunStore

    scene = load_scene(args.scene)
    method = registry.get(args.method)
    options = option_surface.from_namespace(method.options_type, args, args.option)
    method.check_options(options)
    views = args.views if args.views else list(range(min(scene.num_views, method.max_views or scene.num_views)))
    store = RunStore(args.cache) if args.cache else RunStore()
    from core.jobs import cli as jobs_cli

    if not jobs_cli.inline(args):
        from core.jobs.client import run_spec

        spec = run_spec(scene, args.scene, method.name, views, options, store, owner=args.owner,
                        score_random_weights=args.score_random_weights)
        result = jobs_cli.submit_and_follow(spec, args)
        if result is not None:
            result["path"] = str(store.root / result.pop("run_dir"))
            for key in ("scene", "model_was_warm", "worker"):
                result.pop(key, None)
            print(to_json(result))
        return 0
    try:
        result = run_method(scene, method.name, views, options, to_stderr(), store,
                            score_random_weights=args.score_random_weights)
    except Stopped:
        raise CliError("stopped; nothing was stored") from None
    recon = result.recon
    print(to_json({"method": method.name, "key": result.key, "cached": result.cached,
                   "views": recon.view_ids, "points": int(len(recon.points)), "seconds": recon.seconds,
                   "peak_memory_bytes": recon.peak_memory_bytes, "parameter_count": recon.parameter_count,
                   "weights_kind": recon.weights_kind,
                   "notes": recon.notes, "evaluation": result.evaluation,
                   "path": str(store.run_dir(scene.name, method.name, result.key))}))
    return 0


def cmd_runs(args) -> int:
    from core.store.cache import RunStore
    from core.runner import leaderboard

    store = RunStore(args.cache) if args.cache else RunStore()
    for row in leaderboard(store, args.scene):
        print(json.dumps(row, default=str))
    return 0


def cmd_bench(args) -> int:
    from core import bench

    for row in bench.run(args.name, args.rest):
        print(json.dumps(row, default=str), flush=True)
    return 0


def cmd_weights(args) -> int:
    from core.models import registry, weights

    for name in registry.METHOD_MODULES:  # importing a method registers its checkpoints
        try:
            registry.get(name)
        except Exception as error:  # a broken optional method must not hide the others
            logging.getLogger(__name__).warning("method %s failed to load: %s", name, error)
    known = weights.registered()
    if args.action == "list":
        for key, checkpoint in sorted(known.items()):
            print(json.dumps({"key": key, "file": checkpoint.filename, "repo": checkpoint.repo_id,
                              "url": checkpoint.url, "size_mb": checkpoint.size_mb, "licence": checkpoint.licence,
                              "available": weights.is_available(checkpoint),
                              "fetch": checkpoint.fetch_command}))
        return 0
    if not args.keys:
        raise CliError("name what to fetch: " + ", ".join(sorted({c.fetch_key or c.key for c in known.values()})))
    for key in args.keys:
        matches = [c for c in known.values() if key in (c.key, c.fetch_key)]
        if not matches:
            raise CliError(f"unknown checkpoint {key!r}; known: {', '.join(sorted(known))}")
        for checkpoint in matches:
            try:
                path = weights.fetch(checkpoint)
            except Exception as error:
                raise CliError(f"could not download {checkpoint.key}: {error}") from None
            print(json.dumps({"key": checkpoint.key, "path": str(path)}))
    return 0


def cmd_synth(args) -> int:
    from core.progress import to_stderr
    from core.data.synthetic import write_toy_sample

    if args.kind != "toy":
        raise CliError("only the 'toy' scene can be synthesised")
    write_toy_sample(args.out, progress=to_stderr())
    print(json.dumps({"scene": str(args.out)}))
    return 0


def _registered() -> list[str]:
    from core.models.registry import METHOD_MODULES

    return sorted(METHOD_MODULES)


def _run_method_name(argv: list[str] | None) -> str | None:
    """The METHOD of ``run METHOD ...`` when it is registered (its options then get flags)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "run" not in argv:
        return None
    rest = argv[argv.index("run") + 1:]
    name = next((a for a in rest if not a.startswith("-")), None)
    return name if name in _registered() else None


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors (unknown flag, wrong type, missing argument) are a
    :class:`CliError`: one ``error:`` line and exit status 2 like every other user error
    (sub-command parsers inherit the class)."""

    def error(self, message: str):
        raise CliError(f"{message} (see {self.prog} --help)")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="python -m core", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", help="run store root (default: $RECONBENCH_CACHE or ./cache)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("evaluate", help="score a reconstruction file against a scene")
    p.add_argument("--scene", required=True)
    p.add_argument("--reconstruction", required=True, help="PLY, OBJ, GLB or VGGT predictions.npz")
    p.add_argument("--views", type=int, nargs="*", help="scene view ids of the frames in predictions.npz")
    p.add_argument("--points", dest="opt__sample_points", metavar="INT", help="same as --sample-points")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--protocol", choices=("reconbench", "co3d-pose", "dtu"), default="reconbench",
                   help="reconbench: ReconBench's protocol (default); co3d-pose: CO3Dv2 pose AUC@30 as in VGGT; "
                        "dtu: the official DTU evaluation in mm")
    p.add_argument("--align", dest="opt__align", choices=("none", "cameras", "cameras+icp"), default=None,
                   help="--protocol dtu: none (default; the file is in the scan's frame, as the official protocol), "
                        "cameras (Sim(3) from the file's camera centres to the scan's; needs --views) or cameras+icp")
    from core import options as option_surface
    from core.eval.metrics import EvaluationOptions
    from core.eval.protocols import co3d_pose

    co3d_pose.add_arguments(p)

    option_surface.add_arguments(p, EvaluationOptions, "evaluation options")
    from core.jobs.cli import add_job_flags

    add_job_flags(p)
    p.set_defaults(func=cmd_evaluate)

    method = _run_method_name(argv)
    p = sub.add_parser("run", help="run a registered method on a scene (cached)",
                       description="Run a registered method on a scene (cached). "
                                   "`python -m core run METHOD --help` lists METHOD's options.")
    p.add_argument("method", help="registered method: " + ", ".join(_registered()))
    p.add_argument("--scene", required=True)
    p.add_argument("--views", type=int, nargs="*")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="set an option by name (same as its flag below)")
    p.add_argument("--score-random-weights", action="store_true",
                   help="also score a run with random weights (its scores mean nothing; not scored by default)")
    from core.jobs.cli import add_job_flags

    add_job_flags(p)
    if method is not None:
        from core import options as option_surface
        from core.models import registry

        option_surface.add_arguments(p, registry.get(method).options_type,
                                     f"{method} options (also as --option key=value)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("runs", help="list stored runs of a scene with their scores (JSON lines)")
    p.add_argument("--scene", required=True, help="scene name, e.g. toy")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("bench", help="benchmarks, JSON lines")
    p.add_argument("name")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("weights", help="list or fetch model checkpoints")
    p.add_argument("action", choices=("list", "fetch"))
    p.add_argument("keys", nargs="*")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("synth", help="render a sample scene with exact ground truth")
    p.add_argument("kind", choices=("toy",))
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_synth)

    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from core.errors import UserError

    try:
        args = build_parser(argv).parse_args(argv)
        return args.func(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
