"""Submitting, following and cancelling jobs from any process (pages, CLI, studies).

Every function joins the cluster (:func:`core.jobs.cluster.connect`) and talks to the one job
manager (:class:`core.jobs.manager.JobManager`), creating it on first use. A spec is a dict::

    {"kind": "run" | "evaluate" | "scaling" | "score" | "lmnet-train" | "prepare" | "attention" |
     "attribution" | "tracks", "key": str,
     "label": str, "owner": str, "store": str (the store root), "shared_disk": bool,
     "resources": {"num_cpus", "num_gpus", "memory"}, "staging_dirs": [folders relative to the
     store], "staging_keys": [keys whose ``.tmp-<key>*`` staging a failure removes; default: the
     job's key], "payload": {...}}

:func:`run_spec`, :func:`evaluate_spec`, :func:`scaling_spec`, :func:`score_spec`,
:func:`lmnet_train_spec`, :func:`prepare_spec` (its ``replace_folders``: the returned scene
folder replaces an earlier one), and the attention viewer's :func:`attention_spec`,
:func:`attribution_spec` and :func:`tracks_spec` build them (the key is the run key, so a second
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


def scaling_spec(scene, scene_path: Path | str, methods: dict, view_counts: list[int], repeats: int = 1,
                 seed: int = 0, store=None, owner: str | None = None, shared_disk: bool | None = None) -> dict:
    """The spec of a view-count scaling study (:func:`core.studies.scaling.run_studies`), validated
    here (:func:`core.studies.scaling.check_study`). Its key hashes the scene name and the run keys
    of every planned run (which cover methods, options, views, pixels and ground truth) with the
    view counts, repeats and seed: the same study asked twice is one job. It asks for the most
    any of its methods asks for (its runs go one after another in one worker)."""
    from core import options as opts
    from core.jobs.tasks import read_folder
    from core.models import registry
    from core.store.cache import RunStore, safe_name
    from core.studies import scaling

    store = store or RunStore()
    parsed, counts = scaling.check_study(scene, methods, view_counts)
    repeats = max(1, int(repeats))
    runs = scaling.planned_runs(scene, parsed, counts, repeats, seed)
    shared = cluster.shared_disk() if shared_disk is None else shared_disk
    gpus = gpus_in_cluster()
    wanted = [registry.get(name).resources(options, gpus) for name, options in parsed.items()]
    memory = [w["memory"] for w in wanted if w.get("memory")]
    resources = {"num_cpus": max(w.get("num_cpus") or 1 for w in wanted),
                 "num_gpus": max(w.get("num_gpus") or 0 for w in wanted), "memory": max(memory) if memory else None}
    digest = hashlib.sha256(json.dumps(["scaling", scene.name, [key for *_, key in runs], counts, repeats, int(seed)])
                            .encode()).hexdigest()[:20]
    return {"kind": "scaling", "key": digest,
            "label": f"scaling study: {', '.join(parsed)} on {scene.name} ({len(runs)} runs)",
            "owner": owner or default_owner(), "store": str(Path(store.root).resolve()), "shared_disk": shared,
            "resources": resources,
            "staging_dirs": [f"runs/{safe_name(scene.name)}/{safe_name(name)}" for name in parsed],
            "staging_keys": sorted({key for *_, key in runs}),
            "payload": {"scene": str(Path(scene_path).resolve()), "view_counts": counts, "repeats": repeats,
                        "seed": int(seed), "methods": {name: opts.as_dict(o) for name, o in parsed.items()},
                        "scene_files": None if shared else read_folder(Path(scene_path))}}


def score_spec(scene, scene_path: Path | str, method: str, key: str, options=None, store=None,
               owner: str | None = None, shared_disk: bool | None = None) -> dict:
    """The spec of scoring a stored run (:func:`core.runner.evaluate_run`); key: the run key and
    the evaluation options (None = the defaults), so two requests to score one run the same way
    are one job."""
    from core.jobs.tasks import read_folder
    from core.runner import evaluation_options_dict
    from core.store.cache import RunStore

    store = store or RunStore()
    if not store.has(scene.name, method, key):
        raise UserError(f"no stored run {method}/{key} of scene {scene.name}")
    shared = cluster.shared_disk() if shared_disk is None else shared_disk
    option_values = evaluation_options_dict(options)
    digest = hashlib.sha256(json.dumps(["score", scene.name, method, key, option_values], sort_keys=True,
                                       default=str).encode()).hexdigest()[:20]
    return {"kind": "score", "key": digest, "label": f"score {method} run {key[:8]} on {scene.name}",
            "owner": owner or default_owner(), "store": str(Path(store.root).resolve()), "shared_disk": shared,
            "resources": {"num_cpus": 1}, "staging_dirs": [],
            "payload": {"scene": str(Path(scene_path).resolve()), "method": method, "key": key,
                        "options": option_values,
                        "scene_files": None if shared else read_folder(Path(scene_path)),
                        "run_files": None if shared else read_folder(store.run_dir(scene.name, method, key))}}


def lmnet_train_spec(options, restart: bool = False, owner: str | None = None,
                     shared_disk: bool | None = None) -> dict:
    """The spec of a 3D-LMNet training (``options``: :class:`core.models.lmnet.train.TrainOptions`),
    checked here (model configuration, data layout). Its key hashes the options (data and run
    folders as absolute paths), ``restart`` and the data's ``splits.json``: the same training asked
    twice is one job. The worker writes the run folder itself, so it must share this disk."""
    import dataclasses

    from core.models.lmnet import data as lm_data
    from core.store.cache import RunStore

    shared = cluster.shared_disk() if shared_disk is None else shared_disk
    if not shared:
        raise UserError("training as a job writes its run folder on this disk, and the workers do not share it "
                        "(RECONBENCH_RAY_SHARED_DISK=0); train with --inline or on a worker that shares the disk")
    out, data = Path(options.out).resolve(), Path(options.data).resolve()
    options = dataclasses.replace(options, out=str(out), data=str(data))
    try:
        options.model_config()
    except ValueError as error:
        raise UserError(str(error)) from None
    lm_data.list_models(data, "train")           # a bad data folder fails here, before queueing
    values = dataclasses.asdict(options)
    digest = hashlib.sha256(json.dumps(["lmnet-train", values, bool(restart)], sort_keys=True, default=list).encode())
    splits = data / "splits.json"
    if splits.is_file():
        digest.update(splits.read_bytes())
    total = options.ae_steps + options.latent_steps
    return {"kind": "lmnet-train", "key": digest.hexdigest()[:20],
            "label": f"3D-LMNet {options.variant} training → {out.name} ({total} steps)",
            "owner": owner or default_owner(), "store": str(Path(RunStore().root).resolve()), "shared_disk": True,
            "resources": {"num_cpus": max(1, int(options.threads))}, "staging_dirs": [],
            "payload": {"options": values, "restart": bool(restart),
                        "created_folder": not out.is_dir() or not any(out.iterdir())}}


def _preparation_cpus(threads: int) -> int:
    """CPUs a preparation asks Ray for: its COLMAP threads (-1, all cores: one), at most the
    cluster's CPUs (more could never be scheduled)."""
    import ray

    if threads <= 1:
        return 1
    cluster.connect()
    return int(max(1, min(threads, ray.cluster_resources().get("CPU", 1))))


