"""The Attention page's model passes as jobs on Ray: the capture is stored as a folder that reads back
as the captured session, a capture job gives the in-process session's attention, two requests share
one job, a cancel stores nothing, the attribution and tracking jobs give the in-process maps and
tracks, and the page submits, follows and shows them without a model in its own process. One local
Ray instance (1 CPU) for the module; random-tiny VGGT on views of the bundled sample."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import submit_concurrently, wait_state

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "toy"
RAY_CPUS = 1
TINY = "random-tiny"
VIEWS = [0, 21]
PIXEL = (200, 150)
# Two processes run the same float32 kernels on the same inputs; attention probabilities are
# compared as the capture tests compare them (test_vggt_attention.py: 1e-5), predictions and
# gradients to 1e-5 relative, 1e-6 of the largest entry absolute (test_attribution.py).
PROB_ATOL = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scene():
    from core.data.scene import Scene

    return Scene.load(SAMPLE)


def close(a, b, name: str = "") -> None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * max(np.abs(b).max(), 1e-30), err_msg=name)


def same_views(loaded, session, atol: float = 0.0) -> None:
    """The viewer's queries on both sessions: every layer's attention row and the rollout of one
    pixel, and the pixel's correspondences."""
    token = session.token_for_pixel(1, *PIXEL)
    assert loaded.token_for_pixel(1, *PIXEL) == token and loaded.layers == session.layers
    for layer in session.layers:
        for reduce in ("max", 0):
            np.testing.assert_allclose(loaded.layer_attention(token, layer, reduce),
                                       session.layer_attention(token, layer, reduce), rtol=0, atol=atol)
    np.testing.assert_allclose(loaded.rollout(token, session.layers[0], session.layers[-1], 0.5),
                               session.rollout(token, session.layers[0], session.layers[-1], 0.5), rtol=0, atol=atol)


def test_a_stored_session_reads_back_as_the_captured_one(scene, tmp_path):
    from core.studies import attention_store, attribution
    from core.studies.attention import capture_session

    session = capture_session(scene, VIEWS, weights=TINY, half_precision_keys=True)
    key = attention_store.capture_key(scene, VIEWS, TINY, half=True)
    folder = attention_store.store_session(session, tmp_path, key, scene.name)
    assert folder == tmp_path / "attention" / key and not list(folder.parent.glob(".tmp-*"))
    loaded = attention_store.find(tmp_path, key)
    assert loaded.key == key and loaded.view_ids == VIEWS and loaded.heads == session.heads
    assert (loaded.grid, loaded.tokens_per_frame, loaded.patch_start) == \
        (session.grid, session.tokens_per_frame, session.patch_start)
    assert loaded.transforms == session.transforms and loaded.random_weights and loaded.capture_bytes == session.capture_bytes
    for layer in session.layers:          # the captured float16 queries and keys, bit for bit
        for mine, theirs in zip(loaded.capture.qk[layer], session.capture.qk[layer]):
            assert str(mine.dtype) == "torch.float16" and mine.equal(theirs)
    for name in ("images", "inputs", "depth", "cam_from_world", "intrinsics"):
        assert np.array_equal(getattr(loaded, name), getattr(session, name)), name
    same_views(loaded, session)           # the same tensors: the same numbers exactly
    as_text = lambda links: json.dumps(links, default=lambda a: np.asarray(a).tolist())  # noqa: E731
    assert as_text(loaded.correspondences(1, *PIXEL, scene)) == as_text(session.correspondences(1, *PIXEL, scene))
    assert attribution.session_estimate(loaded).parts == attribution.session_estimate(session).parts
    # A second store of the key keeps the first folder; a damaged folder is removed and reads as absent.
    before = (folder / "meta.json").stat().st_mtime_ns
    assert attention_store.store_session(session, tmp_path, key, scene.name) == folder
    assert (folder / "meta.json").stat().st_mtime_ns == before
    (folder / f"k-{session.layers[-1]}.npy").write_bytes(b"not an array")
    assert attention_store.find(tmp_path, key) is None and not folder.exists()
    # The key covers the precision, the views and the weights.
    assert len({key, attention_store.capture_key(scene, VIEWS, TINY),
                attention_store.capture_key(scene, [0, 22], TINY, half=True),
                attention_store.capture_key(scene, VIEWS, "random-full", half=True)}) == 4


def test_a_cancelled_capture_stores_nothing(ray_cache, scene):
    """First job of the module: its worker still has to import torch and build the model when the
    cancel comes, and the capture asks before its last progress step and before storing."""
    from core.jobs import client

    spec = client.attention_spec(scene, scene.uniform_views(6), weights=TINY)
    job_id, _ = client.submit(spec)
    wait_state(job_id, ("running", "done", "failed", "cancelled"))
    client.cancel(job_id)
    with pytest.raises(client.JobError, match="cancelled; nothing was stored"):
        client.wait(job_id, timeout=120)
    folder = ray_cache / "attention"
    assert not folder.exists() or not list(folder.iterdir())


