"""The job table: a detached Ray actor that queues, runs, tracks and persists every job.

One manager per Ray cluster, named ``jobs`` in the ``reconbench`` namespace and detached, so it
outlives the process (Streamlit server, CLI call) that created it. It owns every job's task:
a job keeps running when the page or the CLI that asked for it goes away.

A job record (a JSON-able dict) holds ``id``, ``key`` (the run key or preparation key; jobs with
the same ``kind``, ``store`` and ``key`` are one computation), ``kind``, ``label``, ``owner``,
``state`` (``queued`` | ``running`` | ``done`` | ``failed`` | ``cancelled``), ``progress``
(fraction in [0, 1]) and ``message``, ``eta_seconds`` (from the progress rate; None until 5 %),
``error`` (one line), ``created`` / ``started`` / ``finished`` (Unix seconds), ``attached``
(how many submits joined it), ``worker`` (pid and node of the task) and ``result`` (the
kind's JSON summary). Records are written to ``<jobs dir>/<id>.json`` atomically on every change
of state (progress at most every 2 s), so a restarted manager lists them; jobs that were queued
or running when a manager went away are marked failed ("the job manager stopped").

Lifecycle of a job's task (:func:`core.jobs.tasks.execute`): it tells the manager it started,
reports progress (throttled to 2 per second; each report returns whether a cancel was asked),
and asks :meth:`JobManager.commit` before it writes anything to the store: a cancel that comes
earlier wins (nothing is stored), one that comes later is refused ("already storing"). A task
whose worker dies (killed, out of memory) leaves its job ``failed`` with Ray's reason and its
staging folders (``.tmp-*`` of its run(s)) removed and a swap it interrupted finished (a scene
renamed aside whose replacement never got in is put back, :mod:`core.store.swap`), plus what the
kind's cleaner removes
(:data:`core.jobs.tasks.CLEANERS`: a training's run folder that it created and that holds no
checkpoint). Tasks run with ``max_retries=0``: a retry is a
new submit.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import ray

from core.store.swap import recover_swaps, swap_into_place

log = logging.getLogger(__name__)

ACTOR_NAME = "jobs"
ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled")
PERSIST_PROGRESS_EVERY_S = 2.0


def _write_json(path: Path, data: dict) -> None:
    staging = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:6]}")
    staging.write_text(json.dumps(data, default=str))
    os.replace(staging, path)


def write_folders(store_root: Path | str, folders: dict[str, dict[str, bytes]], replace: bool = False) -> list[str]:
    """Store result folders returned by a worker that does not share the store's disk.

    ``folders`` maps a folder path relative to ``store_root`` (``runs/<scene>/<method>/<key>``,
    or a prepared scene's folder name beside its siblings) to ``{file name: bytes}``. Each folder
    is written under a staging name beside its final place and renamed into place, so it appears
    whole or not at all; a folder already complete (its ``meta.json`` or ``scene.json`` present)
    is kept as it is, unless ``replace`` (a new preparation of a scene): then the old folder is
    renamed aside, the new one renamed in, and the old one removed (put back if the second rename
    fails, by :func:`core.store.swap.recover_swaps` after a crash between the renames). Returns
    the folders written.
    """
    root = Path(store_root).resolve()
    written = []
    for relative, files in folders.items():
        final = (root / relative).resolve()
        if root not in final.parents:
            raise ValueError(f"result folder {relative!r} leaves the store")
        if not replace and final.is_dir() and any((final / marker).is_file() for marker in ("meta.json", "scene.json")):
            continue
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        try:
            for name, data in files.items():
                target = (staging / name).resolve()
                if staging.resolve() not in target.parents:
                    raise ValueError(f"result file {name!r} leaves its folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            if replace:
                swap_into_place(staging, final)
                written.append(relative)
            else:
                try:
                    os.rename(staging, final)
                    written.append(relative)
                except OSError:
                    if not final.is_dir():
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return written


def write_files(store_root: Path | str, files: dict[str, bytes]) -> list[str]:
    """Store single files returned by a worker that does not share the store's disk (an
    evaluation added to a run folder that is already stored, an attribution added to a stored
    attention capture): ``{path relative to the store: bytes}``, each written atomically, only
    inside an existing complete run or capture folder (its ``meta.json`` present; the file in it or
    in its ``evaluations/`` or ``attributions/``). Returns the files written."""
    from core.data.scene import atomic_write_bytes

    root = Path(store_root).resolve()
    written = []
    for relative, data in files.items():
        target = (root / relative).resolve()
        if root not in target.parents:
            raise ValueError(f"result file {relative!r} leaves the store")
        run = target.parent.parent if target.parent.name in ("evaluations", "attributions") else target.parent
        if not (run / "meta.json").is_file():
            raise ValueError(f"result file {relative!r} is not in a stored run")
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
        written.append(relative)
    return written


@ray.remote(num_cpus=0, max_concurrency=64, max_restarts=-1)
class JobManager:
    """See the module docstring. Every method is safe to call concurrently."""

    def __init__(self, jobs_dir: str) -> None:
        self.dir = Path(jobs_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.jobs: dict[str, dict] = {}
        self.refs: dict[str, ray.ObjectRef] = {}
        self.cancel_asked: set[str] = set()
        self.persisted_at: dict[str, float] = {}
        for path in sorted(self.dir.glob("*.json")):
            try:
                job = json.loads(path.read_text())
                if not isinstance(job, dict) or "id" not in job:
                    raise ValueError("not a job record")
            except (OSError, ValueError) as error:
                log.warning("skipping unreadable job record %s: %s", path, error)
                continue
            if job.get("state") in ACTIVE:
                job.update(state="failed", error="the job manager stopped while this job was "
                           f"{job['state']}; submit it again", finished=time.time())
                _write_json(path, job)
            self.jobs[job["id"]] = job

    # ------------------------------------------------------------------ bookkeeping
    def _save(self, job: dict) -> None:
        _write_json(self.dir / f"{job['id']}.json", job)
        self.persisted_at[job["id"]] = time.time()

    @staticmethod
    def _identity(job: dict) -> tuple:
        return job["kind"], job.get("store"), job["key"]

    # ------------------------------------------------------------------ API for clients
    def submit(self, spec: dict) -> tuple[str, bool]:
        """Queue ``spec`` (see :func:`core.jobs.client.submit`) or attach to the queued or
        running job with the same kind, store and key. Returns ``(job id, attached)``."""
        with self.lock:
            for job in self.jobs.values():
                if job["state"] in ACTIVE and self._identity(job) == self._identity(spec):
                    job["attached"] += 1
                    self._save(job)
                    return job["id"], True
            job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
            job = {"id": job_id, "key": spec["key"], "kind": spec["kind"], "label": spec.get("label", ""),
                   "owner": spec.get("owner", ""), "store": spec.get("store"), "state": "queued",
                   "progress": 0.0, "message": "queued", "eta_seconds": None, "error": None,
                   "created": time.time(), "started": None, "finished": None, "attached": 0,
                   "resources": spec.get("resources") or {}, "worker": None, "result": None}
            self.jobs[job_id] = job
            self._save(job)
            from core.jobs.tasks import execute

            resources = {k: v for k, v in job["resources"].items() if v}
            ref = execute.options(max_retries=0, name=f"{job['kind']}:{job['label']}"[:60],
                                  **resources).remote(spec, job_id, ray.get_runtime_context().current_actor)
            self.refs[job_id] = ref
        threading.Thread(target=self._watch, args=(job_id, ref, spec), daemon=True).start()
        return job_id, False

    def get(self, job_id: str) -> dict | None:
        with self.lock:
            job = self.jobs.get(job_id)
            return dict(job) if job else None

    def list(self, owner: str | None = None, states: list[str] | None = None) -> list[dict]:
        """Jobs, newest first; only ``owner``'s when given, only in ``states`` when given."""
        with self.lock:
            jobs = [dict(j) for j in self.jobs.values()
                    if (owner is None or j.get("owner") == owner) and (not states or j["state"] in states)]
        return sorted(jobs, key=lambda j: j["created"], reverse=True)

    def cancel(self, job_id: str) -> dict:
        """Ask a job to stop. A queued job is removed from Ray's queue; a running one stops at its
        next progress report (before it stores anything). Returns the record (unchanged when the
        job had already finished or was storing its result)."""
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise KeyError(job_id)
            if job["state"] not in ACTIVE or job.get("committing"):
                return dict(job)
            self.cancel_asked.add(job_id)
            job["message"] = "cancelling"
            if job["state"] == "queued":
                ray.cancel(self.refs[job_id], force=False)
                self._finish(job, "cancelled", error=None)
            self._save(job)
            return dict(job)

    # ------------------------------------------------------------------ API for tasks
    def started(self, job_id: str, worker: dict) -> bool:
        """A task began; returns True when it must stop (cancelled while it was queued)."""
        with self.lock:
            job = self.jobs[job_id]
            if job_id in self.cancel_asked or job["state"] != "queued":
                return True
            job.update(state="running", started=time.time(), worker=worker, message="started")
            self._save(job)
            return False

    def report(self, job_id: str, fraction: float, message: str) -> bool:
        """Progress of a running task; returns True when it must stop."""
        with self.lock:
            job = self.jobs[job_id]
            if job["state"] != "running":
                return True
            now = time.time()
            job["progress"], job["message"] = float(fraction), str(message)[:200]
            elapsed = now - (job["started"] or now)
            job["eta_seconds"] = elapsed * (1 - fraction) / fraction if fraction >= 0.05 else None
            if now - self.persisted_at.get(job_id, 0) >= PERSIST_PROGRESS_EVERY_S:
                self._save(job)
            return job_id in self.cancel_asked

    def stop_asked(self, job_id: str) -> bool:
        """Whether a running task must stop (a cancel was asked): what a job that stores one
        result per step (a study) asks before each write, without taking the commit."""
        with self.lock:
            job = self.jobs[job_id]
            return job_id in self.cancel_asked or job["state"] != "running"

    def commit(self, job_id: str) -> bool:
        """The task is about to store its result: True lets it (and refuses later cancels),
        False means the job was cancelled and must store nothing."""
        with self.lock:
            job = self.jobs[job_id]
            if job_id in self.cancel_asked or job["state"] != "running":
                return False
            job["committing"] = True
            return True

    # ------------------------------------------------------------------ completion
    def _finish(self, job: dict, state: str, error: str | None, result: dict | None = None) -> None:
        job.update(state=state, error=error, finished=time.time(), eta_seconds=None)
        job.pop("committing", None)
        if state == "done":
            job.update(progress=1.0, message="done", result=result)
        elif state == "cancelled":
            from core.jobs.tasks import GATE_EVERY_WRITE

            job["message"] = ("cancelled; nothing further was stored (the steps finished before stay)"
                              if job["kind"] in GATE_EVERY_WRITE else "cancelled; nothing was stored")
        else:
            job["message"] = "failed"
        self.refs.pop(job["id"], None)
        self.cancel_asked.discard(job["id"])
        self._save(job)

    def _watch(self, job_id: str, ref, spec: dict) -> None:
        try:
            outcome = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            outcome = {"state": "cancelled"}
        except ray.exceptions.RayTaskError as error:     # a bug in the job's code
            cause = error.cause if getattr(error, "cause", None) is not None else error
            outcome = {"state": "failed", "error": f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"}
        except ray.exceptions.RayError as error:         # the worker died: killed, out of memory...
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            outcome = {"state": "failed", "error": f"the worker running this job died ({type(error).__name__}: {first})"}
        if outcome.get("state") == "done" and (outcome.get("folders") or outcome.get("files")):
            try:
                write_folders(spec["store"], outcome.pop("folders", None) or {}, replace=spec.get("replace_folders", False))
                write_files(spec["store"], outcome.pop("files", None) or {})
            except (OSError, ValueError) as error:
                outcome = {"state": "failed", "error": f"could not store the result: {error}"}
        if outcome.get("state") != "done":
            self._clean_staging(spec)
        with self.lock:
            job = self.jobs[job_id]
            state = outcome.get("state", "failed")
            self._finish(job, state, outcome.get("error"), outcome.get("result"))

    @staticmethod
    def _clean_staging(spec: dict) -> None:
        """Remove the staging folders a failed job's task may have left (``.tmp-<key>-*`` in its
        ``staging_dirs``, relative to its store) and finish the swaps it may have interrupted there
        (:func:`core.store.swap.recover_swaps`: a folder renamed aside whose replacement never got
        in is put back)."""
        from core.jobs.tasks import CLEANERS

        root = Path(spec.get("store") or ".")
        for folder in spec.get("staging_dirs") or []:
            parent = root / folder
            for key in spec.get("staging_keys") or [spec["key"]]:
                for leftover in parent.glob(f".tmp-{key}*"):
                    shutil.rmtree(leftover, ignore_errors=True)
            recover_swaps(parent)
        if spec["kind"] in CLEANERS:
            CLEANERS[spec["kind"]](spec)
