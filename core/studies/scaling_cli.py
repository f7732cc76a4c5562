"""``python -m core scaling``: the view-count scaling study (:mod:`core.studies.scaling`) from the
command line, as one job on Ray (:func:`core.jobs.client.scaling_spec`) or in this process.

A module of its own because it submits jobs: :mod:`core.jobs` imports the study (the job's
handler and spec), so the study itself must not import :mod:`core.jobs`.
"""
from __future__ import annotations

from core.studies.scaling import (DEFAULT_VIEW_COUNTS, ScalingPoint, cli_options, curves, flops_model,
                                  multi_view_methods, results_from_json, run_studies, summary_table)


def _cli_methods(args: list[str] | None) -> list[str]:
    """The ``--method`` values among a sub-command's argument strings (before parsing)."""
    names, items = [], list(args or [])
    for i, item in enumerate(items):
        if item == "--method" and i + 1 < len(items):
            names.append(items[i + 1])
        elif item.startswith("--method="):
            names.append(item.partition("=")[2])
    return names


OWN_FLAGS = {"scene", "views", "repeats", "seed", "method", "option", "wait", "detach", "inline", "owner"}


def register(subparsers) -> None:
    """``python -m core scaling``: the study from the command line, one JSON line per point, then
    each method's fits and summary. The study runs as one job (``--wait``, the default: the same
    lines once it ends; ``--detach``: the job id; ``--inline``: in this process, points as they
    finish).

    With a single ``--method`` (vggt by default) its options also have one flag each; options
    go as ``--option key=value`` (every chosen method) or ``--option METHOD.key=value`` (one)."""
    from core.models.registry import METHOD_MODULES

    parser = subparsers.add_parser(
        "scaling", help="time/memory/quality of multi-view methods against the number of views",
        description="View-count scaling: the chosen multi-view methods run back to back at each view count "
                    "(JSON lines: kind=point per run, kind=fit per method, quantity and model, kind=summary per "
                    "method). `python -m core scaling --method M --help` lists M's option flags.")
    parser.add_argument("--scene", required=True)
    parser.add_argument("--views", type=int, nargs="+", default=list(DEFAULT_VIEW_COUNTS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", action="append", metavar="METHOD",
                        help="a multi-view method (repeat for an overlay study; default vggt): a registered "
                             "discriminative method taking more than one view, e.g. vggt, fast3r, dust3r")
    parser.add_argument("--option", action="append", metavar="[METHOD.]KEY=VALUE",
                        help="an option of every chosen method (key=value) or of one (METHOD.key=value), e.g. "
                             "weights=random-tiny (or weights=random-full: the full model's real cost, timing only)")
    from core.options import add_arguments

    base = type(parser)

    class MethodFlags(base):
        """Adds the option flags of the single chosen method when the sub-command is parsed."""

        def parse_known_args(self, args=None, namespace=None):
            chosen = _cli_methods(args) or ["vggt"]
            if len(chosen) == 1 and chosen[0] in METHOD_MODULES and not getattr(self, "_option_flags_added", False):
                from core.models import registry
                from core.options import specs

                self._option_flags_added = True
                method = registry.get(chosen[0])
                # a method whose option shares a name with the study's own flags keeps --option only
                if method.family == "discriminative" and not {s.name for s in specs(method.options_type)} & OWN_FLAGS:
                    add_arguments(self, method.options_type, f"{chosen[0]} options (also as --option key=value)")
            return super().parse_known_args(args, namespace)

    parser.__class__ = MethodFlags
    from core.jobs.cli import add_job_flags

    add_job_flags(parser)
    parser.set_defaults(func=_cli)


def _cli(args) -> int:
    import json
    from dataclasses import asdict

    from core.cli import CliError, load_scene
    from core.models import registry
    from core.progress import to_stderr
    from core.store.cache import RunStore

    scene = load_scene(args.scene)
    names = list(dict.fromkeys(args.method or ["vggt"]))
    known = multi_view_methods()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CliError(f"{', '.join(unknown)}: not a multi-view method; choose from {', '.join(known)}")
    methods = cli_options(names, args.option, args)
    for name, options in methods.items():
        ready = registry.get(name).availability(options)
        if not ready.ok:
            prefix = f"{name}." if len(names) > 1 else ""
            raise CliError(f"{registry.get(name).label} cannot run: {ready.message()} (or pass --option "
                           f"{prefix}weights=random-full, or random-tiny, for timing only)")
    store = RunStore(args.cache) if args.cache else RunStore()

    def emit(point: ScalingPoint) -> None:
        print(json.dumps({"kind": "point", **asdict(point)}, default=str), flush=True)

    from core.jobs import cli as jobs_cli

    if not jobs_cli.inline(args):   # one job runs the whole study (see core.jobs.tasks.scaling_job)
        from core.jobs.client import scaling_spec

        spec = scaling_spec(scene, args.scene, methods, args.views, args.repeats, args.seed, store, owner=args.owner)
        finished = jobs_cli.submit_and_follow(spec, args)
        if finished is None:        # --detach: the job id was printed
            return 0
        results = results_from_json(finished["results"])
        for result in results.values():
            for point in result.points:
                emit(point)
    else:
        results = run_studies(scene, methods, args.views, args.repeats, to_stderr(), store, args.seed, emit)
    for name, result in results.items():
        for quantity, curve in curves(result, flops_model(name, methods[name], scene)).items():
            for fit in curve.fits:
                print(json.dumps({"kind": "fit", "method": name, "quantity": quantity, "model": fit.formula,
                                  "coefficients": fit.coefficients, "rmse": fit.rmse, "bic": fit.bic,
                                  "residuals": fit.residuals, "best": fit is curve.best}), flush=True)
    for name, result in results.items():
        print(json.dumps({"kind": "summary", "method": name, "quality_available": result.quality_available,
                          "quality_note": result.quality_note, "stopped": result.stopped,
                          "rows": summary_table(result)}), flush=True)
    return 0
