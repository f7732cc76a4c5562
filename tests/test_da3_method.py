"""The ``da3-small`` / ``da3-base`` methods end to end (random-tiny), bad input, checkpoints,
the analytic FLOP count and the benchmark (tiny options only)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from core import geometry
from core.data.scene import Scene
from core.errors import UserError
from core.models import registry, weights
from core.models.da3.checkpoints import DA3_BASE, DA3_SMALL, load_pretrained
from core.models.da3.config import DA3Config
from core.models.da3.flops import da3_flops
from core.models.da3.method import BASE, SMALL, DA3Options, random_tiny_model
from core.models.da3.processing import DA3ImageError, preprocess_images
from core.runner import RANDOM_NOTE, execute
from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"weights": "random-tiny", "process_res": 70}


@pytest.fixture(scope="module")
def recon(sample_scene):
    return execute(SMALL, sample_scene, [0, 10, 20], TINY)


def test_registered_names_checkpoints_and_licences():
    assert registry.get("da3-small") is SMALL and registry.get("da3-base") is BASE
    assert SMALL.family == BASE.family == "discriminative"
    for method, checkpoint, repo in ((SMALL, DA3_SMALL, "depth-anything/DA3-SMALL"),
                                     (BASE, DA3_BASE, "depth-anything/DA3-BASE")):
        options = method.parse_options({"weights": "pretrained"})
        files = method.checkpoints(options)
        assert [c.filename for c in files] == ["model.safetensors", "config.json"]
        assert {c.repo_id for c in files} == {repo} and {c.licence for c in files} == {"Apache-2.0"}
        assert {c.fetch_key for c in files} == {method.name}
        assert files[0] is checkpoint and "Apache-2.0" in method.licences(options)[0]
        assert method.checkpoints(method.parse_options(TINY)) == ()
        assert "not covered" in method.description
    assert weights.registered()["da3-small-config"].fetch_key == "da3-small"


def test_missing_pretrained_weights_name_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("RECONBENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(weights, "_hf_cached", lambda checkpoint: None)
    available = BASE.availability(BASE.parse_options({"weights": "pretrained"}))
    assert not available.ok and "python -m core weights fetch da3-base" in available.message()
    (tmp_path / "da3-base").mkdir()
    (tmp_path / "da3-base" / "model.safetensors").write_bytes(b"")
    available = BASE.availability(BASE.parse_options({"weights": "pretrained"}))
    assert not available.ok and "config.json" in available.message()


def test_random_tiny_run_is_a_complete_reconstruction(recon, sample_scene):
    assert recon.method == "da3-small" and recon.view_ids == [0, 10, 20]
    assert recon.weights_kind == "random-tiny" and RANDOM_NOTE in recon.notes
    assert recon.options == {**DA3Options().__dict__, **TINY}
    h, w = recon.extra["network_hw"]
    sh, sw = sample_scene.images[0].shape[:2]
    assert max(h, w) == pytest.approx(70, abs=7) and h % 14 == 0 and w % 14 == 0
    assert recon.depth_maps.shape == (3, h, w) and recon.depth_confidence.shape == (3, h, w)
    # output frame: the first view's camera
    np.testing.assert_allclose(recon.cam_from_world[0], np.eye(4), atol=1e-9)
    assert recon.extra["reference_view"] in (0, 10, 20)
    # percentile 40 keeps 60 % of the pixels
    assert abs(len(recon.points) - 0.6 * 3 * h * w) <= 0.01 * 3 * h * w
    assert recon.parameter_count == sum(p.numel() for p in random_tiny_model().parameters())
    # intrinsics in the scene's pixels: the network's mapped back through the pure resize
    k_net = np.array(recon.extra["intrinsics_network"])
    np.testing.assert_allclose(recon.intrinsics[:, 0, 0], k_net[:, 0, 0] * sw / w)
    np.testing.assert_allclose(recon.intrinsics[:, 1, 1], k_net[:, 1, 1] * sh / h)


def test_points_lie_on_the_predicted_depth(recon):
    h, w = recon.extra["network_hw"]
    k_net = np.array(recon.extra["intrinsics_network"])
    for view in range(3):
        pts = recon.points[recon.source_view == view][:50].astype(np.float64)
        uv, z = geometry.project(pts, k_net[view], recon.cam_from_world[view])
        col, row = np.round(uv).astype(int).T
        np.testing.assert_allclose(z, recon.depth_maps[view][row, col], rtol=1e-4)


def test_ray_cameras_are_replayable(sample_scene):
    values = {**TINY, "camera_source": "rays", "ransac_seed": 3}
    a = execute(SMALL, sample_scene, [0, 10, 20], values)
    b = execute(SMALL, sample_scene, [0, 10, 20], values)
    np.testing.assert_array_equal(a.cam_from_world, b.cam_from_world)
    draws = np.array(a.extra["ransac_draws"])
    assert draws.shape == (100, 8)
    c = execute(SMALL, sample_scene, [0, 10, 20], {**values, "ransac_seed": 4})
    assert not np.array_equal(np.array(c.extra["ransac_draws"]), draws)


def test_conditioned_run_outputs_the_scenes_cameras_in_the_first_views_frame(sample_scene):
    views = [0, 10, 20]
    recon = execute(BASE, sample_scene, views, {**TINY, "condition_on_scene_cameras": True})
    poses = geometry.as_4x4(sample_scene.cam_from_world[views])
    np.testing.assert_allclose(recon.cam_from_world, poses @ np.linalg.inv(poses[0]), atol=1e-6)
    np.testing.assert_allclose(recon.intrinsics, sample_scene.intrinsics[views])
    assert recon.extra["umeyama_scale"] > 0 and "scene's units" in recon.extra["frame"]
    plain = execute(BASE, sample_scene, views, TINY)
    assert not np.allclose(plain.depth_maps, recon.depth_maps)


def test_bad_input_gets_one_clear_message(sample_scene):
    with pytest.raises(UserError, match="at least 1 view"):
        execute(SMALL, sample_scene, [], TINY)
    with pytest.raises(DA3ImageError, match="0 views"):
        preprocess_images([])
    with pytest.raises(DA3ImageError, match=r"needs at least 14x14 \(one patch\)"):
        preprocess_images([np.zeros((10, 40, 3), np.uint8)])
    with pytest.raises(DA3ImageError, match="grayscale"):
        preprocess_images([np.zeros((40, 40), np.uint8)])
    with pytest.raises(DA3ImageError, match="RGBA"):
        preprocess_images([np.zeros((40, 40, 4), np.uint8)])
    with pytest.raises(UserError, match="at least 3 views"):
        execute(SMALL, sample_scene, [0, 10], {**TINY, "condition_on_scene_cameras": True})
    small = Scene("small", [np.zeros((12, 12, 3), np.uint8)], ["a.png"],
                  sample_scene.intrinsics[:1], sample_scene.cam_from_world[:1])
    with pytest.raises(UserError, match=r"needs at least 14x14 \(one patch\)"):
        execute(SMALL, small, [0], TINY)


def test_a_checkpoint_of_another_model_is_refused(tmp_path, sample_scene):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"aggregator.camera_token": torch.zeros(1, 2, 1, 8)}, str(path))
    with pytest.raises(weights.BadCheckpoint, match="unexpected.*aggregator.camera_token"):
        load_pretrained("small", path)
    with pytest.raises(UserError, match="missing"):
        execute(SMALL, sample_scene, [0], {"weights": "pretrained", "checkpoint_path": str(path)})


def test_cli_runs_and_refuses_a_bad_option(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "core", "--cache", str(tmp_path / "cache"), "run", "da3-small",
            "--scene", "sample_data/toy", "--views", "0", "10"]
    done = subprocess.run(base + ["--weights", "random-tiny", "--process-res", "70"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert '"weights_kind": "random-tiny"' in done.stdout
    bad = subprocess.run(base + ["--weights", "random-tiny", "--camera-source", "magic"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "error:" in bad.stderr and "camera decoder" in bad.stderr


def test_flop_count_matches_torch_flop_counter():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model = random_tiny_model()
    config = DA3Config.tiny()
    for views, h, w, cameras in ((3, 56, 70, False), (5, 84, 42, True), (1, 28, 28, False)):
        x = torch.randn(1, views, 3, h, w)
        known = ((torch.eye(4).repeat(1, views, 1, 1),
                  torch.tensor([[50.0, 0, w / 2], [0, 50, h / 2], [0, 0, 1]]).repeat(1, views, 1, 1))
                 if cameras else (None, None))
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(x, *known)                       # math attention: its matmuls are counted
        # left out: the reference-view similarities and the 4x4 pose products (< 1e-5)
        assert da3_flops(views, h, w, config, cameras)["total"] == pytest.approx(
            counter.get_total_flops(), rel=1e-5)
    full = da3_flops(8, 518, 518)
    assert full["global_attention"] == pytest.approx(4 * da3_flops(4, 518, 518)["global_attention"])


def test_bench_reports_time_memory_flops_and_the_matmul_ratio():
    from core.bench import run

    rows = run("da3", ["--weights", "random-tiny", "--views", "1", "3", "--size", "70",
                       "--height", "56", "--matmul-size", "64"])
    assert [r["views"] for r in rows] == [1, 3]
    for row in rows:
        assert row["bench"] == "da3" and "random weights" in row["note"]
        assert row["seconds"] > 0 and row["peak_rss_bytes"] > 0 and row["matmul_gflops_per_s"] > 0
        assert row["flops"] == da3_flops(row["views"], 56, 70, DA3Config.tiny())["total"]
        assert row["gflops_per_s"] == pytest.approx(row["flops"] / row["seconds"] / 1e9)
        assert row["ratio_to_matmul"] == pytest.approx(row["gflops_per_s"] / row["matmul_gflops_per_s"])
        json.dumps(row)
    with pytest.raises(ValueError, match="multiples of 14"):
        run("da3", ["--weights", "random-tiny", "--views", "1", "--size", "60"])