def prepare_spec(images: list, names: list[str], out: Path | str, scene_name: str | None = None, options=None,
                 is_video: bool = False, provenance: dict | None = None, owner: str | None = None,
                 shared_disk: bool | None = None, files: list | None = None) -> dict:
    """The spec of preparing a scene (:func:`core.data.prepare.pipeline.prepare`) from decoded
    ``images`` (N ``uint8 HxWx3`` of one size, already checked against the limits by
    :func:`core.data.prepare.frames.load_images` or the video sampler) into the folder ``out``.

    Checked here, before anything is queued: at least 3 images of one size, and ``out`` absent,
    empty or an earlier preparation. The key hashes the images' pixels (with their shapes), the
    names, the options, the scene name, the destination folder, ``is_video`` and the provenance,
    so two identical requests attach to one job. The job's ``store`` is ``out``'s parent folder
    and its result folder ``out.name`` (its staging ``.tmp-<key>-*`` lives there too); without a
    shared disk the scene comes back as bytes and replaces ``out`` (``replace_folders``).

    The images travel in the payload (through Ray's object store) as their compressed files where
    there are some: ``files[i]``, when given and not None, is the file ``images[i]`` was decoded
    from as it is (:func:`core.data.prepare.frames.load_image_files`) and its bytes are sent; the
    worker decodes them and checks each against the SHA-256 of the pixels sent along (the key is
    built from the same pixels). Any other image (a video frame, a resized image) is sent as its
    pixels (a lossless PNG would cost more time to encode than its smaller copy saves).
    """
    import numpy as np

    from core import options as opts
    from core.data.prepare import MIN_VIEWS, DatasetError
    from core.data.prepare.pipeline import PrepareOptions, check_destination

    out = Path(out).resolve()
    parsed = opts.parse(PrepareOptions, options)
    if len(images) < MIN_VIEWS:
        raise DatasetError(f"at least {MIN_VIEWS} images are needed; got {len(images)}")
    if len({np.shape(image) for image in images}) != 1:
        raise DatasetError("all images must have one size (see load_images(resize=True))")
    if len(names) != len(images):
        raise ValueError(f"{len(images)} images but {len(names)} names")
    check_destination(out)
    name = scene_name or out.name
    if files is not None and len(files) != len(images):
        raise ValueError(f"{len(images)} images but {len(files)} files")
    digest = hashlib.sha256()
    views, pixels = [], []
    for i, image in enumerate(images):
        image = np.ascontiguousarray(image)
        digest.update(f"{image.shape}{image.dtype}".encode())
        digest.update(image.tobytes())
        pixels.append(hashlib.sha256(image.tobytes()).hexdigest())
        views.append(Path(files[i]).read_bytes() if files is not None and files[i] is not None else image)
    digest.update(json.dumps([list(names), opts.as_dict(parsed), name, str(out), bool(is_video), provenance or {}],
                             sort_keys=True, default=str).encode())
    key = digest.hexdigest()[:20]
    shared = cluster.shared_disk() if shared_disk is None else shared_disk
    return {"kind": "prepare", "key": key, "label": f"prepare {name} ({len(images)} images)",
            "owner": owner or default_owner(), "store": str(out.parent), "shared_disk": shared,
            "resources": {"num_cpus": _preparation_cpus(parsed.num_threads)}, "staging_dirs": ["."],
            "replace_folders": True,
            "payload": {"views": views, "pixels": pixels, "shape": list(np.shape(images[0])),
                        "names": list(names), "out": str(out), "folder": out.name,
                        "scene_name": name, "options": opts.as_dict(parsed), "is_video": bool(is_video),
                        "provenance": provenance or {}, "key": key}}


