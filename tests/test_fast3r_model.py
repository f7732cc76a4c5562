"""Fast3R network against the authors' fixture, full-size names/shapes, alignment, weights, runner."""
from __future__ import annotations

import json
import math
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from core import runner
from core.errors import OptionError, UserError
from core.models import weights as weights_lib
from core.models.fast3r import Fast3R, Fast3RConfig, align_local_to_global, default_image_idx
from core.models.fast3r import method as fast3r_method
from core.models.fast3r.method import METHOD
from core.data.scene import Scene
from tests.conftest import load_reference, prefixed

FIXTURES = Path(__file__).parent / "fixtures"
# One forward pass on any CPU and thread count: README "Fast3R", Tolerances observed (2 threads move
# outputs by <= 2.4e-7, another attention kernel by 4.8e-7): "rtol 1e-4, atol 1e-5 is safe".
TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def fixture():
    return load_reference("fast3r_tiny_reference.safetensors")


@pytest.fixture(scope="module")
def weights(fixture):
    return prefixed(fixture[0], "weights.")


@pytest.fixture(scope="module")
def outputs(fixture, weights):
    tensors, meta = fixture
    model = Fast3R.from_state_dict(weights, Fast3RConfig.from_dict(meta["config"])).eval()
    with torch.no_grad():
        return model(list(tensors["input.img"]), image_idx=tensors["input.image_idx"]), model


def _close(actual, expected, name):
    assert actual.shape == expected.shape, name
    torch.testing.assert_close(actual.float(), expected.float(), **TOL, msg=lambda m: f"{name}: {m}")


def test_outputs_match_reference(fixture, outputs):
    t, _ = fixture
    out, model = outputs
    assert sum(p.numel() for p in model.parameters()) == 451_016
    for key in ("pts3d_in_other_view", "conf", "pts3d_local", "conf_local"):
        _close(torch.stack([getattr(p, key) for p in out.preds]), t["output." + key], key)
    assert len(out.decoder_output) == 11
    for layer, tokens in enumerate(out.decoder_output):
        _close(tokens, t[f"output.decoder_output.{layer}"], f"decoder_output.{layer}")
    _close(model.decoder.image_idx_emb[t["input.image_idx"]], t["output.image_idx_emb"], "image_idx_emb")


def test_local_to_global_alignment_matches_reference(fixture):
    """Fed the reference's pointmaps: the fit keeps the pixels whose confidence reaches its 85th
    percentile, a selection whose margin here (the threshold lies 1e-5 from the nearest confidence)
    is below TOL, so the model's own outputs could pick other pixels; the fit itself runs in float64."""
    t, _ = fixture
    aligned, transforms = align_local_to_global(t["output.pts3d_local"], t["output.pts3d_in_other_view"],
                                                t["output.conf"], 85)
    _close(aligned, t["output.pts3d_local_aligned_to_global"], "pts3d_local_aligned_to_global")
    assert len(transforms) == 4


def test_alignment_recovers_a_known_similarity_from_confident_pixels():
    g = torch.Generator().manual_seed(0)
    local = torch.randn(1, 20, 30, 3, generator=g)
    angle = 0.4
    rot = torch.tensor([[1.0, 0, 0], [0, math.cos(angle), -math.sin(angle)], [0, math.sin(angle), math.cos(angle)]])
    glob = 1.7 * local @ rot.T + torch.tensor([0.2, -0.1, 3.0])
    conf = 1 + torch.rand(1, 20, 30, generator=g)
    noisy = glob.clone()
    low = conf < torch.quantile(conf.flatten(), 0.85)
    noisy[low] += 5 * torch.randn(int(low.sum()), 3, generator=g)  # corrupt only the unconfident pixels
    aligned, [(s, r, t)] = align_local_to_global(local, noisy, conf, 85)
    assert abs(s - 1.7) < 1e-4
    torch.testing.assert_close(aligned, glob, atol=1e-4, rtol=0)


def test_image_index_is_an_input_and_default_is_deterministic(fixture, outputs):
    t, _ = fixture
    _, model = outputs
    assert default_image_idx(4).tolist() == [0, 250, 500, 750]
    assert default_image_idx(1).tolist() == [0]
    with pytest.raises(ValueError):
        default_image_idx(1001)
    views = list(t["input.img"][:2])
    with torch.no_grad():
        a = model(views).preds[1].conf
        b = model(views).preds[1].conf
        c = model(views, image_idx=torch.tensor([[0, 900]])).preds[1].conf
    assert torch.equal(a, b) and not torch.allclose(a, c)
    with pytest.raises(ValueError, match="image_idx"):
        model(views, image_idx=torch.tensor([[0, 1, 2]]))


