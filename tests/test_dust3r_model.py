"""DUSt3R network against the authors' fixture, full-size names/shapes, weights, and the runner."""
from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from core import runner
from core.errors import OptionError, UserError
from core.models import weights as weights_lib
from core.models.dust3r import DUSt3R, DUSt3RConfig
from core.models.dust3r.method import METHOD
from core.models.dust3r.pair_geometry import two_views
from core.data.scene import Scene
from tests.conftest import load_reference, prefixed

FIXTURES = Path(__file__).parent / "fixtures"
# One forward pass on any CPU and thread count: README "DUSt3R", Tolerances observed (2 threads,
# float64 or a batch of six move outputs by <= 1.4e-5 relative): "rtol 1e-4 with atol 1e-5 is safe".
TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def fixture():
    return load_reference("dust3r_tiny_reference.safetensors")


@pytest.fixture(scope="module")
def weights(fixture):
    return prefixed(fixture[0], "weights.")


@pytest.fixture(scope="module")
def model(fixture, weights):
    _, meta = fixture
    # inference_config = the training config with PatchEmbedDust3R / landscape_only false; the
    # fixture-only DPT widths are listed in `config` only
    dpt = {k: v for k, v in json.loads(meta["config"]).items() if k.startswith("dpt_")}
    m = DUSt3R(DUSt3RConfig.from_dict({**json.loads(meta["inference_config"]), **dpt})).eval()
    m.load_checkpoint_state(weights)
    return m


