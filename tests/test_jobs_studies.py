"""The scaling study, 3D-LMNet training and "Score this run" as jobs on Ray: the same results as in
process, one computation for a study asked twice, --detach then `jobs wait`, a cancelled training
keeps its last complete checkpoint, a score job stores its evaluation. One local Ray instance
(2 CPUs) for the module; random-tiny VGGT on the bundled sample; a 2-shape procedural LMNet set."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import run_page_job, submit_concurrently

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "toy"
RAY_CPUS = 2
TINY = {"weights": "random-tiny"}
COUNTS = [1, 2]
TIMING = {"seconds", "seconds_std", "peak_memory_mb"}
# Cheap scoring (the defaults' exact EMD on 2048 points and ICP take ~30 s on the sample).
CHEAP_SCORING = {"sample_points": 2000, "emd_points": 128, "icp": False}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scene():
    from core.data.scene import Scene

    return Scene.load(SAMPLE)


def run_folders(root: Path, method: str = "vggt") -> list[str]:
    folder = root / "runs" / "toy" / method
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if folder.is_dir() else []


def wait_for(job_id: str, condition, timeout: float = 120.0) -> dict:
    from core.jobs import client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(job_id)
        if condition(job):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached the condition: {client.get(job_id)}")


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def test_study_as_a_job_matches_inline_and_a_second_request_attaches(ray_cache, scene, tmp_path):
    from core.jobs import client
    from core.models import registry
    from core.progress import Progress
    from core.store.cache import RunStore
    from core.studies import scaling

    spec = client.scaling_spec(scene, SAMPLE, {"vggt": TINY}, COUNTS, repeats=1)
    answers = submit_concurrently(spec, 2)
    assert answers[0][0] == answers[1][0] and sorted(a for _, a in answers) == [False, True]
    job = client.wait(answers[0][0], timeout=180)
    assert job["kind"] == "scaling" and job["attached"] == 1
    as_job = scaling.results_from_json(job["result"]["results"])["vggt"]
    # one computation per run: every point computed (not cached) once, one folder per planned run
    planned = scaling.planned_runs(scene, {"vggt": registry.get("vggt").parse_options(TINY)}, COUNTS, 1)
    assert [p.key for p in as_job.points] == [key for *_, key in planned]
    assert not any(p.cached for p in as_job.points)
    assert run_folders(ray_cache) == sorted(key for *_, key in planned)
    assert sorted(job["result"]["run_dirs"]) == sorted(f"runs/toy/vggt/{key}" for *_, key in planned)

    inline = scaling.run_studies(scene, {"vggt": TINY}, COUNTS, 1, Progress(), RunStore(tmp_path / "inline"))["vggt"]
    assert without_timing(scaling.summary_table(as_job)) == without_timing(scaling.summary_table(inline))
    assert [(p.views, p.view_ids, p.key) for p in as_job.points] == [(p.views, p.view_ids, p.key) for p in inline.points]
    assert (as_job.quality_available, as_job.quality_note, as_job.stopped) == \
        (inline.quality_available, inline.quality_note, inline.stopped) == (False, inline.quality_note, False)

    # Asked again once done: a new job, answered from the stored runs (nothing computed).
    again = client.wait(client.submit(spec)[0], timeout=120)
    assert all(p["cached"] for p in again["result"]["results"]["vggt"]["points"])
    assert run_folders(ray_cache) == sorted(key for *_, key in planned)


def test_cli_study_detach_then_jobs_wait_then_same_lines_as_inline(ray_cache, capsys):
    from core.__main__ import main

    study = ["scaling", "--scene", str(SAMPLE), "--views", *map(str, COUNTS), "--option", "weights=random-tiny"]
    assert main([*study, "--detach", "--owner", "cli"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"job", "attached", "key"}
    assert main(["jobs", "wait", printed["job"]]) == 0
    waited = json.loads(capsys.readouterr().out)
    assert waited["state"] == "done" and waited["owner"] == "cli" and waited["kind"] == "scaling"
    # --wait (the default) prints what the in-process study prints (both read the same cached runs)
    assert main(study) == 0
    as_job = capsys.readouterr().out
    assert main([*study, "--inline"]) == 0
    inline = capsys.readouterr().out
    assert as_job == inline
    kinds = [json.loads(line)["kind"] for line in as_job.splitlines()]
    assert kinds.count("point") == len(COUNTS) and kinds[-1] == "summary"


def test_a_cancelled_study_stores_nothing_further(ray_cache, scene):
    from core.jobs import client
    from core.models import registry
    from core.studies import scaling

    counts = list(range(3, 13))
    spec = client.scaling_spec(scene, SAMPLE, {"vggt": TINY}, counts, repeats=1)
    job_id, _ = client.submit(spec)
    wait_for(job_id, lambda j: j["state"] != "queued")
    record = client.cancel(job_id)
    with pytest.raises(client.JobError, match="cancelled; nothing further was stored"):
        client.wait(job_id, timeout=120)
    assert record["state"] in ("running", "cancelled")
    stored = set(run_folders(ray_cache))
    planned = [key for *_, key in scaling.planned_runs(scene, {"vggt": registry.get("vggt").parse_options(TINY)},
                                                        counts, 1)]
    # the runs stored before the cancel are complete ones, in the study's order, and the rest never came
    done = [key in stored for key in planned]
    assert done == sorted(done, reverse=True) and not all(done)
    time.sleep(1.0)
    assert set(run_folders(ray_cache)) == stored
    assert not list((ray_cache / "runs" / "toy" / "vggt").glob(".tmp-*"))


# --------------------------------------------------------------------------- 3D-LMNet training
@pytest.fixture(scope="module")
def lmnet_data(tmp_path_factory):
    from core.models.lmnet import procedural

    root = tmp_path_factory.mktemp("lmnet_data")
    procedural.write_dataset(root, procedural.DatasetSpec(per_category=3, categories=("chair", "mug"), views=2))
    return root


def train_options(data, out, **kw):
    from core.models.lmnet.train import TrainOptions

    base = dict(data=str(data), out=str(out), variant="original", size="tiny", ae_steps=1, latent_steps=1,
                batch_size=2, latent_batch_size=2, log_every=1, val_every=1, checkpoint_every=1,
                val_views=(0, 1), threads=1)
    return TrainOptions(**{**base, **kw})


def test_training_as_a_job_writes_the_inline_checkpoint_and_cancel_keeps_the_last_one(ray_cache, lmnet_data,
                                                                                       tmp_path):
    from safetensors.torch import load_file

    from core.jobs import client
    from core.models.lmnet.train import train

    train(train_options(lmnet_data, tmp_path / "inline"), resume=False)
    spec = client.lmnet_train_spec(train_options(lmnet_data, tmp_path / "job"), owner="t")
    assert spec["payload"]["created_folder"] and spec["kind"] == "lmnet-train"
    job = client.wait(client.submit(spec)[0], timeout=180)
    assert job["result"]["step"] == 2 and job["progress"] == 1.0
    inline, as_job = load_file(str(tmp_path / "inline" / "model.safetensors")), \
        load_file(str(tmp_path / "job" / "model.safetensors"))
    assert inline.keys() == as_job.keys()
    for name in inline:   # same seed, same single thread, same CPU: bit-identical
        assert inline[name].equal(as_job[name]), name

    # Resume for many more steps with no checkpoint due before the end, and cancel mid-way.
    checkpoint = (tmp_path / "job" / "last.pt").read_bytes()
    weights = (tmp_path / "job" / "model.safetensors").read_bytes()
    longer = client.lmnet_train_spec(train_options(lmnet_data, tmp_path / "job", latent_steps=100_000,
                                                   checkpoint_every=1_000_000, val_every=1_000_000,
                                                   log_every=1_000_000))
    assert longer["key"] != spec["key"] and not longer["payload"]["created_folder"]
    job_id, _ = client.submit(longer)
    running = wait_for(job_id, lambda j: j["state"] in ("done", "failed", "cancelled")
                       or (j["state"] == "running" and "step" in j["message"]))
    assert running["state"] == "running", running
    client.cancel(job_id)
    with pytest.raises(client.JobError, match="cancelled"):
        client.wait(job_id, timeout=120)
    assert (tmp_path / "job" / "last.pt").read_bytes() == checkpoint
    assert (tmp_path / "job" / "model.safetensors").read_bytes() == weights


def test_failed_training_removes_only_a_folder_it_created_without_checkpoint(tmp_path):
    from core.jobs.tasks import clean_training

    def spec(out, created):
        return {"kind": "lmnet-train", "payload": {"options": {"out": str(out)}, "created_folder": created}}

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "run.json").write_text("{}")
    (fresh / "last.pt.tmp").write_bytes(b"half")
    clean_training(spec(fresh, True))
    assert not fresh.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "last.pt").write_bytes(b"complete")
    (kept / "model.safetensors.tmp").write_bytes(b"half")
    clean_training(spec(kept, True))
    assert sorted(p.name for p in kept.iterdir()) == [".train.lock", "last.pt"]   # the half-written file went
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "notes.txt").write_text("the user's")
    clean_training(spec(earlier, False))      # not created by the job: left as it was
    assert (earlier / "notes.txt").read_text() == "the user's"


def test_one_training_at_a_time_per_run_folder(lmnet_data, tmp_path):
    from core.jobs.tasks import clean_training
    from core.models.lmnet.train import RunFolderBusy, exclusive, train

    out = tmp_path / "busy"
    with exclusive(out):      # another training (a job, a process) writes this folder
        (out / "run.json").write_text("{}")
        with pytest.raises(RunFolderBusy, match="another training is writing"):
            train(train_options(lmnet_data, out))
        # the refused job's failure must not remove the folder the other one is writing
        clean_training({"kind": "lmnet-train", "payload": {"options": {"out": str(out)}, "created_folder": True}})
        assert (out / "run.json").is_file() and not (out / "last.pt").exists()


def test_lmnet_training_without_a_shared_disk_is_refused_before_queueing(lmnet_data, tmp_path):
    from core.errors import UserError
    from core.jobs import client

    with pytest.raises(UserError, match="do not share"):
        client.lmnet_train_spec(train_options(lmnet_data, tmp_path / "x"), shared_disk=False)
    with pytest.raises(UserError, match="does not exist"):
        client.lmnet_train_spec(train_options(tmp_path / "nowhere", tmp_path / "x"), shared_disk=True)
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- Score this run
@pytest.fixture(scope="module")
def unscored_run(ray_cache, scene):
    """The key of a stored, unscored random-tiny VGGT run (the 2-view run of the study above, so
    usually already there)."""
    from core.progress import Progress
    from core.runner import run_method
    from core.store.cache import RunStore

    return run_method(scene, "vggt", [0, 21], TINY, Progress(), RunStore(ray_cache), score_random_weights=False).key


@pytest.mark.parametrize("shared", [True, False], ids=["shared-disk", "returned-to-store"])
def test_score_job_stores_the_evaluation(ray_cache, scene, unscored_run, shared):
    from core import options as opts
    from core.eval import metrics
    from core.jobs import client
    from core.runner import evaluation_options_dict
    from core.store.cache import RunStore, evaluation_variant

    store = RunStore(ray_cache)
    key = unscored_run
    options = opts.parse(metrics.EvaluationOptions, {**CHEAP_SCORING, "seed": int(shared)})
    spec = client.score_spec(scene, SAMPLE, "vggt", key, options, store, shared_disk=shared)
    assert bool(spec["payload"]["run_files"]) is not shared
    job = client.wait(client.submit(spec)[0], timeout=180)
    stored = store.run_dir("toy", "vggt", key) / "evaluations" / f"{evaluation_variant(evaluation_options_dict(options))}.json"
    saved = json.loads(stored.read_text())
    assert saved["options"] == json.loads(json.dumps(opts.as_dict(options)))
    assert saved["scores"]["chamfer"] == pytest.approx(job["result"]["evaluation"]["chamfer"], rel=1e-12)
    assert saved["scores"]["chamfer"] > 0
    assert not list(stored.parent.glob(".*.tmp"))


def test_scaling_page_submits_the_study_follows_it_and_shows_its_table(ray_cache):
    from streamlit.testing.v1 import AppTest

    from core.studies import scaling

    page = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    page.run()
    page.switch_page("pages/scaling.py")
    page.run()
    page.selectbox(key="scaling.vggt.options.weights").set_value("random-tiny")
    page.multiselect(key="scaling.counts").set_value(COUNTS)
    page.run()
    job = run_page_job(page, "scaling.run", "scaling.job")
    assert job["kind"] == "scaling" and job["owner"] == "local"
    assert any("finished" in s.value for s in page.success)
    results, used = page.session_state["scaling.result"]
    assert [p.views for p in results["vggt"].points] == COUNTS and used["vggt"].weights == "random-tiny"
    shown = page.dataframe[0].value
    assert list(shown["views"]) == [row["views"] for row in scaling.summary_table(results["vggt"])]


def test_a_study_whose_worker_dies_fails_and_its_runs_staging_is_removed(ray_cache, scene):
    import os
    import signal

    from core.jobs import client

    spec = client.scaling_spec(scene, SAMPLE, {"vggt": TINY}, list(range(13, 20)), repeats=1)
    job_id, _ = client.submit(spec)
    job = wait_for(job_id, lambda j: j["state"] != "queued")
    assert job["state"] == "running", job
    # what a worker killed while storing one of the study's runs leaves behind
    leftover = ray_cache / "runs" / "toy" / "vggt" / f".tmp-{spec['staging_keys'][-1]}-deadbeef"
    leftover.mkdir(parents=True)
    os.kill(job["worker"]["pid"], signal.SIGKILL)
    with pytest.raises(client.JobError, match="worker running this job died"):
        client.wait(job_id, timeout=120)
    assert not leftover.exists()


def test_metrics_page_score_this_run_submits_a_score_job(ray_cache, unscored_run):
    from streamlit.testing.v1 import AppTest

    from core.jobs import client
    from core.store.cache import RunStore

    page = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    page.run()
    page.switch_page("pages/metrics.py")
    page.run()
    assert not page.exception
    _, method, key = page.session_state["metrics.inspect"]
    assert RunStore(ray_cache).runs("toy") and not (RunStore(ray_cache).run_dir("toy", method, key)
                                                     / "evaluation.json").exists()
    page.button(key="metrics.score").click()
    page.run()
    assert not page.exception and not page.error
    job_id = page.session_state["metrics.job"]
    job = client.get(job_id)
    assert job["kind"] == "score" and job["label"].startswith(f"score {method} run {key[:8]}")
    assert page.query_params["job"] == job_id
    # The default scoring of a whole run takes ~30 s here; what it stores is tested above.
    client.cancel(job_id)


def test_combined_page_runs_the_pipeline_as_a_job_and_shows_its_panels(ray_cache):
    """The Combined page submits its run like the other method pages (it computed in the server
    process before), follows the job and shows the stored run's panels."""
    from streamlit.testing.v1 import AppTest

    page = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    page.run()
    page.switch_page("pages/combined.py")
    page.run()
    page.selectbox(key="combined.weights").select("random-tiny")
    page.number_input(key="combined.box_threshold").set_value(0.0)
    page.number_input(key="combined.text_threshold").set_value(0.0)
    page.run()
    job = run_page_job(page, "combined.run", "combined.job")
    assert job["kind"] == "run" and job["result"]["method"] == "combined"
    assert any("finished" in s.value for s in page.success)
    captions = [c.value for c in page.caption]
    assert any(c.startswith(f"Run {job['result']['key'][:8]} (computed now)") for c in captions), captions
    assert any(c.startswith("Detection: box score") for c in captions)
