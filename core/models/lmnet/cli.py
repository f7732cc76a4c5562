"""``python -m core lmnet data|train|evaluate|export`` (registered through ``register(subparsers)``).

    python -m core lmnet data --out DIR --per-category 40
    python -m core lmnet train --data DIR --out RUN --variant original --ae-steps 400 --latent-steps 600
        (a job on Ray: --wait by default, --detach returns the job id, --inline trains in this process)
    python -m core lmnet evaluate --data DIR --run checkpoints/lmnet/original --run checkpoints/lmnet/dgcnn
    python -m core lmnet export --run RUN --out checkpoints/lmnet/original
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path


def _cli_error(message: str):
    from core.cli import CliError

    return CliError(message)


def cmd_data(args) -> int:
    from core.progress import to_stderr

    from .procedural import CATEGORIES, DatasetSpec, write_dataset

    categories = tuple(args.categories or CATEGORIES)
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown:
        raise _cli_error(f"unknown categories {', '.join(unknown)}; known: {', '.join(CATEGORIES)}")
    if args.per_category < 3:
        raise _cli_error("--per-category must be at least 3 (train, val and test need one shape each)")
    spec = DatasetSpec(per_category=args.per_category, categories=categories, seed=args.seed, views=args.views)
    splits = write_dataset(args.out, spec, progress=to_stderr())
    print(json.dumps({"out": str(args.out), **{k: len(v) for k, v in splits.items()}}))
    return 0


def cmd_train(args) -> int:
    from .data import DataError
    from .train import TrainOptions, train

    model = json.loads(args.model) if args.model else {}
    options = TrainOptions(data=args.data, out=args.out, variant=args.variant, size=args.size, model=model,
                           ae_steps=args.ae_steps, latent_steps=args.latent_steps, batch_size=args.batch_size,
                           latent_batch_size=args.latent_batch_size, ae_lr=args.ae_lr, latent_lr=args.latent_lr,
                           seed=args.seed, log_every=args.log_every, val_every=args.val_every,
                           checkpoint_every=args.checkpoint_every, threads=args.threads,
                           stop_after=args.stop_after)
    from core.jobs import cli as jobs_cli

    if not jobs_cli.inline(args):   # a job on Ray (core.jobs.tasks.lmnet_train_job); --detach returns its id
        from core.jobs.client import lmnet_train_spec

        result = jobs_cli.submit_and_follow(lmnet_train_spec(options, restart=args.restart, owner=args.owner), args)
        if result is not None:
            for key in ("worker", "job"):
                result.pop(key, None)
            print(json.dumps(result))
        return 0
    try:
        result = train(options, resume=not args.restart)
    except (DataError, ValueError) as error:
        raise _cli_error(str(error)) from None
    print(json.dumps(result))
    return 0


def cmd_evaluate(args) -> int:
    from core.models.weights import BadCheckpoint, MissingWeights
    from core.progress import to_stderr

    from .data import DataError
    from .evaluate import EvalOptions, evaluate, results_table, save_result
    from .inference import load_run

    models = {}
    for run in args.run or []:
        try:
            model = load_run(run)
        except (MissingWeights, BadCheckpoint) as error:
            raise _cli_error(str(error)) from None
        models[Path(run).name if Path(run).is_dir() else Path(run).parent.name] = model
    options = EvalOptions(points=args.points, views=tuple(args.views), seed=args.seed, tau=args.tau,
                          max_shapes=args.max_shapes)
    try:
        result = evaluate(models, args.data, args.split, options, baseline=not args.no_baseline,
                          progress=to_stderr() if args.verbose else None)
    except DataError as error:
        raise _cli_error(str(error)) from None
    if args.save:
        save_result(result, args.save)
    print(json.dumps({"overall": result["overall"], "count": result["count"], "shapes": result["shapes"],
                      "mean_shape": result["mean_shape"], "protocol": result["protocol"]}))
    if args.table:
        import sys
        print(results_table(result), file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    """Copy a run's weights, config, training log and run options into a shipped folder."""
    run, out = Path(args.run), Path(args.out)
    needed = ["model.safetensors", "config.json", "train_log.csv", "run.json"]
    missing = [n for n in needed if not (run / n).is_file()]
    if missing:
        raise _cli_error(f"run {run} lacks {', '.join(missing)}")
    out.mkdir(parents=True, exist_ok=True)
    for name in needed[1:]:
        shutil.copy2(run / name, out / name)
    if args.dtype == "float32":
        shutil.copy2(run / needed[0], out / needed[0])
    else:  # half the size; loading casts back to float32 (the shipped numbers use these weights)
        from safetensors.torch import load_file, save_file

        state = load_file(str(run / needed[0]))
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        save_file(state, str(out / needed[0]), metadata={"format": "pt", "stored_dtype": "float16"})
    print(json.dumps({"out": str(out), "files": needed, "dtype": args.dtype}))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("lmnet", help="3D-LMNet: procedural data, training, evaluation")
    sub = parser.add_subparsers(dest="lmnet_command", required=True)

    p = sub.add_parser("data", help="generate the procedural ShapeNet-like data set (R2N2 layout)")
    p.add_argument("--out", required=True)
    p.add_argument("--per-category", type=int, default=40)
    p.add_argument("--categories", nargs="*", help="subset of chair table lamp mug airplane")
    p.add_argument("--views", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train (or resume) stage 1 auto-encoder + stage 2 latent matching")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="run folder (resumed from its last.pt unless --restart)")
    p.add_argument("--variant", choices=("original", "dgcnn"), default="original")
    p.add_argument("--size", choices=("shipped", "published", "tiny"), default="shipped")
    p.add_argument("--model", help="JSON of LMNetConfig overrides, e.g. '{\"probabilistic\": true}'")
    p.add_argument("--ae-steps", type=int, default=400)
    p.add_argument("--latent-steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--latent-batch-size", type=int, default=16)
    p.add_argument("--ae-lr", type=float, default=1e-3)
    p.add_argument("--latent-lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--stop-after", type=int, default=0, help="stop at this global step (resume later)")
    p.add_argument("--restart", action="store_true", help="ignore an existing last.pt")
    from core.jobs.cli import add_job_flags

    add_job_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="Chamfer / EMD / F-score on a split (3D-LMNet protocol)")
    p.add_argument("--data", required=True)
    p.add_argument("--run", action="append", help="run or checkpoint folder (repeatable)")
    p.add_argument("--split", default="test")
    p.add_argument("--views", type=int, nargs="+", default=[3, 15])
    p.add_argument("--points", type=int, default=1024)
    p.add_argument("--tau", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-shapes", type=int, default=0)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--save", help="write the full result (per category) as JSON here")
    p.add_argument("--table", action="store_true", help="also print a Markdown table to stderr")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="copy a run's weights + config + log into a shipped folder")
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                   help="storage type of the shipped weights (float16 halves the size)")
    p.set_defaults(func=cmd_export)
