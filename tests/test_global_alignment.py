"""DUSt3R global alignment (core.models.dust3r.global_alignment), scene graphs and the PnP step.

Fixture: tests/fixtures/dust3r_global_alignment_reference.safetensors (README "DUSt3R"): the
reference PointCloudOptimizer run on stored pairwise predictions, twice: ``ga_synth`` (synthetic
scene, well conditioned) and ``ga`` (tiny random network; its RANSAC PnP amplifies 1e-7 input
changes to 1e-2, so those PnP results are replayed). We feed the stored ``pairs`` and compare:
init within 1e-5, final (100 Adam steps, cosine lr 0.01) within 1e-3 (depths, points) and 1e-4
(poses; focals relative) as the README's sensitivity study allows; loss histories relative 1e-3
(early Adam steps have size ≈ lr whatever the gradient, which amplifies rounding), lr exact.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.models.dust3r import global_alignment as ga_mod
from core.models.dust3r.global_alignment import global_align, synthetic_pairs
from core.models.dust3r.scene_graph import make_pairs
from core.geometry import invert_transform, rotation_angle_deg
from core.models.pose_utils import pnp_ransac
from core.progress import Progress, Stopped
from tests.conftest import load_reference

FIXTURE = Path(__file__).parent / "fixtures" / "dust3r_global_alignment_reference.safetensors"
PAIR_KEYS = ("view1_idx", "view2_idx", "pts3d", "conf1", "pts3d_in_other_view", "conf2")
SHAPES = [(48, 64)] * 3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ref():
    return load_reference(FIXTURE.name)


def _pairs(d, p):
    return {k: d[f"{p}pairs.{k}"] for k in PAIR_KEYS}


def _replay(d, p):
    out, n = [], 0
    while f"{p}pnp.{n}.view" in d:
        out.append((float(d[f"{p}pnp.{n}.focal_out"]), d[f"{p}pnp.{n}.cam2world"].numpy()))
        n += 1
    return out


_RUNS: dict = {}


def _run(ref, p, niter, replay):
    key = (p, niter, replay)
    if key not in _RUNS:
        d, _ = ref
        opts = dict(niter=niter, pnp_replay=_replay(d, p) if replay else None)
        _RUNS[key] = global_align(_pairs(d, p), SHAPES, None, opts)
    return _RUNS[key]


def _compare(r, d, prefix, atol_pose, atol_pts, rtol_focal, loss_key):
    assert torch.allclose(r["cam2world"], d[prefix + "im_poses"], atol=atol_pose, rtol=0)
    assert torch.allclose(r["pw_poses"], d[prefix + "pw_poses"], atol=atol_pose, rtol=0)
    assert torch.allclose(r["pw_scales"], d[prefix + "pw_scales"], atol=atol_pose, rtol=0)
    f_ref = d[prefix + "focals"]
    assert float(((r["focals"] - f_ref).abs() / f_ref).max()) < rtol_focal
    assert torch.equal(r["principal_points"], d[prefix + "principal_points"])
    assert torch.allclose(r["intrinsics"], d[prefix + "intrinsics"], rtol=rtol_focal, atol=1e-6)
    assert torch.allclose(r["depthmaps"], d[prefix + "depthmaps"], atol=atol_pts, rtol=0)
    assert torch.allclose(r["pts3d"], d[prefix + "pts3d"], atol=atol_pts, rtol=0)
    assert abs(r[loss_key] - float(d[prefix + "loss"])) < 1e-6


# ---------------------------------------------------------------------------- scene graphs
def test_complete_graph_order_matches_reference(ref):
    d, _ = ref
    expected = list(zip(d["ga.pairs.view1_idx"].tolist(), d["ga.pairs.view2_idx"].tolist()))
    assert make_pairs(3, "complete") == expected == [(1, 0), (2, 0), (2, 1), (0, 1), (0, 2), (1, 2)]
    assert make_pairs(3, "complete", symmetrize=False) == [(1, 0), (2, 0), (2, 1)]


def test_oneref_and_swin_graphs():
    assert make_pairs(4, "oneref-2") == [(2, 0), (2, 1), (2, 3), (0, 2), (1, 2), (3, 2)]
    assert make_pairs(3, "oneref") == [(0, 1), (0, 2), (1, 0), (2, 0)]
    half = make_pairs(6, "swin-2", symmetrize=False)
    assert sorted(half) == [(0, 1), (0, 2), (0, 4), (0, 5), (1, 2), (1, 3), (1, 5),
                            (2, 3), (2, 4), (3, 4), (3, 5), (4, 5)]
    full = make_pairs(6, "swin-2")
    assert full == half + [(j, i) for i, j in half]  # swapped copies follow, same order
    assert sorted(make_pairs(6, "swin-2-noncyclic", symmetrize=False)) == [
        (0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (3, 4), (3, 5), (4, 5)]
    # 5 views, cyclic window 3 (the default): every pair, each once, as (min, max)
    every_pair = sorted((j, i) for i, j in make_pairs(5, "complete", symmetrize=False))
    assert sorted(make_pairs(5, "swin", symmetrize=False)) == every_pair
    assert all(i != j for i, j in make_pairs(3, "swin-5"))  # no self pairs when the window wraps
    with pytest.raises(ValueError, match="unknown scene graph"):
        make_pairs(3, "logwin-2")
    with pytest.raises(ValueError, match="out of range"):
        make_pairs(3, "oneref-3")
    with pytest.raises(ValueError, match="at least 2"):
        make_pairs(1)


# ---------------------------------------------------------------------------- PnP (the geometry: tests/test_geometry*.py)
def test_pnp_wrapper_reproduces_reference_opencv_calls(ref):
    d, _ = ref
    for p in ("ga.", "ga_synth."):
        for n in range(len(_replay(d, p))):
            k = f"{p}pnp.{n}."
            res = pnp_ransac(d[k + "pts3d"], d[k + "mask"], float(d[k + "focal_in"]), niter=10)
            assert res is not None
            assert res[0] == float(d[k + "focal_out"])
            np.testing.assert_allclose(res[1], d[k + "cam2world"].numpy(), atol=1e-6, rtol=0)
    assert pnp_ransac(d["ga.pnp.0.pts3d"], torch.zeros(48, 64, dtype=torch.bool), 50.0) is None


def test_pnp_without_focal_keeps_the_candidate_with_most_inliers():
    import cv2

    H, W, f = 96, 128, 120.0
    pairs, _ = synthetic_pairs(2, H, W, [(0, 1)], focal=f, noise=0.05, seed=3)
    world = pairs["pts3d_in_other_view"][0].numpy()  # view 1's points in camera 0's frame = world
    mask = np.zeros((H, W), bool)
    mask[::3, ::3] = True
    res = pnp_ransac(world, mask, None, niter=10)
    assert res is not None
    cands = np.geomspace(64, 384, 21)
    v, u = np.mgrid[:H, :W]
    pix = np.stack([u, v], -1).astype(np.float32)[mask]
    counts = []
    for c in cands:
        K = np.float32([(c, 0, W / 2), (0, c, H / 2), (0, 0, 1)])
        ok, _, _, inl = cv2.solvePnPRansac(world[mask], pix, K, None, iterationsCount=10,
                                           reprojectionError=5, flags=cv2.SOLVEPNP_SQPNP)
        counts.append(len(inl) if ok else 0)
    assert res[0] == cands[int(np.argmax(counts))]


# ---------------------------------------------------------------------------- global alignment
def test_mst_edges_and_pnp_calls_match_metadata(ref):
    d, meta = ref
    for p in ("ga", "ga_synth"):
        mst = json.loads(meta[f"{p}.mst"])
        r = _run(ref, p + ".", 0, replay=(p == "ga"))
        assert [list(e) for e in r["mst_edges"]] == mst["edges"]
        assert [c.view for c in r["pnp_calls"]] == [c["view"] for c in mst["pnp"]]
        for n, call in enumerate(r["pnp_calls"]):
            k = f"{p}.pnp.{n}."
            assert abs(call.focal_in - float(d[k + "focal_in"])) / float(d[k + "focal_in"]) < 1e-6
            np.testing.assert_array_equal(call.mask, d[k + "mask"].numpy())
            np.testing.assert_allclose(call.pts3d, d[k + "pts3d"].numpy(), atol=1e-5, rtol=0)
        assert torch.equal(r["im_conf"], d[f"{p}.im_conf"])
        assert torch.equal(r["masks"], d[f"{p}.masks"])


def test_ga_synth_init_matches_reference(ref):
    d, _ = ref
    r = _run(ref, "ga_synth.", 0, replay=False)  # OpenCV PnP run for real: well conditioned here
    _compare(r, d, "ga_synth.init.", 1e-5, 1e-5, 1e-5, "init_loss")
    assert r["loss_history"] == [] and r["lr_history"] == []
    assert torch.allclose(r["params"]["im_focals"], d["ga_synth.init.param.im_focals"], atol=1e-4)
    assert torch.allclose(r["params"]["im_depthmaps"], d["ga_synth.init.param.im_depthmaps"], atol=1e-5)


def test_ga_synth_final_matches_reference(ref):
    d, _ = ref
    r = _run(ref, "ga_synth.", 100, replay=False)
    _compare(r, d, "ga_synth.final.", 1e-4, 1e-3, 1e-4, "loss")
    np.testing.assert_allclose(r["lr_history"], d["ga_synth.final.lr_history"].numpy(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(r["loss_history"], d["ga_synth.final.loss_history"].numpy(), rtol=1e-3, atol=1e-6)
    assert abs(r["loss_history"][-1] - float(d["ga_synth.final.returned_loss"])) < 1e-6
    # and the recovered cameras are those of the synthetic truth (relative to view 0)
    c2w = r["cam2world"].double().numpy()
    rel = np.linalg.inv(c2w[0]) @ c2w
    angles = rotation_angle_deg(rel[:, :3, :3], d["ga_synth.gt.poses_c2w"].numpy()[:, :3, :3])
    assert angles.max() < 0.6
    assert np.all(np.abs(r["focals"].numpy() - 58.0) < 0.3)


def test_ga_init_and_final_with_replayed_pnp(ref):
    d, _ = ref
    _compare(_run(ref, "ga.", 0, replay=True), d, "ga.init.", 1e-5, 1e-5, 1e-5, "init_loss")
    r = _run(ref, "ga.", 100, replay=True)
    _compare(r, d, "ga.final.", 1e-4, 1e-3, 1e-4, "loss")
    np.testing.assert_allclose(r["lr_history"], d["ga.final.lr_history"].numpy(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(r["loss_history"], d["ga.final.loss_history"].numpy(), rtol=1e-3, atol=1e-6)
    for k in ("im_poses", "pw_poses", "im_depthmaps"):
        a, b = r["params"][k], d[f"ga.final.param.{k}"]
        if k != "im_depthmaps":  # quaternions are defined up to sign
            sign = torch.sign((a[:, :4] * b[:, :4]).sum(-1, keepdim=True))
            a = torch.cat([a[:, :4] * sign, a[:, 4:]], dim=1)
        assert torch.allclose(a, b, atol=1e-3), k


def test_outputs_are_consistent(ref):
    r = _run(ref, "ga.", 100, replay=True)
    c2w = r["cam2world"].double().numpy()
    np.testing.assert_allclose(r["cam_from_world"].double().numpy(), invert_transform(c2w), atol=1e-5)
    # world points project back onto their own pixels with the returned intrinsics, at the returned depth
    cam = np.einsum("nij,nhwj->nhwi", r["cam_from_world"].double().numpy()[:, :3, :3], r["pts3d"].double().numpy())
    cam += r["cam_from_world"].double().numpy()[:, None, None, :3, 3]
    np.testing.assert_allclose(cam[..., 2], r["depthmaps"].numpy(), rtol=1e-4, atol=1e-5)
    K = r["intrinsics"].double().numpy()
    uv = np.einsum("nij,nhwj->nhwi", K, cam)
    uv = uv[..., :2] / uv[..., 2:]
    v, u = np.mgrid[:48, :64]
    np.testing.assert_allclose(uv[..., 0], np.broadcast_to(u, uv.shape[:3]), atol=2e-3)
    np.testing.assert_allclose(uv[..., 1], np.broadcast_to(v, uv.shape[:3]), atol=2e-3)
    # pairwise scales have geometric mean base_scale
    assert abs(float(r["pw_scales"].log().mean().exp()) - 0.5) < 1e-5


@pytest.mark.parametrize("chunk_points", [3072, 10**9])
def test_fused_chunked_loss_and_gradient_equal_autograd(ref, monkeypatch, chunk_points):
    """The large-problem path (analytic gradient, edges in chunks) equals plain autograd."""
    d, _ = ref
    pairs = _pairs(d, "ga_synth.")
    edges = list(zip(pairs["view1_idx"].tolist(), pairs["view2_idx"].tolist()))

    def build():
        opt = ga_mod.PointCloudOptimizer(edges, list(pairs["pts3d"]), list(pairs["pts3d_in_other_view"]),
                                         list(pairs["conf1"]), list(pairs["conf2"]), SHAPES)
        opt.init_mst(pnp_replay=_replay(d, "ga_synth."))
        return opt

    one = build()
    loss1 = one.loss_and_backward()
    monkeypatch.setattr(ga_mod, "_EXACT_MAX_POINTS", 0)
    monkeypatch.setattr(ga_mod, "_CHUNK_POINTS", chunk_points)  # 3072: one edge per chunk
    many = build()
    assert len(list(many._chunks())) == (6 if chunk_points == 3072 else 1)
    loss2 = many.loss_and_backward()
    assert abs(loss1 - loss2) < 1e-7 and abs(many.loss() - loss1) < 1e-7
    for name in ("pw_poses", "im_depthmaps", "im_poses", "im_focals"):
        g1, g2 = getattr(one, name).grad, getattr(many, name).grad
        assert torch.allclose(g1, g2, atol=1e-7, rtol=1e-5), name


def test_progress_and_stop(ref):
    d, _ = ref
    seen = []
    r = global_align(_pairs(d, "ga_synth."), SHAPES, None, dict(niter=5, schedule="linear"),
                     Progress(lambda f, m: seen.append((f, m))))
    assert len(r["loss_history"]) == 5
    np.testing.assert_allclose(r["lr_history"], [0.01 + (1e-6 - 0.01) * n / 5 for n in range(5)], rtol=1e-12)
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert sum("global alignment" in m and "/5" in m for _, m in seen) == 5

    calls = []

    def stop_after_two(fraction, message):
        calls.append(message)
        if len(calls) == 3:
            progress.request_stop()

    progress = Progress(stop_after_two)
    with pytest.raises(Stopped):
        global_align(_pairs(d, "ga_synth."), SHAPES, None, dict(niter=50), progress)
    assert len(calls) == 3


def test_bad_inputs_raise_clear_errors(ref):
    d, _ = ref
    pairs = _pairs(d, "ga_synth.")
    with pytest.raises(ValueError, match="unknown global-alignment options"):
        global_align(pairs, SHAPES, None, dict(nitre=3))
    with pytest.raises(ValueError, match="not edges of the scene graph"):
        global_align(pairs, SHAPES, [(0, 1)], dict(niter=0))
    with pytest.raises(ValueError, match="schedule"):
        global_align(pairs, SHAPES, None, dict(niter=1, schedule="cycle"))
    with pytest.raises(ValueError, match="in no pair"):  # a 4th view nobody pairs with
        global_align(pairs, SHAPES + [(48, 64)], None, dict(niter=0))
    two_islands = [(0, 1), (2, 3), (1, 0), (3, 2)]
    split, _ = synthetic_pairs(4, 12, 16, two_islands, seed=0)
    with pytest.raises(ValueError, match="not connected"):
        global_align(split, [(12, 16)] * 4, None, dict(niter=0))
    bad = dict(pairs, pts3d=pairs["pts3d"][:, :40])
    with pytest.raises(ValueError, match="shapes"):
        global_align(bad, SHAPES, None, dict(niter=0))


def test_swin_graph_synthetic_scene_recovers_cameras():
    edges = make_pairs(5, "swin-2")
    pairs, truth = synthetic_pairs(5, 24, 32, edges, focal=29.0, noise=0.002, seed=7)
    r = global_align(pairs, [(24, 32)] * 5, edges, dict(niter=30))
    c2w = r["cam2world"].double().numpy()
    rel = np.linalg.inv(c2w[0]) @ c2w
    angles = rotation_angle_deg(rel[:, :3, :3], truth["cam2world"][:, :3, :3])
    assert angles.max() < 1.0
    assert np.all(np.abs(r["focals"].numpy() / 29.0 - 1) < 0.03)


def test_non_projective_pointmaps_fall_back_to_default_focal():
    """Mirrored pointmaps (x, y negated) give a negative Weiszfeld focal; the reference then turns
    everything NaN. We use max(H, W) instead and stay finite."""
    edges = make_pairs(3, "complete")
    pairs, _ = synthetic_pairs(3, 24, 32, edges, seed=2)
    flip = torch.tensor([-1.0, -1.0, 1.0])
    pairs = dict(pairs, pts3d=pairs["pts3d"] * flip, pts3d_in_other_view=pairs["pts3d_in_other_view"] * flip)
    init = global_align(pairs, [(24, 32)] * 3, None, dict(niter=0))
    assert torch.allclose(init["focals"], torch.full((3,), 32.0), rtol=1e-5)
    r = global_align(pairs, [(24, 32)] * 3, None, dict(niter=2))
    for key in ("cam2world", "focals", "depthmaps", "pts3d"):
        assert torch.isfinite(r[key]).all(), key
    assert np.isfinite(r["loss"])