def test_full_size_names_and_shapes_match_manifest():
    manifest = json.loads((FIXTURES / "fast3r_vit_large_512_state_dict_manifest.json").read_text())
    with torch.device("meta"):
        model = Fast3R(Fast3RConfig.from_dict(manifest["config"]))
    expected = dict(manifest["tensors"])
    for alias, stored in manifest["tied_aliases"].items():
        expected[alias] = expected[stored]
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == expected
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"] == 647_551_368
    assert list(model.decoder.image_idx_emb.shape) == manifest["non_persistent_buffers"]["decoder.image_idx_emb"]
    assert Fast3RConfig().dpt_hooks == manifest["dpt"]["hooks"]


def test_dust3r_checkpoint_is_rejected_naming_tensors(tmp_path):
    dust3r = prefixed(load_reference("dust3r_tiny_reference.safetensors")[0], "weights.")
    path = tmp_path / "model.safetensors"
    save_file(dust3r, str(path))
    with pytest.raises(weights_lib.BadCheckpoint) as error:
        Fast3R.from_state_dict(weights_lib.load_state_dict(path))
    message = str(error.value)
    assert "missing" in message and "decoder.dec_blocks.0.attn.proj.bias" in message
    assert "unexpected" in message and "dec_blocks.0.attn.proj.bias" in message
    with pytest.raises(ValueError, match="unknown Fast3R head_args key"):
        Fast3RConfig(head_args={"dpt_width": 3})


def _scene(n=3, size=(70, 90)):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(n)]
    return Scene(name="t", images=images, image_names=[f"{i}.png" for i in range(n)],
                 intrinsics=np.tile(np.eye(3), (n, 1, 1)), cam_from_world=np.tile(np.eye(4), (n, 1, 1)))


def _run(scene, views, options):
    return runner.execute(METHOD, scene, views, options)


def test_runner_random_tiny(monkeypatch):
    scene = _scene(3)
    rec = _run(scene, [2, 0, 1], {"weights": "random-tiny", "estimate_cameras": False})
    assert rec.view_ids == [2, 0, 1] and rec.parameter_count == 451_016
    assert rec.weights_kind == "random-tiny" and runner.RANDOM_NOTE in rec.notes
    assert rec.cam_from_world is None and rec.intrinsics is None  # estimate_cameras false
    assert rec.point_maps.shape == (3, 48, 64, 3) and rec.points.shape == (3 * 48 * 64, 3)
    assert rec.extra["image_idx"] == [0, 333, 666]
    # the global frame is view 0's camera: view 0's aligned local points agree with its global points
    model = METHOD.load(METHOD.parse_options({"weights": "random-tiny"}), "cpu")  # a fresh seeded copy
    from core.models.croco.preprocess import prepare_image
    batch = [prepare_image(scene.images[v], 64)[0][None] for v in (2, 0, 1)]
    with torch.no_grad():
        out = model(batch)
    glob = torch.stack([p.pts3d_in_other_view[0] for p in out.preds]).numpy()
    rec_global = _run(scene, [2, 0, 1], {"weights": "random-tiny", "points_from": "global",
                                         "estimate_cameras": False})
    np.testing.assert_allclose(rec_global.point_maps, glob, **TOL)  # the same forward pass: TOL
    # camera estimation is called on the global pointmaps; its results map to original pixels
    fake = {"cam_from_world": np.tile(np.eye(4), (3, 1, 1)), "focal": 50.0, "ok": np.array([True, True, False])}
    seen = {}
    def estimate(pts, conf):
        seen["shape"] = tuple(pts.shape)
        return fake
    monkeypatch.setattr(fast3r_method, "estimate_cameras", estimate)
    rec = _run(scene, [2, 0, 1], {"weights": "random-tiny"})
    assert seen["shape"] == (3, 48, 64, 3)
    assert np.isnan(rec.cam_from_world[2]).all() and any("PnP failed" in n for n in rec.notes)
    np.testing.assert_allclose(rec.intrinsics[:, 0, 0], 50.0 * 90 / 64)


def test_runner_rejects_bad_input():
    fake = types.SimpleNamespace(num_views=2, masks=None, images=[np.zeros((70, 90, 3), np.uint8),
                                                                 np.zeros((90, 70, 3), np.uint8)])
    with pytest.raises(UserError, match="same size"):
        _run(fake, [0, 1], {"weights": "random-tiny"})
    with pytest.raises(UserError, match=r"view ids must be in 0\.\.1; got \[5\]"):
        _run(_scene(2), [0, 5], {"weights": "random-tiny"})
    with pytest.raises(OptionError, match="choices: local_aligned, global"):
        _run(_scene(2), [0, 1], {"weights": "random-tiny", "points_from": "local"})
    with pytest.raises(OptionError, match="choices: 224, 512"):
        _run(_scene(2), [0, 1], {"weights": "random-tiny", "image_size": 300})


