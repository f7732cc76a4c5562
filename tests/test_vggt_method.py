"""The ``vggt`` method end to end (random-tiny), checkpoint handling and the benchmark."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.models import weights
from core.models.vggt import VGGT, VGGTConfig
from core.models.vggt.bench import bench
from core.models.vggt.checkpoints import (VGGT_1B, load_pretrained, model_from_state_dict)
from core.models.vggt.flops import vggt_flops
from core.data.scene import Scene
from core.errors import OptionError, UserError
from core.models import model_cache
from core.models.vggt.method import METHOD, VGGTOptions
from core.runner import RANDOM_NOTE, execute


def availability(values):
    return METHOD.availability(METHOD.parse_options(values))
from tests.conftest import load_reference, load_vggt_reference, prefixed


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    n, h, w = 3, 64, 80
    k = np.array([[70.0, 0, 40], [0, 70.0, 32], [0, 0, 1]])
    poses = np.stack([np.eye(4)] * n)
    poses[:, 0, 3] = np.arange(n) * 0.1
    masks = np.ones((n, h, w), bool)
    masks[1] = False                                   # view 1: nothing is object
    masks[2, :, : w // 2] = False                      # view 2: only the right half
    return Scene("synthetic", [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)],
                 [f"{i}.png" for i in range(n)], np.stack([k] * n), poses, masks=masks)


@pytest.fixture(scope="module")
def recon(scene):
    return execute(METHOD, scene, [0, 1, 2], {"weights": "random-tiny"})


def test_method_metadata():
    assert METHOD.name == "vggt" and METHOD.family == "discriminative"
    assert VGGTOptions().weights == "pretrained" and VGGTOptions().confidence_percentile == 50.0
    assert availability({"weights": "random-tiny"}).ok


def test_run_returns_a_complete_reconstruction(recon, scene):
    n = 3
    assert recon.method == "vggt" and recon.view_ids == [0, 1, 2]
    assert RANDOM_NOTE in recon.notes and recon.weights_kind == "random-tiny"
    assert recon.options == {**VGGTOptions().__dict__, "weights": "random-tiny"}
    assert recon.cam_from_world.shape == (n, 4, 4) and recon.intrinsics.shape == (n, 3, 3)
    assert recon.depth_maps.shape == (n, 420, 518) and recon.depth_confidence.shape == (n, 420, 518)
    m = len(recon.points)
    assert m > 0 and np.isfinite(recon.points).all()
    assert recon.colors.shape == (m, 3) and recon.colors.dtype == np.uint8
    assert recon.confidence.shape == (m,) and recon.source_view.shape == (m,)
    assert set(np.unique(recon.source_view)) <= {0, 1, 2}
    # percentile 50 over all pixels keeps about half of them
    assert abs(m - n * 420 * 518 / 2) <= 0.01 * n * 420 * 518
    assert recon.confidence.min() >= np.percentile(recon.depth_confidence, 50) - 1e-6
    assert recon.parameter_count == sum(p.numel() for p in VGGT(VGGTConfig.tiny()).parameters())
    assert recon.seconds > 0 and recon.peak_memory_bytes >= 0 and recon.device == "cpu"


def test_intrinsics_are_in_original_pixels(recon):
    """The stored intrinsics are the camera of the method's own points, in the scene's pixels.

    Measured without the intrinsics code: a ramp image (red = 3u, green = 3v) through the same
    preprocessing shows which original pixel each network pixel sees (bicubic reproduces a linear
    ramp away from the borders; uint8 rounding leaves 1/6 pixel). The depth branch's points,
    projected with the stored intrinsics and poses, must land there."""
    from core import geometry
    from core.models.vggt.processing import preprocess_images

    ramp = np.zeros((64, 80, 3), np.uint8)
    ramp[..., 0], ramp[..., 1] = 3 * np.arange(80)[None], 3 * np.arange(64)[:, None]
    x, _ = preprocess_images([ramp], "crop")
    seen = np.stack([x[0, 0].numpy(), x[0, 1].numpy()], -1) * 255 / 3  # [420,518,2] original (u, v)
    inside = np.all((seen > 2) & (seen < [77, 61]), -1)
    checked = 0
    for view in range(3):
        if not np.isfinite(recon.intrinsics[view]).all():  # random-tiny can decode a zero field of view
            continue
        uv, _ = geometry.project(recon.point_maps[view][inside].astype(np.float64), recon.intrinsics[view],
                                 recon.cam_from_world[view])
        error = uv - seen[inside]
        # mean: intrinsics mapped in continuous coordinates were (1 - 80/518) / 2 = 0.42 px off here
        assert np.abs(error.mean(0)).max() < 0.01 and np.abs(error).max() < 0.2
        checked += 1
    assert checked >= 1
    k_net = np.array(recon.extra["intrinsics_network"])
    # so, crop mode 64x80 -> 420x518: VGGT's principal point (W/2, H/2) = (259, 210), half a network pixel
    # right of and below the network image's centre, maps back to half a network pixel (0.5 / s original
    # pixels) off the original centre (39.5, 31.5): u = (259 + 1/2) / s - 1/2 with s = 518 / 80
    np.testing.assert_allclose(recon.intrinsics[:, 0, 2], 39.5 + 0.5 * 80 / 518, rtol=1e-12)
    np.testing.assert_allclose(recon.intrinsics[:, 1, 2], 31.5 + 0.5 * 64 / 420, rtol=1e-12)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(recon.intrinsics[:, 0, 0], k_net[:, 0, 0] * 80 / 518)
        np.testing.assert_allclose(recon.intrinsics[:, 1, 1], k_net[:, 1, 1] * 64 / 420)


def test_points_lie_on_the_predicted_depth_in_each_camera(recon):
    """Depth+camera branch: moving a view's points into its predicted camera gives z = depth."""
    for view in range(3):
        pts = recon.points[recon.source_view == view][:50].astype(np.float64)
        cam = pts @ recon.cam_from_world[view, :3, :3].T + recon.cam_from_world[view, :3, 3]
        z = np.sort(cam[:, 2])
        depths = recon.depth_maps[view].reshape(-1)
        nearest = depths[np.abs(depths[None, :] - z[:, None]).argmin(1)]
        np.testing.assert_allclose(z, nearest, rtol=1e-4)


