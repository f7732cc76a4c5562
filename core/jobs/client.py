"""Submitting, following and cancelling jobs from any process (pages, CLI, studies).

Every function joins the cluster (:func:`core.jobs.cluster.connect`) and talks to the one job
manager (:class:`core.jobs.manager.JobManager`), creating it on first use. A spec is a dict::

    {"kind": "run" | "evaluate", "key": str, "label": str, "owner": str,
     "store": str (the store root), "shared_disk": bool, "resources": {"num_cpus", "num_gpus",
     "memory"}, "staging_dirs": [folders relative to the store], "payload": {...}}

:func:`run_spec` and :func:`evaluate_spec` build them (the key is the run key, so a second
request for a running key attaches to it); :func:`submit` returns ``(job id, attached)``;
:func:`wait` follows a job until it ends.
"""
from __future__ import annotations

import getpass
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

from core.errors import UserError
from core.jobs import cluster


class JobError(UserError):
    """A job that failed or was cancelled, or an unknown job id; the message says which and why."""


EXECUTOR_ENV = "RECONBENCH_EXECUTOR"


def use_ray() -> bool:
    """Whether computations are submitted as jobs (default) or run in this process
    (``RECONBENCH_EXECUTOR=inline``, a debugging aid and what the test suite uses outside the
    job tests)."""
    return os.environ.get(EXECUTOR_ENV, "ray").strip().lower() != "inline"


def default_owner() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def manager():
    """The cluster's job manager (created, detached, on first use)."""
    import ray

    from core.jobs.manager import ACTOR_NAME, JobManager
    from core.store.cache import cache_root

    cluster.connect()
    return JobManager.options(name=ACTOR_NAME, namespace=cluster.NAMESPACE, lifetime="detached",
                              get_if_exists=True).remote(str(cache_root() / "jobs"))


def _call(method, *args):
    import ray

    return ray.get(method.remote(*args))


def gpus_in_cluster() -> float:
    import ray

    cluster.connect()
    return float(ray.cluster_resources().get("GPU", 0.0))


def run_spec(scene, scene_path: Path | str, method_name: str, views: list[int] | None, options=None,
             store=None, owner: str | None = None, evaluate: bool = True,
             score_random_weights: bool = True, shared_disk: bool | None = None) -> dict:
    """The spec of a method run (validated here, so bad options or views fail before queueing)."""
    from core import options as opts
    from core.jobs.tasks import read_folder
    from core.models import registry
    from core.runner import key_for, prepare_call
    from core.store.cache import RunStore, safe_name

    store = store or RunStore()
    method = registry.get(method_name)
    if views is None:
        views = list(range(min(scene.num_views, method.max_views or scene.num_views)))
    parsed, views = prepare_call(method, scene, views, options)
    shared = cluster.shared_disk() if shared_disk is None else shared_disk
    return {"kind": "run", "key": key_for(scene, method, views, parsed),
            "label": f"{method.name} on {scene.name} ({len(views)} views)",
            "owner": owner or default_owner(), "store": str(Path(store.root).resolve()), "shared_disk": shared,
            "resources": method.resources(parsed, gpus_in_cluster()),
            "staging_dirs": [f"runs/{safe_name(scene.name)}/{safe_name(method.name)}"],
            "payload": {"scene": str(Path(scene_path).resolve()), "method": method.name, "views": list(views),
                        "options": opts.as_dict(parsed), "evaluate": evaluate,
                        "score_random_weights": score_random_weights,
                        "scene_files": None if shared else read_folder(Path(scene_path))}}


def evaluate_spec(scene, scene_path: Path | str, data: bytes, file_name: str, views: list[int] | None,
                  options=None, store=None, owner: str | None = None, shared_disk: bool | None = None) -> dict:
    """The spec of scoring and storing an imported file (key: its bytes, views and options)."""
    from core import options as opts
    from core.jobs.tasks import read_folder
    from core.store.cache import RunStore, safe_name

    from core.data.importers import read_reconstruction

    read_reconstruction(data, file_name, views)   # a bad file fails here, before anything is queued
    store = store or RunStore()
    shared = cluster.shared_disk() if shared_disk is None else shared_disk
    option_values = opts.as_dict(options) if options is not None else None
    digest = hashlib.sha256(data)
    digest.update(json.dumps([scene.name, views, option_values, file_name], sort_keys=True, default=str).encode())
    return {"kind": "evaluate", "key": digest.hexdigest()[:20], "label": f"score {file_name} on {scene.name}",
            "owner": owner or default_owner(), "store": str(Path(store.root).resolve()), "shared_disk": shared,
            "resources": {"num_cpus": 1}, "staging_dirs": [f"runs/{safe_name(scene.name)}/imported"],
            "payload": {"scene": str(Path(scene_path).resolve()), "data": data, "file_name": file_name,
                        "views": views, "options": option_values,
                        "scene_files": None if shared else read_folder(Path(scene_path))}}


def submit(spec: dict) -> tuple[str, bool]:
    """Queue ``spec`` or attach to the running job with its key: ``(job id, attached)``."""
    return _call(manager().submit, spec)


def get(job_id: str) -> dict:
    job = _call(manager().get, job_id)
    if job is None:
        raise JobError(f"no job {job_id!r} (python -m core jobs list shows the known ones)")
    return job


def list_jobs(owner: str | None = None, states: list[str] | None = None) -> list[dict]:
    return _call(manager().list, owner, states)


def cancel(job_id: str) -> dict:
    get(job_id)
    return _call(manager().cancel, job_id)


def wait(job_id: str, progress: Callable[[float, str], None] | None = None, timeout: float | None = None,
         poll_s: float = 0.25) -> dict:
    """Follow ``job_id`` until it ends; returns its final record.

    ``progress(fraction, message)`` is called when the job's progress changes. Raises
    :class:`JobError` when it failed or was cancelled (the message is the job's error) and
    ``TimeoutError`` after ``timeout`` seconds.
    """
    started = time.monotonic()
    seen = None
    while True:
        job = get(job_id)
        now = (job["progress"], job["message"])
        if progress is not None and now != seen:
            progress(*now)
            seen = now
        if job["state"] == "done":
            return job
        if job["state"] == "failed":
            raise JobError(f"job {job_id} failed: {job['error']}")
        if job["state"] == "cancelled":
            raise JobError(f"job {job_id} was cancelled; nothing was stored")
        if timeout is not None and time.monotonic() - started > timeout:
            raise TimeoutError(f"job {job_id} still {job['state']} after {timeout:g} s")
        time.sleep(poll_s)
