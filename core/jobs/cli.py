"""``python -m core jobs list|show|cancel|wait|start|stop`` and the job side of ``run`` / ``evaluate``.

``run`` and ``evaluate`` submit a job and wait for it (``--wait``, the default; progress on
stderr, the result on stdout as before) or print ``{"job": ID, "attached": bool}`` and return
(``--detach``). ``--inline`` (or ``RECONBENCH_EXECUTOR=inline``) computes in this process
without Ray, as a debugging aid.
"""
from __future__ import annotations

import argparse
import json
import sys

from core.cli import CliError

from core.jobs.client import EXECUTOR_ENV


def add_job_flags(parser: argparse.ArgumentParser) -> None:
    """``--wait`` / ``--detach`` / ``--inline`` / ``--owner`` for a command that submits a job."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--wait", dest="detach", action="store_false", default=False,
                       help="submit as a job and wait for its result (default)")
    group.add_argument("--detach", dest="detach", action="store_true",
                       help="submit as a job, print its id and return")
    group.add_argument("--inline", action="store_true", default=None,
                       help=f"compute in this process without Ray (also {EXECUTOR_ENV}=inline)")
    parser.add_argument("--owner", help="owner recorded on the job (default: this user)")


def inline(args) -> bool:
    """Whether this command computes in-process (``--inline`` or ``RECONBENCH_EXECUTOR=inline``)."""
    from core.jobs.client import use_ray

    return bool(getattr(args, "inline", None)) or not use_ray()


def _progress(fraction: float, message: str) -> None:
    print(f"[{fraction * 100:5.1f}%] {message}", file=sys.stderr, flush=True)


def submit_and_follow(spec: dict, args) -> dict | None:
    """Submit ``spec``; with ``--detach`` print the job id and return None, else wait and return
    the job's result (raising :class:`CliError` with the job's reason when it did not finish)."""
    from core.jobs import client

    job_id, attached = client.submit(spec)
    if args.detach:
        print(json.dumps({"job": job_id, "attached": attached, "key": spec["key"]}))
        return None
    if attached:
        print(f"attached to job {job_id}, already computing this key", file=sys.stderr)
    try:
        job = client.wait(job_id, _progress)
    except client.JobError as error:
        raise CliError(str(error)) from None
    return {**job["result"], "job": job_id}


def _line(job: dict) -> dict:
    return {k: job.get(k) for k in ("id", "state", "kind", "label", "owner", "progress", "message",
                                    "eta_seconds", "error", "created", "finished", "key")}


def cmd_jobs(args) -> int:
    from core.jobs import client, cluster

    if args.action == "start":
        print(json.dumps({"address": cluster.address(start=True)}))
        return 0
    if args.action == "stop":
        cluster.stop_local()
        return 0
    if args.action == "list":
        for job in client.list_jobs(args.owner, args.state or None):
            print(json.dumps(_line(job), default=str))
        return 0
    if not args.ids:
        raise CliError(f"jobs {args.action} needs a job id (python -m core jobs list)")
    for job_id in args.ids:
        if args.action == "show":
            print(json.dumps(client.get(job_id), default=str))
        elif args.action == "cancel":
            print(json.dumps(_line(client.cancel(job_id)), default=str))
        else:
            try:
                job = client.wait(job_id, _progress, timeout=args.timeout)
            except TimeoutError as error:
                raise CliError(str(error)) from None
            print(json.dumps(_line(job), default=str))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("jobs", help="list, show, cancel or wait for jobs; start/stop the local Ray")
    p.add_argument("action", choices=("list", "show", "cancel", "wait", "start", "stop"))
    p.add_argument("ids", nargs="*", help="job id(s) for show, cancel and wait")
    p.add_argument("--owner", help="list: only this owner's jobs")
    p.add_argument("--state", action="append", choices=("queued", "running", "done", "failed", "cancelled"),
                   help="list: only jobs in this state (repeatable)")
    p.add_argument("--timeout", type=float, help="wait: give up after this many seconds")
    p.set_defaults(func=cmd_jobs)
