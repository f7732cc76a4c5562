"""Shared fixtures: the bundled sample scene, an isolated run store, PLY writing."""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
# Tests compute in-process unless they test jobs on Ray (tests/test_jobs*.py set "ray"): a local Ray
# per test would cost seconds each. Subprocesses (CLI tests) inherit this.
os.environ.setdefault("RECONBENCH_EXECUTOR", "inline")
sys.path.insert(0, str(ROOT))
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SAMPLE = ROOT / "sample_data" / "toy"


@pytest.fixture(scope="session")
def sample_scene():
    from core.data.scene import Scene

    return Scene.load(SAMPLE)


@pytest.fixture(scope="module")
def ray_cache(request, tmp_path_factory):
    """A cache root with its own local Ray instance, jobs (not inline) for the requesting module;
    the module's ``RAY_CPUS`` (default 1) sizes the instance. Stopped when the module ends."""
    from core.jobs import cluster

    root = tmp_path_factory.mktemp("jobs") / "cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECONBENCH_CACHE", str(root))
        patch.setenv("RECONBENCH_EXECUTOR", "ray")
        patch.delenv("RECONBENCH_RAY_ADDRESS", raising=False)
        cluster.start_local(root, num_cpus=getattr(request.module, "RAY_CPUS", 1))
        cluster.connect(root)
        yield root
        cluster.stop_local(root)


def submit_concurrently(spec: dict, times: int) -> list[tuple[str, bool]]:
    """Submit ``spec`` from ``times`` threads at once; each thread's ``(job id, attached)``."""
    import threading

    from core.jobs import client

    answers: list = [None] * times

    def submit(i: int) -> None:
        answers[i] = client.submit(spec)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def wait_state(job_id: str, states: tuple[str, ...], timeout: float = 60.0) -> dict:
    """Poll the job table until ``job_id`` is in one of ``states``; its record (AssertionError after
    ``timeout`` seconds)."""
    import time

    from core.jobs import client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(job_id)
        if job["state"] in states:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {states}: {client.get(job_id)}")


def run_page_job(page, button: str, slot: str, timeout: float = 180.0) -> dict:
    """Press a page's submit ``button`` (an AppTest past its inputs) and check the page submitted a
    job into session-state ``slot`` with the job's id in the URL (so a reload follows it); wait for
    the job, rerun the page (its follower sees the end) and return the job's final record."""
    from core.jobs import client

    page.button(key=button).click()
    page.run()
    assert not page.exception and not page.error, [e.value for e in page.error]
    job_id = page.session_state[slot]
    assert page.query_params["job"] == job_id
    job = client.wait(job_id, timeout=timeout)
    page.run()
    assert not page.exception
    return job


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for the module, restored afterwards. Tiny models and problems run
    far faster single-threaded on a shared 2-core machine (two OpenMP threads can be 10x slower).
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def load_reference(name: str) -> tuple[dict, dict]:
    """A conformance fixture ``tests/fixtures/<name>`` (safetensors, made with the authors' code):
    ``({tensor name: tensor}, metadata)``."""
    from safetensors import safe_open

    with safe_open(str(FIXTURES / name), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def prefixed(tensors: dict, prefix: str) -> dict:
    """The tensors whose names start with ``prefix``, with the prefix removed (e.g. ``weights.``)."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_vggt_reference() -> tuple[dict, dict]:
    """The VGGT conformance fixture (tiny config): ``(config kwargs, {name: tensor})``; tensor
    names are ``weights.*``, ``input.*`` and ``output.*``."""
    import json

    tensors, metadata = load_reference("vggt_tiny_reference.safetensors")
    return json.loads(metadata["config"]), tensors


@pytest.fixture()
def isolated_cache(tmp_path, monkeypatch):
    """Point the run store at an empty temporary folder (the app and CLI read $RECONBENCH_CACHE)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("RECONBENCH_CACHE", str(root))
    return root


def ply_bytes(points: np.ndarray, colors: np.ndarray | None = None) -> bytes:
    """A binary PLY point cloud, written by hand (independent of the importer's reader)."""
    points = np.asarray(points, dtype=np.float32)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(points)}",
              "property float x", "property float y", "property float z"]
    dtype = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
        dtype += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    header.append("end_header")
    rows = np.empty(len(points), dtype=dtype)
    rows["x"], rows["y"], rows["z"] = points.T
    if colors is not None:
        rows["red"], rows["green"], rows["blue"] = np.asarray(colors, dtype=np.uint8).T
    buffer = io.BytesIO()
    buffer.write(("\n".join(header) + "\n").encode())
    buffer.write(rows.tobytes())
    return buffer.getvalue()


def known_sim3(seed: int = 3):
    from core import geometry

    rng = np.random.default_rng(seed)
    return geometry.sim3_matrix(float(rng.uniform(0.3, 3.0)), geometry.random_rotation(rng), rng.normal(size=3) * 2)


# Scheduling hint for pytest-xdist (run.sh: --dist loadfile hands whole files to idle workers in
# collection order): the slowest files go first, so no worker is left alone with a long file at
# the end. Order only; no effect on what any test does. The job files (each a local Ray instance; the
# longest files of the suite) lead, longest first: measured single-thread at load 3-5, test_jobs.py
# and test_jobs_batch.py ~100 s each, test_jobs_studies.py and test_jobs_server.py ~63 s,
# test_jobs_prepare.py 56 s; test_jobs_attention.py 44-50 s at load 1 (8-11 s of it Ray's start).
SLOW_FILES_FIRST = ("test_jobs.py", "test_jobs_batch.py", "test_jobs_studies.py", "test_jobs_server.py",
                    "test_jobs_prepare.py", "test_jobs_attention.py", "test_sfm.py", "test_page_dataset.py", "test_pages_methods.py",
                    "test_combined.py", "test_pi3_method.py", "test_benchmarks.py", "test_scaling.py", "test_evaluate_cli.py",
                    "test_da3_method.py", "test_method_contract.py", "test_mvs.py", "test_pages_metrics.py",
                    "test_dust3r_model.py", "test_pointe_method.py", "test_metrics.py", "test_page_attention.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: position for position, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