@pytest.fixture(scope="module")
def stored(ray_cache, scene):
    """The 2-view random-tiny capture stored by a job (the next test's, when it ran)."""
    from core.jobs import client
    from core.studies import attention_store

    spec = client.attention_spec(scene, VIEWS, weights=TINY)
    found = attention_store.find(ray_cache, spec["key"])
    if found is None:
        client.wait(client.submit(spec)[0], timeout=180)
        found = attention_store.find(ray_cache, spec["key"])
    return found


def test_capture_job_gives_the_in_process_session_and_two_requests_share_it(ray_cache, scene):
    from core.jobs import client
    from core.studies import attention_store
    from core.studies.attention import capture_session

    spec = client.attention_spec(scene, VIEWS, weights=TINY)
    assert spec["kind"] == "attention" and spec["key"] == attention_store.capture_key(scene, VIEWS, TINY)
    answers = submit_concurrently(spec, 2)
    assert answers[0][0] == answers[1][0] and sorted(a for _, a in answers) == [False, True]
    job = client.wait(answers[0][0], timeout=180)
    assert job["attached"] == 1 and job["result"]["key"] == spec["key"] and not job["result"]["cached"]
    assert sorted(p.name for p in (ray_cache / "attention").iterdir()) == [spec["key"]]   # no staging left
    loaded = attention_store.find(ray_cache, spec["key"])
    session = capture_session(scene, VIEWS, weights=TINY)
    assert np.array_equal(loaded.images, session.images) and np.array_equal(loaded.inputs, session.inputs)
    close(loaded.depth, session.depth, "depth")
    close(loaded.cam_from_world, session.cam_from_world, "cameras")
    same_views(loaded, session, atol=PROB_ATOL)
    assert loaded.capture_bytes == session.capture_bytes == job["result"]["capture_bytes"]


def test_capture_of_some_layers_without_a_shared_disk_comes_back_as_the_folder(ray_cache, scene, stored):
    from core.errors import UserError
    from core.jobs import client
    from core.studies import attention_store

    spec = client.attention_spec(scene, VIEWS, weights=TINY, layers=[3, 1], shared_disk=False)
    assert spec["key"] != stored.key
    job = client.wait(client.submit(spec)[0], timeout=180)
    assert job["result"]["run_dir"] == attention_store.relative_folder(spec["key"])
    loaded = attention_store.find(ray_cache, spec["key"])
    assert loaded.layers == [1, 3] and sorted(loaded.capture.qk) == [1, 3]
    assert not list((ray_cache / "attention").glob(".tmp-*"))
    # the same forward as the all-layer capture: its layers 1 and 3 give the same attention
    token = stored.token_for_pixel(1, *PIXEL)
    for layer in (1, 3):
        np.testing.assert_allclose(loaded.layer_attention(token, layer), stored.layer_attention(token, layer),
                                   rtol=0, atol=PROB_ATOL)
    close(loaded.depth, stored.depth, "depth")
    with pytest.raises(UserError, match="capture layers must be in 0..3"):
        client.attention_spec(scene, VIEWS, weights=TINY, layers=[4])
    with pytest.raises(UserError, match="out of range"):
        client.attention_spec(scene, [0, 99], weights=TINY)


@pytest.mark.parametrize("shared, target", [(True, "depth"), (False, "point-x")],
                         ids=["shared-disk", "returned-to-store"])
def test_attribution_job_gives_the_in_process_maps_stored_beside_the_capture(ray_cache, stored, shared, target):
    from core.jobs import client
    from core.store.cache import RunStore
    from core.studies import attention_store, attribution

    spec = client.attribution_spec(stored, 1, PIXEL, target, stored.layers[-1], True, RunStore(ray_cache),
                                   shared_disk=shared)
    assert (spec["payload"]["inputs"] is None) is shared
    job = client.wait(client.submit(spec)[0], timeout=180)
    made = job["result"]
    assert made["file"] == attention_store.attribution_file(stored.key, spec["key"])
    result = attention_store.read_attribution(ray_cache / made["file"])
    inline = attribution.session_attribution(stored, 1, PIXEL, target, stored.layers[-1], True)
    assert (result.frame, result.pixel, result.target, result.layer) == (1, PIXEL, target, stored.layers[-1])
    assert result.value == pytest.approx(inline.value, rel=1e-5) and made["value"] == result.value
    for name in ("input_gradient", "input_x_gradient", "token_gradient", "grad_cam"):
        close(getattr(result, name), getattr(inline, name), name)
    assert result.estimate == inline.estimate
    assert not list((ray_cache / "attention" / stored.key / "attributions").glob(".*"))