def test_availability(monkeypatch, tmp_path):
    monkeypatch.setenv("RECONBENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(weights_lib, "_hf_cached", lambda checkpoint: None)  # ignore a real HF cache
    def available(values):
        return METHOD.availability(METHOD.parse_options(values))

    assert available({"weights": "random-tiny"}).ok and available({"weights": "random-full"}).ok
    missing = available({})
    assert not missing.ok and "jedyang97/Fast3R_ViT_Large_512" in missing.missing
    assert missing.fix_command == "python -m core weights fetch fast3r"
    assert METHOD.licences(METHOD.parse_options({})) == ["fast3r: FAIR Noncommercial Research License"]


def test_benchmark_random_weights_keep_the_computed_index_table():
    from core.models.croco.runner import load_network, random_full_size
    from core.models.fast3r import CHECKPOINT, sincos_table
    model = random_full_size(Fast3R, Fast3RConfig.tiny(), seed=0)
    # weights=random-full loads exactly this (seed 0) for the method's config
    same = load_network(Fast3R, Fast3RConfig.tiny, CHECKPOINT, "random-full").state_dict()
    assert all(torch.equal(same[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model.decoder.image_idx_emb, sincos_table(48, 1000))
    assert torch.equal(model.encoder.enc_norm.weight, torch.ones(32))
    assert float(model.decoder.decoder_embed.weight.detach().std()) == pytest.approx(0.02, rel=0.2)
    with torch.no_grad():
        out = model([torch.zeros(1, 3, 32, 32), torch.ones(1, 3, 32, 32)])
    assert all(torch.isfinite(p.pts3d_in_other_view).all() for p in out.preds)


def test_configuration_outside_the_fixture_on_portrait_and_landscape_views():
    """Other widths, depths and heads, the decoder's encoder width filled in from the encoder; a
    portrait and a landscape view fused together. Permuting the views with their image indices
    permutes the outputs (fusion attention has no other notion of order)."""
    config = Fast3RConfig(encoder_args={"embed_dim": 24, "num_heads": 3, "depth": 1},
                          decoder_args={"embed_dim": 16, "num_heads": 2, "depth": 4},
                          head_args={"dpt_feature_dim": 8, "dpt_last_dim": 4, "dpt_layer_dims": [4, 4, 8, 8]})
    assert config.decoder_args["enc_embed_dim"] == 24 and config.head_args["patch_size"] == 16
    torch.manual_seed(0)
    model = Fast3R(config).eval()
    g = torch.Generator().manual_seed(1)
    views = [torch.rand(1, 3, 64, 32, generator=g) * 2 - 1, torch.rand(1, 3, 32, 48, generator=g) * 2 - 1,
             torch.rand(1, 3, 64, 32, generator=g) * 2 - 1]
    idx = torch.tensor([[0, 400, 800]])
    order = [2, 0, 1]
    with torch.no_grad():
        out = model(views, image_idx=idx)
        permuted = model([views[i] for i in order], image_idx=idx[:, order])
    assert [tuple(p.pts3d_in_other_view.shape) for p in out.preds] == \
        [(1, 64, 32, 3), (1, 32, 48, 3), (1, 64, 32, 3)]
    assert out.preds[1].conf_local.shape == (1, 32, 48)
    assert all((p.conf > 1).all() for p in out.preds)  # conf = 1 + exp
    for new, old in enumerate(order):  # one forward pass each: TOL
        for key in ("pts3d_in_other_view", "conf", "pts3d_local"):
            _close(getattr(permuted.preds[new], key), getattr(out.preds[old], key), f"view {old} {key}")
    with pytest.raises(ValueError, match="must equal"):
        Fast3RConfig(encoder_args={"embed_dim": 24}, decoder_args={"enc_embed_dim": 32})
    with pytest.raises(ValueError, match="16 pixels per token"):
        Fast3RConfig(encoder_args={"patch_size": 8})


def test_views_of_different_shapes_fuse_with_their_own_grids(outputs):
    _, model = outputs
    with torch.no_grad():
        out = model([torch.zeros(1, 3, 48, 64), torch.zeros(1, 3, 64, 48)])
    assert out.preds[0].conf.shape == (1, 48, 64) and out.preds[1].pts3d_local.shape == (1, 64, 48, 3)
    assert out.decoder_output[0].shape == (1, 24, 32)


def test_benchmark_loop_reports_one_row_per_view_count():
    from core.models.croco.bench import bench_network, bench_options, bench_parser

    args = bench_parser(METHOD, "").parse_args(["--views", "1", "2", "--weights", "random-tiny", "--device", "cpu"])
    options = bench_options(METHOD, args)
    assert options.weights == "random-tiny"  # the flag wins over the bench's random-full default
    assert bench_options(METHOD, bench_parser(METHOD, "").parse_args([])).weights == "random-full"
    rows = bench_network(METHOD, options, lambda n, rec: {"points": len(rec.points)}, args.views)
    assert [r["views"] for r in rows] == [1, 2]
    assert rows[0]["parameters"] == sum(p.numel() for p in Fast3R(Fast3RConfig.tiny()).parameters())
    assert all(list(r["image_size"]) == [48, 64] and r["points"] > 0 for r in rows)
    assert all(r["network_seconds"] <= r["seconds"] and r["process_peak_rss_bytes"] > 0 for r in rows)