def test_object_masks_point_map_branch_and_pad_mode(scene):
    options = {"weights": "random-tiny", "use_object_masks": True, "branch": "point map",
               "preprocess": "pad", "confidence_percentile": 0.0}
    recon = execute(METHOD, scene, [2, 1], options)
    assert recon.view_ids == [2, 1] and recon.point_maps.shape == (2, 518, 518, 3)
    assert not (recon.source_view == 1).any()          # scene view 1's mask is empty
    # pad mode: 64x80 -> 420x518 inside 518x518; only the right half of view 2 is object
    assert (recon.source_view == 0).sum() == 518 * 420 // 2
    # the padding offset cancels: the same principal point as in crop mode (test_intrinsics_are_in_original_pixels)
    np.testing.assert_allclose(recon.intrinsics[:, :2, 2], [[39.5 + 0.5 * 80 / 518, 31.5 + 0.5 * 64 / 420]] * 2,
                               atol=1e-9)


def test_bad_views_and_options_raise_user_errors_naming_the_fix(scene):
    with pytest.raises(UserError, match="at least 1"):
        execute(METHOD, scene, [], {"weights": "random-tiny"})
    with pytest.raises(UserError, match=r"in 0\.\.2; got \[7\]"):
        execute(METHOD, scene, [0, 7], {"weights": "random-tiny"})
    with pytest.raises(UserError, match="distinct"):
        execute(METHOD, scene, [0, 0], {"weights": "random-tiny"})
    with pytest.raises(OptionError, match=r"unknown branch 'mesh' \(choices: depth\+camera, point map\)"):
        execute(METHOD, scene, [0], {"weights": "random-tiny", "branch": "mesh"})
    with pytest.raises(OptionError, match="unknown option"):
        execute(METHOD, scene, [0], {"weights": "random-tiny", "colour": 1})
    with pytest.raises(OptionError, match="choices: pretrained, random-tiny, random-full"):
        execute(METHOD, scene, [0], {"weights": "random-huge"})
    with pytest.raises(OptionError, match=r"confidence_percentile must be in \[0, 100\]"):
        execute(METHOD, scene, [0], {"weights": "random-tiny", "confidence_percentile": 101})


def test_model_loading_is_timed_apart_from_the_reconstruction(scene, monkeypatch):
    """The model is cached per process, so a run's seconds must not depend on who loaded it first."""
    import time

    from core.models.vggt import method

    def slow_load(options, device):
        time.sleep(3.0)
        return method.random_tiny_model()

    model_cache.clear()
    monkeypatch.setattr(METHOD, "load", slow_load)
    recon = execute(METHOD, scene, [0], {"weights": "random-tiny"})
    assert recon.extra["model_load_seconds"] >= 3.0
    assert recon.seconds < recon.extra["model_load_seconds"]
    again = execute(METHOD, scene, [1], {"weights": "random-tiny"})   # warm: no second load
    assert again.extra["model_load_seconds"] == recon.extra["model_load_seconds"]
    model_cache.clear()


def test_pretrained_unavailable_without_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path))
    monkeypatch.setattr(weights, "_hf_cached", lambda checkpoint: None)
    status = availability({"weights": "pretrained"})
    assert not status.ok and "VGGT-1B" in status.missing
    assert availability({"weights": "random-full"}).ok  # VGGT-1B's architecture, no checkpoint needed
    assert status.fix_command == "python -m core weights fetch vggt"
    assert {"vggt-1b", "vggt-1b-commercial"} <= set(weights.registered())
    assert weights.registered()["vggt-1b-commercial"].repo_id == "facebook/VGGT-1B-Commercial"


def _fixture_state():
    _, tensors = load_vggt_reference()
    return (prefixed(tensors, "weights."),
            tensors["input.images"], tensors["output.depth"])


