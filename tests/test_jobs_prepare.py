"""Preparation and the CO3D / DTU benchmark plans as jobs on Ray: a prepare job writes the scene
the in-process preparation writes, identical requests attach, a cancel leaves the existing scene
byte-identical, a worker without the shared disk hands the scene to the manager, the CLI's
``--detach`` then ``jobs wait``, and a CO3D plan as jobs gives the ``--inline`` table.

One local Ray instance (2 CPUs) for the module. The preparations are sparse-only on 4 views of
the bundled sample with one COLMAP thread (features at 320 pixels), which makes COLMAP
deterministic: the same input gives byte-identical cameras and points in and out of a worker.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, SAMPLE, run_page_job, wait_state

RAY_CPUS = 2
OPTIONS = {"dense": False, "num_threads": 1, "max_features": 256, "max_image_size": 320}
CLI_FLAGS = ["--no-dense", "--threads", "1", "--max-features", "256", "--max-image-size", "320"]
# Files of a prepared scene that do not depend on timing (scene.json and prepare.json hold stage seconds).
STABLE_FILES = ("cameras.npz", "gt_points.npz", "sparse/0/cameras.bin", "sparse/0/images.bin",
                "sparse/0/points3D.bin")


@pytest.fixture(scope="module")
def views():
    from core.data.scene import Scene

    from core.data.prepare.frames import scene_image_files

    scene = Scene.load(SAMPLE)
    return scene.images, scene.image_names, scene_image_files(SAMPLE)


def spec_for(views, first: int, out: Path, **kwargs) -> dict:
    from core.jobs import client

    images, names, files = views
    return client.prepare_spec(images[first:first + 4], names[first:first + 4], out, scene_name="jobbed",
                               options=OPTIONS, files=files[first:first + 4], **kwargs)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.glob(".tmp-*"))




@pytest.fixture(scope="module")
def prepared(ray_cache, views, tmp_path_factory):
    """A scene prepared by a job (two identical submits: one job) and the same preparation inline."""
    from core.data.prepare.pipeline import PrepareOptions, prepare
    from core.jobs import client

    root = tmp_path_factory.mktemp("prepared")
    spec = spec_for(views, 0, root / "job" / "scene")
    first, attached_first = client.submit(spec)
    second, attached_second = client.submit(dict(spec))
    job = client.wait(first, timeout=180)
    images, names, _ = views
    inline = prepare(images[:4], names[:4], root / "inline" / "scene", scene_name="jobbed",
                     options=PrepareOptions(**OPTIONS))
    return {"spec": spec, "ids": (first, second), "attached": (attached_first, attached_second), "job": job,
            "out": root / "job" / "scene", "inline": inline}


def test_prepare_job_writes_the_scene_the_inline_preparation_writes(prepared):
    from core.data.scene import Scene

    job, out = prepared["job"], prepared["out"]
    assert job["kind"] == "prepare" and job["state"] == "done"
    assert job["result"]["scene"] == str(out.resolve()) and job["result"]["registered"] == 4
    scene, inline = Scene.load(out), prepared["inline"].scene
    assert scene.name == inline.name == "jobbed" and scene.image_names == inline.image_names
    # one-threaded COLMAP is deterministic: the files that hold no timing are byte-identical
    for name in STABLE_FILES:
        assert (out / name).read_bytes() == (prepared["inline"].folder / name).read_bytes(), name
    np.testing.assert_array_equal(scene.cam_from_world, inline.cam_from_world)
    assert job["result"]["points"] == prepared["inline"].report["points"]
    assert leftovers(out.parent) == []


def test_two_identical_prepare_requests_are_one_job(prepared, views, tmp_path):
    first, second = prepared["ids"]
    assert first == second and prepared["attached"] == (False, True)
    assert prepared["job"]["attached"] == 1
    # the key covers the destination: the same images into another folder are another job
    assert spec_for(views, 0, tmp_path / "elsewhere")["key"] != prepared["spec"]["key"]
    # a preparation asks Ray for its COLMAP threads, at most the cluster's CPUs
    from core.jobs import client

    many = client.prepare_spec(views[0][:4], views[1][:4], tmp_path / "many", options={**OPTIONS, "num_threads": 64})
    assert prepared["spec"]["resources"] == {"num_cpus": 1} and many["resources"] == {"num_cpus": RAY_CPUS}


def test_the_payload_carries_the_compressed_files_and_the_worker_checks_their_pixels(views, tmp_path):
    """No Ray: the spec of all 42 sample views sends the JPEG files (their bytes as they are), under
    the key the pixels give; the worker's decode gives the pixels back and refuses a file that
    decodes to other pixels."""
    import hashlib
    import pickle

    from core.data.prepare import DatasetError
    from core.jobs import client
    from core.jobs.tasks import decode_views

    images, names, files = views
    as_files = client.prepare_spec(images, names, tmp_path / "s", options=OPTIONS, shared_disk=True, files=files)
    as_pixels = client.prepare_spec(images, names, tmp_path / "s", options=OPTIONS, shared_disk=True)
    assert as_files["key"] == as_pixels["key"]
    assert as_files["payload"]["views"] == [f.read_bytes() for f in files]
    pixel_bytes = sum(image.nbytes for image in images)
    assert len(pickle.dumps(as_pixels["payload"], protocol=5)) > pixel_bytes
    assert len(pickle.dumps(as_files["payload"], protocol=5)) < sum(f.stat().st_size for f in files) + pixel_bytes // 100
    for payload in (as_files["payload"], as_pixels["payload"]):
        decoded = decode_views(payload)
        assert [hashlib.sha256(d.tobytes()).hexdigest() for d in decoded] == \
               [hashlib.sha256(i.tobytes()).hexdigest() for i in images]
    swapped = dict(as_files["payload"], views=[files[1].read_bytes(), *as_files["payload"]["views"][1:]])
    with pytest.raises(DatasetError, match=f"^{names[0]} decodes to other pixels"):
        decode_views(swapped)


def test_cancel_mid_run_leaves_the_existing_scene_byte_identical(prepared, views):
    from core.jobs import client

    out = prepared["out"]
    before = snapshot(out)
    spec = spec_for(views, 8, out)          # other views, replacing the scene prepared above
    job_id, _ = client.submit(spec)
    assert wait_state(job_id, ("running", "done", "failed"))["state"] == "running"
    client.cancel(job_id)
    with pytest.raises(client.JobError, match="cancelled; nothing was stored"):
        client.wait(job_id, timeout=120)
    assert snapshot(out) == before
    assert leftovers(out.parent) == []


def test_worker_without_the_shared_disk_hands_the_scene_to_the_manager(prepared, views):
    from core.data.scene import Scene
    from core.jobs import client

    out = prepared["out"]
    spec = spec_for(views, 16, out, shared_disk=False)   # replaces the existing scene
    assert spec["replace_folders"] and spec["store"] == str(out.parent.resolve())
    job = client.wait(client.submit(spec)[0], timeout=180)
    assert job["result"]["scene"] == str(out.resolve())
    assert Scene.load(out).image_names == views[1][16:20]
    assert json.loads((out / "prepare.json").read_text())["registered"] == job["result"]["registered"]
    assert leftovers(out.parent) == []


def test_cli_detach_then_jobs_wait_and_bad_input_queues_nothing(ray_cache, tmp_path, capsys):
    from core.__main__ import main
    from core.data.scene import Scene
    from core.jobs import client

    photos = tmp_path / "photos"
    photos.mkdir()
    for v in range(4):
        shutil.copy(SAMPLE / "images" / f"view_{24 + v:03d}.jpg", photos / f"p{v}.jpg")
    out = tmp_path / "cli-scene"
    assert main(["prepare", "--images", str(photos), "--out", str(out), "--name", "cli", *CLI_FLAGS,
                 "--detach", "--owner", "h9"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"job", "attached", "key"} and printed["attached"] is False
    assert main(["jobs", "wait", printed["job"]]) == 0
    waited = json.loads(capsys.readouterr().out)
    assert waited["state"] == "done" and waited["owner"] == "h9" and waited["key"] == printed["key"]
    assert Scene.load(out).name == "cli" and Scene.load(out).image_names == [f"p{v}.jpg" for v in range(4)]
    # the default (--wait) prints the report the inline command prints, after the job's progress
    assert main(["prepare", "--images", str(photos), "--out", str(out), "--name", "cli", *CLI_FLAGS]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["scene"] == str(out.resolve()) and report["registered"] == 4 and "crop" not in report
    assert {"startup", "decode", "write_images"} <= set(report["stage_seconds"]) and "%]" in captured.err
    assert report["job"] != printed["job"]     # the first job had ended: a new preparation, not an attach

    known = len(client.list_jobs())
    (photos / "p3.jpg").write_bytes(b"not an image")
    assert main(["prepare", "--images", str(photos), "--out", str(tmp_path / "bad"), *CLI_FLAGS]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error:") and "p3.jpg" in error[0]
    assert len(client.list_jobs()) == known and not (tmp_path / "bad").exists()


CO3D_PLAN = """
name = "jobs-co3d"
protocol = "co3d-pose"
root = "co3d"
items = ["teddybear/101_1_1", "apple/201_1_1"]
methods = ["vggt"]
views = [3]
seed = 4
[options.vggt]
weights = "random-tiny"
"""


def test_co3d_plan_as_jobs_gives_the_inline_table(ray_cache, tmp_path, monkeypatch):
    from core.store.cache import RunStore
    from core.studies import benchmarks
    from tests.test_co3d import write_co3d_root

    datasets = tmp_path / "datasets"
    write_co3d_root(datasets / "co3d", "teddybear", {"101_1_1": (56, 40, 5)})
    write_co3d_root(datasets / "co3d", "apple", {"201_1_1": (40, 56, 5)})
    monkeypatch.setenv("RECONBENCH_DATASETS", str(datasets))
    (tmp_path / "plan.toml").write_text(CO3D_PLAN)
    plan = benchmarks.load_plan(tmp_path / "plan.toml")
    as_jobs = benchmarks.run_plan(plan, RunStore(ray_cache), inline=False)
    inline = benchmarks.run_plan(plan, RunStore(tmp_path / "inline"), inline=True)
    assert not [r for r in as_jobs.rows + inline.rows if "error" in r]
    assert all(r["job"] for r in as_jobs.rows) and not any("job" in r for r in inline.rows)
    assert [r["key"] for r in as_jobs.rows] == [r["key"] for r in inline.rows]
    assert all(not r["cached"] for r in as_jobs.rows + inline.rows)
    assert {row["category"] for row in as_jobs.table} == {"teddybear", "apple", "mean"}
    assert len(as_jobs.table) == len(inline.table)
    for job_row, inline_row in zip(as_jobs.table, inline.table):
        assert job_row == pytest.approx(inline_row, abs=1e-6)


def test_dataset_page_submits_the_preparation_and_shows_the_scene(ray_cache):
    from streamlit.testing.v1 import AppTest

    from core.data.scene import Scene

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/dataset.py")
    at.run()
    at.radio(key="dataset.source").set_value("Upload images").run()
    at.text_input(key="dataset.name").set_value("paged")
    at.toggle(key="dataset.advanced").set_value(True).run()
    at.checkbox(key="dataset.options.dense").set_value(False)
    at.number_input(key="dataset.options.num_threads").set_value(1)
    at.number_input(key="dataset.options.max_features").set_value(256)
    at.number_input(key="dataset.options.max_image_size").set_value(320)
    at.file_uploader(key="dataset.images").set_value(
        [(f"v{v}.jpg", (SAMPLE / "images" / f"view_{v:03d}.jpg").read_bytes(), "image/jpeg") for v in range(30, 34)])
    at.run()
    job = run_page_job(at, "dataset.prepare", "dataset.job")
    assert job["kind"] == "prepare" and job["owner"] == "local"
    assert any("Preparation" in s.value for s in at.success)
    assert {m.label: m.value for m in at.metric}["Registered views"] == "4/4"
    folder = ray_cache / "scenes" / "paged"
    assert Scene.load(folder).image_names == [f"v{v}.jpg" for v in range(30, 34)]
    from core.app.widgets import available_scenes

    assert available_scenes()["paged"] == folder