def attention_spec(scene, view_ids: list[int], weights: str = "pretrained", checkpoint: str = "vggt-1b",
                   checkpoint_path: str = "", preprocess: str = "crop", layers: list[int] | None = None,
                   half: bool = False, store=None, owner: str | None = None, shared_disk: bool | None = None) -> dict:
    """The spec of the attention viewer's capture (kind ``attention``,
    :func:`core.jobs.tasks.attention_job`) of ``scene.images[v]`` for ``v`` in ``view_ids``.

    Checked here, before anything is queued: a checkpoint path in hosted mode, no or out-of-range
    views, layers outside the model's trunk, options and weights availability (like a run's). The
    key is :func:`core.studies.attention_store.capture_key` (two requests for one capture attach to
    one job; a page looks for the stored folder first, :func:`core.studies.attention_store.find`).
    The views' pixels travel in the payload (a scene folder is not needed on the worker); the
    capture comes back as a folder (``attention/<key>``) where the worker does not share the disk.
    """
    from core.models.vggt import VGGTConfig
    from core.options import refuse_paths_when_hosted
    from core.store.cache import RunStore
    from core.studies import attention_store
    from core.studies.attention import vggt_options

    refuse_paths_when_hosted({"checkpoint_path": checkpoint_path})
    views = [int(v) for v in view_ids]
    if not views:
        raise UserError("choose at least one view")
    outside = [v for v in views if not 0 <= v < scene.num_views]
    if outside:
        raise UserError(f"view {outside[0]} is out of range: the scene has views 0..{scene.num_views - 1}")
    options = vggt_options(weights, checkpoint, checkpoint_path)
    depth = (VGGTConfig.tiny() if options.weights == "random-tiny" else VGGTConfig()).depth
    if layers is not None and not all(0 <= int(l) < depth for l in layers):
        raise UserError(f"capture layers must be in 0..{depth - 1}; got {list(layers)}")
    store = store or RunStore()
    key = attention_store.capture_key(scene, views, weights, checkpoint, checkpoint_path, preprocess, layers, half)
    shared = cluster.shared_disk() if shared_disk is None else shared_disk
    return {"kind": "attention", "key": key,
            "label": f"attention capture: VGGT ({weights}) on {scene.name} ({len(views)} views)",
            "owner": owner or default_owner(), "store": str(Path(store.root).resolve()), "shared_disk": shared,
            "resources": {"num_cpus": 1}, "staging_dirs": [attention_store.FOLDER],
            "payload": {"key": key, "scene_name": scene.name, "view_ids": views,
                        "images": [scene.images[v] for v in views], "weights": weights, "checkpoint": checkpoint,
                        "checkpoint_path": checkpoint_path, "preprocess": preprocess,
                        "layers": None if layers is None else [int(l) for l in layers], "half": bool(half)}}


