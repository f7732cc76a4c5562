"""The ``pi3`` and ``pi3x`` methods end to end (random-tiny), checkpoints, CLI and the benchmark."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from core import geometry
from core.errors import OptionError, UserError
from core.models import registry, weights
from core.models.pi3 import Pi3Config
from core.models.pi3.bench import bench
from core.models.pi3.checkpoints import load_pretrained, model_from_state_dict
from core.models.pi3.flops import pi3_flops
from core.models.pi3.method import METHOD_PI3, METHOD_PI3X, Pi3XOptions
from core.runner import RANDOM_NOTE, execute
from tests.conftest import ROOT, load_reference, prefixed

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"weights": "random-tiny"}


def test_registered_with_licence_and_fetch_keys(tmp_path, monkeypatch):
    assert registry.get("pi3") is METHOD_PI3 and registry.get("pi3x") is METHOD_PI3X
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path))
    monkeypatch.setattr(weights, "_hf_cached", lambda checkpoint: None)
    for method, key, repo in ((METHOD_PI3, "pi3", "yyfz233/Pi3"), (METHOD_PI3X, "pi3x", "yyfz233/Pi3X")):
        options = method.parse_options({"weights": "pretrained"})
        status = method.availability(options)
        assert not status.ok and status.fix_command == f"python -m core weights fetch {key}"
        assert method.licences(options) == [f"{key}: CC BY-NC 4.0"]
        assert weights.registered()[key].repo_id == repo
        assert weights.registered()[key].filename == "model.safetensors"
        assert method.availability(method.parse_options(TINY)).ok


def test_random_tiny_run_on_the_toy_scene_is_in_the_first_view_frame(sample_scene):
    recon = execute(METHOD_PI3, sample_scene, [0, 10], TINY)
    assert recon.method == "pi3" and RANDOM_NOTE in recon.notes and recon.weights_kind == "random-tiny"
    np.testing.assert_allclose(recon.cam_from_world[0], np.eye(4), atol=1e-6)
    # view 0's point map is its local point map: the depth is its z, seen from the identity camera
    np.testing.assert_allclose(recon.point_maps[0][..., 2], recon.depth_maps[0], rtol=1e-4, atol=1e-5)
    # every view's points, moved into its camera, have z = that view's depth (local points)
    for view in range(2):
        cam = geometry.transform_points(recon.cam_from_world[view],
                                        recon.point_maps[view].reshape(-1, 3).astype(np.float64))
        np.testing.assert_allclose(cam[:, 2], recon.depth_maps[view].reshape(-1), rtol=1e-3, atol=1e-4)
    # the confidence filter: sigmoid > 0.1 of every kept point, all others dropped
    kept = (recon.point_confidence > 0.1).sum()
    assert len(recon.points) == kept and recon.confidence.min() > 0.1
    h, w = recon.extra["network_hw"]
    assert h * w <= 255_000 and h % 14 == w % 14 == 0


def test_percentile_option_and_object_masks(sample_scene):
    recon = execute(METHOD_PI3, sample_scene, [0, 10], {**TINY, "confidence_percentile": 75.0,
                                                        "min_confidence": 0.0})
    total = recon.point_confidence.size
    assert abs(len(recon.points) - total / 4) <= 0.01 * total
    assert recon.confidence.min() >= np.percentile(recon.point_confidence, 75) - 1e-6


def test_pi3x_conditioning_on_the_scene_cameras_changes_the_reconstruction(sample_scene):
    plain = execute(METHOD_PI3X, sample_scene, [0, 10], TINY)
    posed = execute(METHOD_PI3X, sample_scene, [0, 10], {**TINY, "condition_on": "intrinsics+cameras"})
    assert posed.extra["conditioned_on"] == "intrinsics+cameras" and "conditioned_on" not in plain.extra
    assert plain.extra["metric_scale"] > 0 and posed.extra["metric_scale"] > 0
    assert not np.allclose(plain.point_maps, posed.point_maps, atol=1e-3)


def test_pi3x_refuses_scene_cameras_with_nan_and_a_single_posed_view(sample_scene):
    broken = dataclasses.replace(sample_scene)
    broken.cam_from_world = sample_scene.cam_from_world.copy()
    broken.cam_from_world[10] = np.nan
    with pytest.raises(UserError, match=r"cam_from_world of view\(s\) \[10\] contain NaN"):
        execute(METHOD_PI3X, broken, [0, 10], {**TINY, "condition_on": "cameras"})
    with pytest.raises(UserError, match="at least 2 views"):
        execute(METHOD_PI3X, sample_scene, [0], {**TINY, "condition_on": "cameras"})
    assert Pi3XOptions().condition_on == "none"
    with pytest.raises(OptionError, match="choices: none, intrinsics, cameras, intrinsics\\+cameras"):
        METHOD_PI3X.parse_options({"condition_on": "depth"})


def test_bad_inputs_get_one_clear_message(sample_scene):
    with pytest.raises(UserError, match="at least 1"):
        execute(METHOD_PI3, sample_scene, [], TINY)
    for image, pattern in ((np.zeros((64, 64), np.uint8), "grayscale"),
                           (np.zeros((64, 64, 4), np.uint8), "RGBA"),
                           (np.zeros((10, 64, 3), np.uint8), "at least 14x14")):
        scene = dataclasses.replace(sample_scene)
        scene.images = list(sample_scene.images)
        scene.images[0] = image
        with pytest.raises(UserError, match=pattern):
            METHOD_PI3.predict(METHOD_PI3.load(METHOD_PI3.parse_options(TINY), "cpu"), scene, [0, 1],
                               METHOD_PI3.parse_options(TINY), lambda *a: None, "cpu")


def _tiny_state(name: str) -> dict:
    tensors, _ = load_reference(name)
    return prefixed(tensors, "weights.")


def test_checkpoint_file_loads_strictly_and_pi3x_skips_only_the_conditioning(tmp_path):
    from safetensors.torch import save_file

    tensors, _ = load_reference("pi3x_tiny_reference.safetensors")
    path = tmp_path / "model.safetensors"
    save_file(prefixed(tensors, "weights."), str(path))
    full = load_pretrained("pi3x", path, config=Pi3Config.tiny("pi3x"))
    lean = load_pretrained("pi3x", path, multimodal=False, config=Pi3Config.tiny("pi3x"))
    assert len(lean.state_dict()) < len(full.state_dict())
    with torch.inference_mode():
        out = lean(tensors["input.images"])
    torch.testing.assert_close(out.points, tensors["output.plain.points"], rtol=1e-4, atol=1e-5)


def test_checkpoint_of_another_model_is_rejected_naming_tensors():
    pi3_state = _tiny_state("pi3_tiny_reference.safetensors")
    with pytest.raises(weights.BadCheckpoint) as error:       # a π³ checkpoint given to Pi3X
        model_from_state_dict(pi3_state, Pi3Config.tiny("pi3x"))
    message = str(error.value)
    assert "413 missing" in message and "conf_head.output_block.0.0.weight" in message
    assert "unexpected" in message and "point_head.proj.weight" in message
    bad = dict(pi3_state)
    bad["register_token"] = torch.zeros(1, 1, 4, 32)
    with pytest.raises(weights.BadCheckpoint, match=r"register_token \[1, 1, 4, 32\] != \[1, 1, 5, 32\]"):
        model_from_state_dict(bad, Pi3Config.tiny("pi3"))


def test_cli_run_and_bad_option(tmp_path):
    base = [sys.executable, "-m", "core", "--cache", str(tmp_path / "cache"), "run", "pi3",
            "--scene", "sample_data/toy", "--views", "0", "10"]
    # in-process run (the suite does not start Ray); a fresh environment otherwise, so nothing else leaks in
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "RECONBENCH_EXECUTOR": "inline"}
    ok = subprocess.run(base + ["--weights", "random-tiny"], cwd=ROOT, capture_output=True, text=True,
                        env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(base + ["--weights", "random-huge"], cwd=ROOT, capture_output=True, text=True,
                         env=env, timeout=300)
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "random-tiny" in errors[0]


def test_method_flops_follow_the_options():
    options = METHOD_PI3X.parse_options({**TINY, "condition_on": "cameras"})
    # the toy scene's pictures at the pixel limit: the model's input size
    expected = pi3_flops(3, 434, 574, Pi3Config.tiny("pi3x"), ("poses",))["total"]
    assert METHOD_PI3X.flops(options, 3, 480, 640) == expected
    assert METHOD_PI3.flops(METHOD_PI3.parse_options({}), 2, 480, 640) == \
        pi3_flops(2, 434, 574, Pi3Config())["total"]


def test_bench_reports_time_memory_flops_and_matmul_ratio():
    rows = bench(["--views", "1", "2", "--size", "70", "--height", "56", "--weights", "random-tiny",
                  "--variant", "pi3x", "--matmul-size", "128"])
    assert [r["views"] for r in rows] == [1, 2]
    for row in rows:
        assert "random weights" in row["note"] and row["dtype"] == "float32"
        assert row["seconds"] > 0 and row["peak_rss_bytes"] > 0 and row["matmul_gflops_per_s"] > 0
        config = dataclasses.replace(Pi3Config.tiny("pi3x"), multimodal=False)   # images only
        assert row["flops"] == pi3_flops(row["views"], 56, 70, config)["total"]
        assert row["gflops_per_s"] == pytest.approx(row["flops"] / row["seconds"] / 1e9)
        assert row["ratio_to_matmul"] == pytest.approx(row["gflops_per_s"] / row["matmul_gflops_per_s"])
        json.dumps(row)
    with pytest.raises(ValueError, match="multiples of 14"):
        bench(["--views", "1", "--size", "60", "--weights", "random-tiny"])
