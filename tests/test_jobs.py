"""Jobs on Ray: dedup by run key, cancel, a worker killed mid-run, results from a worker that does
not share the store's disk. One local Ray instance (1 CPU, so one warm worker) for the module, random-tiny VGGT on
two views of the bundled sample."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_page_job, submit_concurrently, wait_state

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "toy"
TINY = {"weights": "random-tiny"}


@pytest.fixture(scope="module")
def scene():
    from core.data.scene import Scene

    return Scene.load(SAMPLE)


def spec_for(scene, views, **kwargs):
    from core.jobs import client

    return client.run_spec(scene, SAMPLE, "vggt", views, TINY, **kwargs)




def run_folders(root: Path) -> list[Path]:
    return sorted(p for p in (root / "runs").glob("*/*/*") if p.is_dir()) if (root / "runs").is_dir() else []


def test_same_key_submitted_concurrently_computes_once(ray_cache, scene):
    from core.jobs import client

    spec = spec_for(scene, [0, 8])
    answers = submit_concurrently(spec, 5)
    ids = {job_id for job_id, _ in answers}
    assert len(ids) == 1
    assert sorted(attached for _, attached in answers) == [False, True, True, True, True]
    job = client.wait(ids.pop(), timeout=120)
    assert job["attached"] == 4 and job["result"]["cached"] is False
    folder = ray_cache / job["result"]["run_dir"]
    assert (folder / "meta.json").is_file()
    assert [p.name for p in run_folders(ray_cache)] == [spec["key"]]
    # A later request for the stored key is answered from the store, not computed again.
    again = client.wait(client.submit(spec)[0], timeout=120)
    assert again["result"]["cached"] is True


def test_cli_process_and_in_process_submit_attach(ray_cache, scene):
    from core.jobs import client

    spec = spec_for(scene, [2, 10])
    command = [sys.executable, "-m", "core", "run", "vggt", "--scene", str(SAMPLE), "--views", "2", "10",
               "--option", "weights=random-tiny", "--detach", "--owner", "cli"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    job_id, attached = client.submit(spec)
    assert printed["key"] == spec["key"]
    first = client.wait(printed["job"], timeout=120)
    assert first["owner"] == "cli" and first["result"]["cached"] is False
    # One computation either way: the second request attaches to the CLI's job while it runs, or,
    # when that job has already ended (a warm worker runs it in about a second), is answered
    # from the store.
    if attached:
        assert job_id == printed["job"]
    else:
        assert client.wait(job_id, timeout=120)["result"]["cached"] is True


def test_cancel_stores_nothing(ray_cache, scene):
    from core.jobs import client

    spec = spec_for(scene, [4, 12])
    queued_id, _ = client.submit(spec)
    running = wait_state(queued_id, ("running", "done", "failed", "cancelled"))
    record = client.cancel(queued_id)
    assert running["state"] == "running" and record["state"] in ("running", "cancelled"), record
    with pytest.raises(client.JobError, match="cancelled; nothing was stored"):
        client.wait(queued_id, timeout=120)
    folder = ray_cache / "runs" / "toy" / "vggt"
    assert not (folder / spec["key"]).exists()
    assert not list(folder.glob(f".tmp-{spec['key']}*")) if folder.is_dir() else True


def test_killed_worker_fails_job_cleans_staging_and_retry_succeeds(ray_cache, scene):
    from core.jobs import client

    spec = spec_for(scene, [6, 14])
    job_id, _ = client.submit(spec)
    job = wait_state(job_id, ("running",))
    # What a worker killed while storing leaves behind; the manager must remove it.
    leftover = ray_cache / "runs" / "toy" / "vggt" / f".tmp-{spec['key']}-deadbeef"
    leftover.mkdir(parents=True)
    (leftover / "reconstruction.npz").write_bytes(b"half")
    os.kill(job["worker"]["pid"], signal.SIGKILL)
    with pytest.raises(client.JobError, match="worker running this job died"):
        client.wait(job_id, timeout=120)
    assert client.get(job_id)["state"] == "failed"
    assert not leftover.exists()
    assert not (ray_cache / "runs" / "toy" / "vggt" / spec["key"]).exists()
    retry = client.wait(client.submit(spec)[0], timeout=180)
    assert retry["result"]["cached"] is False and (ray_cache / retry["result"]["run_dir"] / "meta.json").is_file()


def test_worker_without_shared_disk_returns_result_to_store(ray_cache, scene):
    from core.data.scene import Reconstruction
    from core.jobs import client

    spec = spec_for(scene, [1, 9], shared_disk=False)
    assert spec["payload"]["scene_files"]   # the scene travels with the job
    job = client.wait(client.submit(spec)[0], timeout=120)
    stored = Reconstruction.load(ray_cache / job["result"]["run_dir"])
    assert stored.view_ids == [1, 9] and len(stored.points) == job["result"]["points"] > 0
    assert not list((ray_cache / "runs" / "toy" / "vggt").glob(".tmp-*"))


def test_job_table_survives_a_manager_restart(ray_cache, scene):
    import ray

    from core.jobs import client

    before = {j["id"]: j["state"] for j in client.list_jobs()}
    ray.kill(client.manager(), no_restart=True)
    after = {j["id"]: j["state"] for j in client.list_jobs()}
    assert after == before and "done" in after.values()


def test_cli_evaluate_as_a_job_scores_like_inline(ray_cache, scene, tmp_path, capsys):
    from core.__main__ import main
    from tests.conftest import ply_bytes

    ply = tmp_path / "gt.ply"
    ply.write_bytes(ply_bytes(scene.gt_points[::50] + 0.001))
    flags = ["--sample-points", "2000", "--emd-points", "128"]
    assert main(["evaluate", "--scene", str(SAMPLE), "--reconstruction", str(ply), *flags]) == 0
    as_job = json.loads(capsys.readouterr().out)
    assert list((ray_cache / "runs" / "toy" / "imported").glob("*/meta.json"))
    assert main(["--cache", str(tmp_path / "inline"), "evaluate", "--scene", str(SAMPLE), "--reconstruction",
                 str(ply), *flags, "--inline"]) == 0
    inline = json.loads(capsys.readouterr().out)
    assert as_job["chamfer"] == pytest.approx(inline["chamfer"], rel=1e-6) and as_job["chamfer"] < 0.05


def test_unknown_job_is_a_user_error(ray_cache):
    from core.__main__ import main

    assert main(["jobs", "show", "no-such-job"]) == 2


def test_method_page_submits_a_job_follows_it_and_shows_the_run(ray_cache):
    from streamlit.testing.v1 import AppTest

    page = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    page.run()
    page.switch_page("pages/discriminative.py")
    page.run()
    page.slider(key="discriminative.vggt.count").set_value(2)
    page.run()
    job = run_page_job(page, "discriminative.run", "discriminative.job")
    assert job["owner"] == "local" and job["result"]["views"] == [0, 21]
    assert any("finished" in s.value for s in page.success)
    assert page.session_state["discriminative.shown"][2] == job["result"]["key"]
    assert "discriminative.job" not in page.session_state


def test_jobs_page_lists_every_job_with_owner_and_state(ray_cache):
    from streamlit.testing.v1 import AppTest

    from core.jobs import client

    jobs = client.list_jobs()
    page = AppTest.from_file(str(ROOT / "pages" / "jobs.py"), default_timeout=60).run()
    assert not page.exception and not page.error
    shown = page.dataframe[0].value
    assert sorted(shown["id"]) == sorted(j["id"] for j in jobs)
    states = dict(zip(shown["id"], shown["state"]))
    assert states == {j["id"]: j["state"] for j in jobs}
    assert "failed" in states.values() and "cli" in set(shown["owner"])



def test_the_local_instance_listens_on_loopback_only(ray_cache):
    """Every listening socket of the local instance's processes (GCS, raylet, agents, client server,
    the job manager, workers: the session ``ray start`` opened) and of this driver is on a loopback
    address (README: hosted set-up)."""
    import ipaddress

    import psutil
    import ray

    from core.jobs import cluster

    @ray.remote(num_cpus=0)
    def worker_pid() -> int:
        return os.getpid()

    worker = ray.get(worker_pid.remote())
    folder = str(cluster.temp_dir(ray_cache))
    heads = [p.pid for p in psutil.process_iter(["name", "cmdline"])
             if p.info["name"] == "gcs_server" and folder in " ".join(p.info["cmdline"] or [])]
    assert len(heads) == 1
    members = [p for p in psutil.process_iter() if _session(p.pid) == os.getsid(heads[0])] + [psutil.Process()]
    listening: dict[int, list[str]] = {}
    for proc in members:
        try:
            listening[proc.pid] = [c.laddr.ip for c in proc.net_connections(kind="inet")
                                   if c.status == psutil.CONN_LISTEN]
        except psutil.Error:       # exited meanwhile
            continue
    assert listening[heads[0]] and listening[worker] and listening[os.getpid()]
    exposed = {pid: ips for pid, ips in listening.items()
               if any(not ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback for ip in ips)}
    assert exposed == {}, {pid: (psutil.Process(pid).name(), ips) for pid, ips in exposed.items()}


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None