def test_checkpoint_file_loads_through_weights_module(tmp_path):
    state, images, depth = _fixture_state()
    track, _ = load_reference("vggt_track_tiny_reference.safetensors")
    state.update({k: v for k, v in prefixed(track, "weights.").items()
                  if k.startswith("track_head.")})                # published: checked, then dropped
    path = tmp_path / "model.pt"
    torch.save(state, path)
    model = load_pretrained(VGGT_1B, path, config=VGGTConfig.tiny())
    assert not any(b.is_meta for b in model.buffers())
    with torch.inference_mode():
        out = model(images, heads=("depth",))
    torch.testing.assert_close(out.depth, depth, rtol=1e-4, atol=1e-5)


def test_checkpoint_of_another_model_is_rejected_naming_tensors():
    state, _, _ = _fixture_state()
    bad = dict(state)
    bad["aggregator.camera_token"] = torch.zeros(1, 2, 1, 48)        # mis-shaped
    del bad["depth_head.norm.weight"]                                 # missing
    bad["decoder.layers.0.weight"] = torch.zeros(4, 4)                # unexpected
    with pytest.raises(weights.BadCheckpoint) as error:
        model_from_state_dict(bad, VGGTConfig.tiny())
    message = str(error.value)
    for name in ("aggregator.camera_token", "depth_head.norm.weight", "decoder.layers.0.weight"):
        assert name in message
    other = torch.nn.Sequential(torch.nn.Linear(4, 4)).state_dict()  # a different model
    with pytest.raises(weights.BadCheckpoint, match="0.weight"):
        model_from_state_dict(other, VGGTConfig.tiny())


def test_bench_reports_time_memory_and_flops():
    rows = bench(["--tiny", "--views", "1", "2", "--size", "70", "--height", "56"])
    assert [r["views"] for r in rows] == [1, 2]
    for row in rows:
        assert "random weights" in row["note"] and row["dtype"] == "float32"
        assert row["seconds"] > 0 and row["peak_rss_bytes"] > 0
        assert row["flops"] == vggt_flops(row["views"], 56, 70, VGGTConfig.tiny())["total"]
        assert row["gflops_per_s"] == pytest.approx(row["flops"] / row["seconds"] / 1e9, rel=0.01)
        json.dumps(row)
    with pytest.raises(ValueError, match="multiples of 14"):
        bench(["--tiny", "--views", "1", "--size", "60"])


STAND_IN = '''
"""A stand-in for the authors' package (tests only): our tiny VGGT behind their interface."""
from core.models.vggt.config import VGGTConfig
from core.models.vggt.modeling_vggt import VGGT as Ours

FIELDS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")


class VGGT(Ours):
    def __init__(self, tiny=False):
        super().__init__(VGGTConfig.tiny() if tiny else VGGTConfig())
        EXTRA

    def forward(self, images):
        out = super().forward(images)
        return {field: getattr(out, field) for field in FIELDS}
'''


def _stand_in(root, extra: str = "pass"):
    package = root / "vggt" / "models"
    package.mkdir(parents=True)
    (root / "vggt" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "vggt.py").write_text(STAND_IN.replace("EXTRA", extra))
    return root


def test_against_authors_alternates_and_compares_outputs(tmp_path, monkeypatch):
    """The comparison's plumbing, with a stand-in for the authors' checkout (the real one is
    fetched by whoever measures, never committed): same weights in both, identical outputs,
    alternating rounds, the ratio of the best times; a checkout whose weights differ is refused."""
    import sys

    for name in [m for m in sys.modules if m == "vggt" or m.startswith("vggt.")]:
        monkeypatch.delitem(sys.modules, name)
    rows = bench(["--tiny", "--views", "2", "--size", "70", "--height", "56", "--repeats", "2",
                  "--matmul-size", "64", "--against-authors", str(_stand_in(tmp_path / "a"))])
    (row,) = rows
    assert len(row["ours_seconds"]) == len(row["authors_seconds"]) == 2
    assert row["ratio_to_authors"] == pytest.approx(min(row["ours_seconds"]) / min(row["authors_seconds"]))
    paired = [o / t for o, t in zip(row["ours_seconds"], row["authors_seconds"])]
    assert row["round_ratios"] == pytest.approx(paired)
    assert row["median_round_ratio"] == pytest.approx(sum(paired) / 2)     # the median of two rounds
    assert row["identical_outputs"] and set(row["max_abs_difference"].values()) == {0.0}
    for name in [m for m in sys.modules if m == "vggt" or m.startswith("vggt.")]:
        monkeypatch.delitem(sys.modules, name)
    other = _stand_in(tmp_path / "b", "self.extra_layer = __import__('torch').nn.Linear(2, 2)")
    with pytest.raises(ValueError, match="does not match ours.*unexpected|missing.*extra_layer"):
        bench(["--tiny", "--views", "1", "--size", "70", "--matmul-size", "64", "--against-authors", str(other)])