def _close(actual, expected, name):
    assert actual.shape == expected.shape, name
    torch.testing.assert_close(actual.float(), expected.float(), **TOL, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("prefix", ["", "portrait.", "mixed."])
def test_outputs_and_intermediates_match_reference(model, fixture, prefix):
    t, _ = fixture
    inter = {}
    with torch.no_grad():
        pred1, pred2 = model(t[prefix + "input.view1.img"], t[prefix + "input.view2.img"], intermediates=inter)
    o = prefix + "output."
    _close(pred1.pts3d, t[o + "pred1.pts3d"], "pred1.pts3d")
    _close(pred1.conf, t[o + "pred1.conf"], "pred1.conf")
    _close(pred2.pts3d_in_other_view, t[o + "pred2.pts3d_in_other_view"], "pred2.pts3d_in_other_view")
    _close(pred2.conf, t[o + "pred2.conf"], "pred2.conf")
    for side in ("1", "2"):
        _close(inter["feat" + side], t[o + "feat" + side], "feat" + side)
        assert torch.equal(inter["pos" + side], t[o + "pos" + side])
        _close(inter[f"head{side}_raw"], t[o + f"head{side}_raw"], f"head{side}_raw")
        assert len(inter["dec" + side]) == 11
        for layer, tokens in enumerate(inter["dec" + side]):
            _close(tokens, t[o + f"dec{side}.{layer}"], f"dec{side}.{layer}")


def test_portrait_outputs_equal_the_transposed_landscape_layout_reference(model, fixture):
    t, _ = fixture
    with torch.no_grad():
        pred1, pred2 = model(t["portrait.input.view1.img"], t["portrait.input.view2.img"])
    ref = "portrait_landscape_layout.output."
    _close(pred1.pts3d.transpose(1, 2), t[ref + "pred1.pts3d"], "pts3d")
    _close(pred2.conf.transpose(1, 2), t[ref + "pred2.conf"], "conf2")


def test_training_config_builds_the_same_model(fixture, weights):
    t, meta = fixture
    cfg = DUSt3RConfig.from_dict(meta["config"])  # ManyAR / landscape_only, JSON Infinity
    assert cfg.depth_mode == ("exp", -float("inf"), float("inf")) and cfg.dpt_hooks == [0, 5, 7, 10]
    m = DUSt3R.from_state_dict(weights, cfg).eval()  # meta-device build, tensors assigned
    assert sum(p.numel() for p in m.parameters()) == 384_792
    with torch.no_grad():
        pred1, _ = m(t["input.view1.img"], t["input.view2.img"])
    _close(pred1.pts3d, t["output.pred1.pts3d"], "pred1.pts3d")
    with pytest.raises(ValueError, match="unknown DUSt3R config key"):
        DUSt3RConfig.from_dict({"enc_width": 3})


def test_loaded_aliases_are_tied(model, weights):
    sd = model.state_dict()
    assert "downstream_head1.dpt.scratch.layer_rn.2.weight" not in weights
    torch.testing.assert_close(sd["downstream_head1.dpt.scratch.layer_rn.2.weight"],
                               weights["downstream_head1.dpt.scratch.layer3_rn.weight"], rtol=0, atol=0)


@pytest.mark.parametrize("config_key", ["config", "hub_config"])
def test_full_size_names_and_shapes_match_manifest(config_key):
    manifest = json.loads((FIXTURES / "dust3r_512_dpt_state_dict_manifest.json").read_text())
    with torch.device("meta"):
        m = DUSt3R(DUSt3RConfig.from_dict(manifest[config_key]))
    expected = dict(manifest["tensors"])
    for alias, stored in manifest["tied_aliases"].items():
        expected[alias] = expected[stored]
    assert {k: list(v.shape) for k, v in m.state_dict().items()} == expected
    assert sum(p.numel() for p in m.parameters()) == manifest["num_parameters"] == 571_171_208
    default = DUSt3RConfig()  # defaults are the published model
    assert (default.enc_embed_dim, default.enc_depth, default.dec_embed_dim, default.dec_depth) == (1024, 24, 768, 12)


def test_configuration_outside_the_fixture_on_portrait_and_landscape_views():
    """Other widths, depths and heads; a portrait view paired with a landscape one."""
    cfg = DUSt3RConfig(enc_embed_dim=24, enc_depth=2, enc_num_heads=3, dec_embed_dim=16, dec_depth=4,
                       dec_num_heads=2, dpt_feature_dim=8, dpt_last_dim=4, dpt_layer_dims=[4, 4, 8, 8])
    assert cfg.dpt_hooks == [0, 2, 3, 4]
    torch.manual_seed(0)
    m = DUSt3R(cfg).eval()
    g = torch.Generator().manual_seed(1)
    portrait, landscape = torch.rand(2, 3, 64, 32, generator=g) * 2 - 1, torch.rand(2, 3, 32, 48, generator=g) * 2 - 1
    with torch.no_grad():
        pred1, pred2 = m(portrait, landscape)
        alone, _ = m(portrait[1:], landscape[1:])
    assert pred1.pts3d.shape == (2, 64, 32, 3) and pred1.conf.shape == (2, 64, 32)
    assert pred2.pts3d_in_other_view.shape == (2, 32, 48, 3) and pred2.conf.shape == (2, 32, 48)
    assert (pred1.conf > 1).all() and (pred2.conf > 1).all()  # conf_mode (exp, 1, inf)
    # batch items are independent (one forward pass: TOL)
    _close(alone.pts3d[0], pred1.pts3d[1], "pts3d of the second pair alone")
    # the DPT head's upsampling is 16 pixels per token: another patch needs the linear head
    with pytest.raises(ValueError, match="16 pixels per token"):
        DUSt3RConfig(patch_size=8)
    linear = DUSt3R(DUSt3RConfig(enc_embed_dim=24, enc_depth=1, enc_num_heads=3, dec_embed_dim=16,
                                 dec_depth=1, dec_num_heads=2, head_type="linear", patch_size=8)).eval()
    with torch.no_grad():
        pred1, pred2 = linear(portrait[:, :, :40, :24], portrait[:, :, :40, :24])
    assert pred1.pts3d.shape == (2, 40, 24, 3) and pred2.conf.shape == (2, 40, 24)


def test_linear_head_variant_builds():
    cfg = DUSt3RConfig(enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=24, dec_depth=2,
                       dec_num_heads=2, head_type="linear")
    m = DUSt3R(cfg).eval()
    assert m.state_dict()["downstream_head1.proj.weight"].shape == (4 * 256, 24)
    with torch.no_grad():
        pred1, pred2 = m(torch.zeros(1, 3, 32, 48), torch.zeros(1, 3, 32, 48))
    assert pred1.pts3d.shape == (1, 32, 48, 3) and (pred2.conf >= 1).all()


def test_fast3r_checkpoint_is_rejected_naming_tensors(tmp_path):
    fast3r = prefixed(load_reference("fast3r_tiny_reference.safetensors")[0], "weights.")
    path = tmp_path / "model.safetensors"
    save_file(fast3r, str(path))
    with pytest.raises(weights_lib.BadCheckpoint) as error:
        DUSt3R.from_state_dict(weights_lib.load_state_dict(path))
    message = str(error.value)
    assert "1009 missing" in message and "dec_blocks.0.attn.proj.bias" in message
    assert "unexpected" in message and "decoder.dec_blocks.0" in message
    with pytest.raises(weights_lib.BadCheckpoint):  # through the runner: the explicit file is "available"
        runner.execute(METHOD, _scene(1), [0], {"checkpoint_path": str(path), "device": "cpu"})


def test_two_view_geometry_recovers_known_cameras():
    h, w, f = 24, 32, 30.0
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    def cam_points(depth):
        return torch.stack([(u - w / 2) / f * depth, (v - h / 2) / f * depth, depth], dim=-1)
    depth1 = 3 + 0.2 * torch.sin(u / 5)
    pts1_own = cam_points(depth1)
    angle = 0.2
    rot = torch.tensor([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    centre = torch.tensor([0.5, 0.1, -0.2], dtype=torch.float64)
    pts1_world = pts1_own @ rot.T + centre  # world = camera 0
    pts0 = cam_points(2 + 0.1 * torch.cos(v / 4))
    ones = torch.ones(2, h, w)
    pairs = {"view1_idx": torch.tensor([0, 1]), "view2_idx": torch.tensor([1, 0]),
             "pts3d": torch.stack([pts0, 2.0 * pts1_own]).float(),  # the swapped pair has its own scale
             "conf1": 2 * ones, "pts3d_in_other_view": torch.stack([pts1_world, pts0]).float(), "conf2": 2 * ones}
    out = two_views(pairs)
    cam1_from_world = out["cam_from_world"][1]
    torch.testing.assert_close(cam1_from_world[:3, :3], rot.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(-cam1_from_world[:3, :3].T @ cam1_from_world[:3, 3], centre, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["focals"], torch.tensor([f, f], dtype=torch.float64), atol=1e-3, rtol=0)
    torch.testing.assert_close(out["depthmaps"][1], depth1.float(), atol=1e-4, rtol=0)
    assert abs(out["pair_scale_1_to_0"] - 0.5) < 1e-5


def _scene(n=3, size=(70, 90)):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(n)]
    masks = np.zeros((n, *size), dtype=bool)
    masks[:, 10:60, 20:70] = True
    return Scene(name="t", images=images, image_names=[f"{i}.png" for i in range(n)],
                 intrinsics=np.tile(np.eye(3), (n, 1, 1)), cam_from_world=np.tile(np.eye(4), (n, 1, 1)), masks=masks)


def _run(scene, views, options):
    return runner.execute(METHOD, scene, views, options)


def test_runner_single_view_is_duplicated_and_says_so():
    rec = _run(_scene(1), [0], {"weights": "random-tiny"})
    assert any("paired with itself" in n for n in rec.notes)
    assert rec.weights_kind == "random-tiny" and runner.RANDOM_NOTE in rec.notes
    assert rec.parameter_count == 384_792 and rec.method == "dust3r"
    assert rec.points.shape == (48 * 64, 3) and rec.extra["pairs_evaluated"] == 1
    np.testing.assert_allclose(rec.cam_from_world[0], np.eye(4))


def test_runner_two_views_uses_the_pair_in_view0_frame(fixture):
    scene = _scene(2)
    rec = _run(scene, [1, 0], {"weights": "random-tiny"})
    assert rec.view_ids == [1, 0] and rec.extra["pairs_evaluated"] == 2
    assert rec.point_maps.shape == (2, 48, 64, 3) and rec.depth_maps.shape == (2, 48, 64)
    np.testing.assert_allclose(rec.cam_from_world[0], np.eye(4))
    r = rec.cam_from_world[1, :3, :3]
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-6)
    # view 0's point map is the model's pred1 of the pair (input view 0 = scene view 1)
    model = METHOD.load(METHOD.parse_options({"weights": "random-tiny"}), "cpu")  # a fresh seeded copy
    from core.models.croco.preprocess import prepare_image
    a, _ = prepare_image(scene.images[1], 64)
    b, _ = prepare_image(scene.images[0], 64)
    with torch.no_grad():
        pred1, pred2 = model(a[None], b[None])
    # the runner batches both orderings of the pair (README: batching moves outputs by <= 1.9e-6)
    np.testing.assert_allclose(rec.point_maps[0], pred1.pts3d[0].numpy(), **TOL)
    np.testing.assert_allclose(rec.point_maps[1], pred2.pts3d_in_other_view[0].numpy(), **TOL)
    # intrinsics in original pixels: principal point at the original image centre
    # (64x50 resize of 90x70, crop rows 1..49: centre (32, 24) in the crop -> (45.2, 34.7) original)
    np.testing.assert_allclose(rec.intrinsics[:, 0, 2], (32 + 0.5) * 90 / 64 - 0.5, rtol=1e-9)
    np.testing.assert_allclose(rec.intrinsics[:, 1, 2], (24 + 1 + 0.5) * 70 / 50 - 0.5, rtol=1e-9)
    assert rec.source_view.max() == 1 and len(rec.confidence) == len(rec.points)
    # the confidence filter and object masks of the runner (same helper, on its outputs)
    from core.models.croco.runner import point_cloud
    masks = np.zeros((2, 48, 64), dtype=bool)
    masks[:, 10:30, 5:40] = True
    kept = point_cloud(rec.point_maps, rec.point_confidence, [a, b], percentile=50, masks=masks)
    inside = rec.point_confidence[masks]
    assert len(kept["points"]) == int((inside >= np.percentile(inside, 50)).sum())
    assert kept["kept"][~masks].sum() == 0


def test_runner_more_views_goes_through_global_alignment():
    rec = _run(_scene(3), [0, 1, 2], {"weights": "random-tiny", "ga_iterations": 5})
    assert rec.extra["pairs_evaluated"] == 6 and len(rec.extra["loss_history"]) == 5
    np.testing.assert_allclose(rec.cam_from_world[0], np.eye(4), atol=1e-5)
    assert rec.point_maps.shape == (3, 48, 64, 3) and np.isfinite(rec.point_maps).all()
    # the world is view 0's camera: its points are in front of it with the aligned depth (its pose is
    # the identity within 1e-5 above, which moves z by <= 1e-5 |x|)
    np.testing.assert_allclose(rec.point_maps[0][..., 2], rec.depth_maps[0], rtol=1e-3, atol=1e-4)


def test_runner_rejects_bad_input():
    fake = types.SimpleNamespace(num_views=2, masks=None, images=[np.zeros((70, 90, 3), np.uint8),
                                                                 np.zeros((90, 70, 3), np.uint8)])
    with pytest.raises(UserError, match="same size"):
        _run(fake, [0, 1], {"weights": "random-tiny"})
    with pytest.raises(UserError, match="at least 1"):
        _run(_scene(2), [], {"weights": "random-tiny"})
    with pytest.raises(UserError, match="no object masks"):
        scene = _scene(2)
        scene.masks = None
        _run(scene, [0, 1], {"weights": "random-tiny", "use_object_masks": True})
    with pytest.raises(OptionError, match="unknown option"):
        _run(_scene(2), [0, 1], {"weights": "random-tiny", "bogus": 1})
    with pytest.raises(OptionError, match="choices: complete, swin, oneref"):
        _run(_scene(3), [0, 1, 2], {"weights": "random-tiny", "scene_graph": "star"})
    with pytest.raises(UserError, match="too small or too elongated"):  # 600x8 -> 64x1: no row survives the crop
        _run(_scene(1, size=(8, 600)), [0], {"weights": "random-tiny"})


def test_availability(monkeypatch, tmp_path):
    monkeypatch.setenv("RECONBENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(weights_lib, "_hf_cached", lambda checkpoint: None)  # ignore a real HF cache
    def available(values):
        return METHOD.availability(METHOD.parse_options(values))

    assert available({"weights": "random-tiny"}).ok and available({"weights": "random-full"}).ok
    missing = available({})
    assert not missing.ok and missing.fix_command == "python -m core weights fetch dust3r"
    assert "naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt" in missing.missing
    (tmp_path / "dust3r").mkdir()
    (tmp_path / "dust3r" / "model.safetensors").write_bytes(b"x")
    assert available({}).ok
    assert weights_lib.registered()["dust3r"].filename == "model.safetensors"
    assert METHOD.licences(METHOD.parse_options({})) == ["dust3r: CC BY-NC-SA 4.0"]
    assert METHOD.licences(METHOD.parse_options({"weights": "random-tiny"})) == []