def test_tracks_job_gives_the_in_process_tracks(ray_cache, stored):
    from core.jobs import client
    from core.store.cache import RunStore
    from core.studies import attention_store
    from core.errors import UserError
    from core.studies.attention import track_points, tracking_model

    points = [[250.0, 200.0], [120.0, 60.0]]
    spec = client.tracks_spec(stored, 1, points, RunStore(ray_cache))
    job = client.wait(client.submit(spec)[0], timeout=180)
    tracks = attention_store.tracks_from_json(job["result"]["tracks"])
    inline = track_points(tracking_model(TINY), stored.inputs, 1, points)
    assert tracks.source == 1 and np.array_equal(tracks.queries, points)
    for name in ("uv", "visibility", "confidence"):
        close(getattr(tracks, name), getattr(inline, name), name)
    with pytest.raises(UserError, match="outside the"):
        client.tracks_spec(stored, 1, [[9999, 0]], RunStore(ray_cache))


def test_attention_page_runs_the_capture_and_the_attribution_as_jobs(ray_cache):
    from streamlit.testing.v1 import AppTest

    from core.jobs import client
    from core.models import model_cache

    model_cache.clear()
    page = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    page.run()
    page.switch_page("pages/attention.py")
    page.run()
    page.selectbox(key="attention.weights").set_value(TINY)
    page.slider(key="attention.count").set_value(2)
    page.checkbox(key="attention.half").check()         # float16 keys: another capture than the tests above
    page.button(key="attention.run").click()
    page.run()
    assert not page.exception and not page.error, [e.value for e in page.error]
    job_id = page.session_state["attention.job"]
    assert page.query_params["job"] == job_id and "attention.session" not in page.session_state
    job = client.wait(job_id, timeout=180)
    assert job["kind"] == "attention" and job["owner"] == "local"
    page.run()                                          # the follower sees the end and loads the stored capture
    assert not page.exception and not page.error, [e.value for e in page.error]
    assert any("Attention capture: finished" in s.value for s in page.success)
    session = page.session_state["attention.session"][1]
    assert session.key == job["result"]["key"] and session.view_ids == VIEWS
    assert str(session.capture.qk[session.layers[0]][0].dtype) == "torch.float16"
    assert any(f"{len(session.layers)} global layers" in c.value for c in page.caption)
    assert len(page.get("imgs")) + len(page.get("image")) == 2      # one attention map per view

    page.number_input(key="attention.u").set_value(PIXEL[0])
    page.number_input(key="attention.v").set_value(PIXEL[1])
    page.selectbox(key="attention.attr_target").set_value("depth")
    page.run()
    page.button(key="attention.attr_run").click()
    page.run()
    assert not page.exception and not page.error, [e.value for e in page.error]
    client.wait(page.session_state["attention.attr_job"], timeout=180)
    page.run()
    assert not page.exception and not page.error, [e.value for e in page.error]
    rho = next(d.value for d in page.dataframe if any(c.startswith("ρ ") for c in d.value.columns))
    assert list(rho["view"]) == VIEWS
    jobs = len(client.list_jobs())
    page.button(key="attention.attr_run").click()       # the same attribution again: read from the cache
    page.run()
    assert "attention.attr_job" not in page.session_state and len(client.list_jobs()) == jobs
    assert any(d.value.equals(rho) for d in page.dataframe)
    # neither the capture nor the attribution loaded a model in this (the server's) process
    assert not [key for key in model_cache.held() if key[0] == "vggt"]


def test_a_capture_whose_worker_dies_fails_and_its_staging_is_removed(ray_cache, scene):
    """Last of the module (its worker is killed): 30 views keep the capture running long after the kill."""
    import os
    import signal

    from core.jobs import client

    spec = client.attention_spec(scene, scene.uniform_views(30), weights=TINY)
    job_id, _ = client.submit(spec)
    job = wait_state(job_id, ("running", "done", "failed", "cancelled"))
    assert job["state"] == "running", job
    leftover = ray_cache / "attention" / f".tmp-{spec['key']}-deadbeef"   # what a worker killed while storing leaves
    leftover.mkdir(parents=True)
    (leftover / "q-0.npy").write_bytes(b"half")
    os.kill(job["worker"]["pid"], signal.SIGKILL)
    with pytest.raises(client.JobError, match="worker running this job died"):
        client.wait(job_id, timeout=120)
    assert not leftover.exists() and not (ray_cache / "attention" / spec["key"]).exists()
