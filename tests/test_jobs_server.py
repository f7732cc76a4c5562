"""The app server and jobs on Ray together, on loopback: a job outlives a killed server, and a load
test (a hosted class server: 20 visiting sessions browse while 8 runners submit for the teacher,
5 of them the same run).

One local Ray (2 CPUs) and the app (`streamlit run app.py` on 127.0.0.1) for the module; sessions are
websocket clients (tests/streamlit_session.py). Random-tiny VGGT on two views of the sample.
"""
from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "toy"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from streamlit_session import browse  # noqa: E402

# Random-tiny runs are submitted as the pages and the CLI submit them: not scored (scoring random points
# costs ~15 s of CPU per run and means nothing).
TINY = {"weights": "random-tiny"}
SESSIONS = 20
RSS_BOUND_BYTES = 4 * 2**30    # server + Ray (2 workers with torch, manager, GCS, raylet): 2.6 GiB measured


RAY_CPUS = 2    # the server's load test runs two workers side by side (tests/conftest.py: ray_cache)


@pytest.fixture(scope="module")
def scene():
    from core.data.scene import Scene

    return Scene.load(SAMPLE)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(**env) -> tuple[subprocess.Popen, int]:
    """The app on 127.0.0.1 (the module's cache and Ray through the environment, plus ``env``); waits
    until healthy."""
    port = free_port()
    server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "streamlit"), "run", "app.py", "--server.address",
                               "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
                               "--browser.gatherUsageStats", "false"], cwd=ROOT, env={**os.environ, **env},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
            return server, port
        except OSError:
            time.sleep(0.3)
    server.kill()
    raise AssertionError("the app server did not start")


def stop(server: subprocess.Popen) -> None:
    server.kill()
    server.wait(timeout=30)


def random_runs_shown(seen) -> int:
    """The Metrics page's count of stored random-weight runs (its toggle's label)."""
    found = [int(m) for t in seen.texts for m in re.findall(r"Show random-weight runs \((\d+)\)", t)]
    assert len(found) == 1, seen.texts
    return found[0]


def stored_runs(root: Path) -> int:
    return len(list((root / "runs").glob("*/*/*/meta.json")))


def test_job_finishes_when_the_server_is_killed_and_shows_after_restart(ray_cache, scene):
    from core.jobs import client

    server, port = start_server()
    try:
        jobs_page = asyncio.run(browse(port, "jobs"))           # the server joins Ray as a driver
        assert jobs_page.finished and not jobs_page.exceptions
        spec = client.run_spec(scene, SAMPLE, "vggt", [0, 8], TINY, owner="web", score_random_weights=False)
        job_id, _ = client.submit(spec)
        while client.get(job_id)["state"] == "queued":
            time.sleep(0.05)
        stop(server)                                             # kill -9 mid-run
        job = client.wait(job_id, timeout=300)
        assert job["result"]["cached"] is False
        server, port = start_server()
        metrics_page = asyncio.run(browse(port, "metrics"))
        assert metrics_page.finished and not metrics_page.exceptions and not metrics_page.errors
        assert random_runs_shown(metrics_page) == stored_runs(ray_cache) == 1
        shown = {row["id"]: row["state"] for row in asyncio.run(browse(port, "jobs")).frames[0]}
        assert shown == {job_id: "done"}
    finally:
        stop(server)


def test_load_twenty_sessions_while_eight_runners_submit(ray_cache, scene, tmp_path):
    import psutil

    from core.jobs import client, cluster

    teacher = "teacher@school.edu"     # the runners submit on the teacher's behalf; sessions are visitors
    shared = client.run_spec(scene, SAMPLE, "vggt", [5, 13], TINY, owner=teacher, score_random_weights=False)
    distinct = [client.run_spec(scene, SAMPLE, "vggt", views, TINY, owner=teacher, score_random_weights=False)
                for views in ([1, 9], [2, 10], [3, 11])]
    before = stored_runs(ray_cache)
    roles = tmp_path / "roles.toml"
    roles.write_text(f'profile = "class"\ndefault_role = "viewer"\n[users]\n"{teacher}" = "runner"\n')
    server, port = start_server(RECONBENCH_MODE="hosted", RECONBENCH_ROLES=str(roles))   # a class
    peak, sampling = [0], threading.Event()
    ray_folder = str(cluster.temp_dir(ray_cache))

    def sample() -> None:
        while not sampling.is_set():
            total = 0
            for proc in psutil.process_iter(["cmdline", "memory_info"]):
                try:
                    line = " ".join(proc.info["cmdline"] or [])
                    if proc.pid == server.pid or ray_folder in line:
                        total += proc.info["memory_info"].rss
                except (psutil.Error, TypeError):
                    continue
            peak[0] = max(peak[0], total)
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    answers: list = [None] * 8

    def runner(i: int) -> None:
        spec = shared if i < 5 else distinct[i - 5]
        job_id, _ = client.submit(spec)
        answers[i] = client.wait(job_id, timeout=600)

    async def sessions(page: str):
        return await asyncio.gather(*(browse(port, page, timeout=600) for _ in range(SESSIONS)))

    try:
        runners = [threading.Thread(target=runner, args=(i,)) for i in range(8)]
        for thread in runners:
            thread.start()
        during = asyncio.run(sessions("metrics"))                # browsing while the runs compute
        for thread in runners:
            thread.join()
        after_metrics = asyncio.run(sessions("metrics"))
        after_jobs = asyncio.run(sessions("jobs"))
    finally:
        sampling.set()
        sampler.join()
        stop(server)
    for seen in during + after_metrics + after_jobs:
        assert seen.finished and not seen.exceptions and not seen.errors
    jobs = {a["id"]: a for a in answers}
    assert len({a["id"] for a in answers[:5]}) == 1                    # the five shared submits: one job
    assert len(jobs) == 4 and all(not a["result"]["cached"] for a in jobs.values())
    assert len({a["result"]["key"] for a in jobs.values()}) == 4
    assert stored_runs(ray_cache) == before + 4
    assert all(random_runs_shown(seen) == before + 4 for seen in after_metrics)
    assert all(client.get(job_id)["state"] == "done" for job_id in jobs)
    for seen in after_jobs:          # a visitor sees no one else's jobs (admins see every job)
        assert not seen.frames and "No jobs yet" in seen.all_text()
    print(f"peak RSS of the server and the Ray processes: {peak[0] / 2**30:.2f} GiB")
    assert 0 < peak[0] < RSS_BOUND_BYTES