def _capture_payload(session, store, shared: bool) -> dict:
    """What an attribution or tracking job needs of a stored capture: its key, the model's options,
    and (without a shared disk) its network inputs."""
    import numpy as np

    from core.studies import attention_store

    if not session.key or not attention_store.is_complete(Path(store.root) / attention_store.relative_folder(session.key)):
        raise UserError("this attention session is not stored in the cache; run the capture as a job first")
    return {"capture": session.key, "weights": session.weights, "checkpoint": session.checkpoint,
            "checkpoint_path": session.checkpoint_path,
            "inputs": None if shared else np.array(session.inputs, np.float32)}


def attribution_spec(session, frame: int, pixel: tuple[int, int], target: str = "point-distance",
                     layer: int | None = None, checkpointing: bool = True, store=None, owner: str | None = None,
                     shared_disk: bool | None = None) -> dict:
    """The spec of a clicked pixel's gradient attribution (kind ``attribution``,
    :func:`core.jobs.tasks.attribution_job`) on a stored capture (``session`` from
    :func:`core.studies.attention_store.find`). Checked here: the pixel, target, frame and layer
    (:func:`core.studies.attribution.validate`). Key:
    :func:`core.studies.attention_store.attribution_key`; the maps are stored beside the capture."""
    from core.store.cache import RunStore
    from core.studies import attention_store
    from core.studies.attribution import validate

    store = store or RunStore()
    config = session.config()
    layer = config.depth - 1 if layer is None else int(layer)
    s, _, h, w = session.inputs.shape
    validate(config, s, h, w, int(frame), pixel, target, layer)
    shared = cluster.shared_disk() if shared_disk is None else shared_disk
    payload = _capture_payload(session, store, shared)
    key = attention_store.attribution_key(session.key, frame, pixel, target, layer, checkpointing)
    return {"kind": "attribution", "key": key,
            "label": f"attribution of {target} at ({int(pixel[0])}, {int(pixel[1])}) of view "
                     f"{session.view_ids[int(frame)]} (capture {session.key[:8]})",
            "owner": owner or default_owner(), "store": str(Path(store.root).resolve()), "shared_disk": shared,
            "resources": {"num_cpus": 1}, "staging_dirs": [],
            "payload": {**payload, "key": key, "frame": int(frame), "pixel": [int(pixel[0]), int(pixel[1])],
                        "target": target, "layer": layer, "checkpointing": bool(checkpointing)}}


def tracks_spec(session, frame: int, points, store=None, owner: str | None = None,
                shared_disk: bool | None = None) -> dict:
    """The spec of tracking clicked pixels ``points [N,2]`` (network x, y of view ``frame``) with
    VGGT's tracking head (kind ``tracks``, :func:`core.jobs.tasks.tracks_job`) on a stored capture.
    Checked here: the frame and the points (:func:`core.studies.attention.validate_queries`). Key:
    the capture key, the frame and the points; the tracks come back in the job's result."""
    from core.store.cache import RunStore
    from core.studies.attention import validate_queries

    store = store or RunStore()
    s, _, h, w = session.inputs.shape
    if not 0 <= int(frame) < s:
        raise UserError(f"view {frame} is out of range: {s} view(s) were captured")
    queries = validate_queries(points, h, w)
    shared = cluster.shared_disk() if shared_disk is None else shared_disk
    payload = _capture_payload(session, store, shared)
    key = hashlib.sha256(json.dumps(["tracks", session.key, int(frame), queries.tolist()]).encode()).hexdigest()[:20]
    return {"kind": "tracks", "key": key,
            "label": f"track {len(queries)} point(s) of view {session.view_ids[int(frame)]} "
                     f"(capture {session.key[:8]})",
            "owner": owner or default_owner(), "store": str(Path(store.root).resolve()), "shared_disk": shared,
            "resources": {"num_cpus": 1}, "staging_dirs": [],
            "payload": {**payload, "key": key, "frame": int(frame), "points": queries.tolist()}}


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
            raise JobError(f"job {job_id} was {job['message']}")
        if timeout is not None and time.monotonic() - started > timeout:
            raise TimeoutError(f"job {job_id} still {job['state']} after {timeout:g} s")
        time.sleep(poll_s)
