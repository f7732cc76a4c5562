"""Fast3R camera estimation (core.models.fast3r.poses) against the reference's estimate_camera_poses.

Fixture: tests/fixtures/fast3r_tiny_reference.safetensors (README "Fast3R", camera poses):
``posest.*`` synthetic global pointmaps of known cameras (focal 76.8) with the reference's focal
(76.5565) and poses; ``output.*`` the random network's pointmaps, whose focal comes out negative,
is clipped to 0, and every PnP fails (identity pose, NaN focal). Our PnP is OpenCV's
solvePnPRansac with the same arguments and inputs, so poses are compared at 1e-6.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.models.fast3r.poses import estimate_cameras, estimate_focal_view0
from core.geometry import rotation_angle_deg
from tests.conftest import load_reference

FIXTURE = Path(__file__).parent / "fixtures" / "fast3r_tiny_reference.safetensors"


@pytest.fixture(scope="module")
def ref():
    tensors, _ = load_reference(FIXTURE.name)
    return {k: v for k, v in tensors.items() if not k.startswith("weights.")}


@pytest.fixture(scope="module")
def posest(ref):
    return estimate_cameras(ref["posest.pts3d_in_other_view"][:, 0], ref["posest.conf"][:, 0], niter_pnp=100)


def test_focal_matches_reference(ref, posest):
    expected = ref["posest.focals"][0].numpy()
    assert abs(posest["focal"] - 76.5565) < 1e-4
    np.testing.assert_allclose(posest["focals"], expected, rtol=1e-6)
    assert posest["ok"].all()


def test_poses_match_reference_and_truth(ref, posest):
    c2w = posest["cam2world"]
    assert c2w.dtype == np.float64 and posest["cam_from_world"].dtype == np.float64
    np.testing.assert_allclose(c2w, ref["posest.poses_c2w"][0].numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(posest["cam_from_world"] @ c2w, np.tile(np.eye(4), (4, 1, 1)), atol=1e-6)
    gt = ref["posest.gt_poses_c2w"][0].numpy()
    assert rotation_angle_deg(c2w[:, :3, :3], gt[:, :3, :3]).max() < 0.4
    assert np.abs(c2w[:, :3, 3] - gt[:, :3, 3]).max() < 0.014  # camera centres, per coordinate
    # world = view 0's camera: view 0's pose is (close to) the identity
    assert rotation_angle_deg(c2w[0, :3, :3], np.eye(3)) < 0.2


def test_random_network_clipped_focal_gives_identity_and_nan(ref):
    pts, conf = ref["output.pts3d_in_other_view"][:, 0], ref["output.conf"][:, 0]
    assert estimate_focal_view0(pts[0], conf[0]) == float(ref["output.focal_view0"][0]) == 0.0
    out = estimate_cameras(pts, conf)
    assert out["focal"] == 0.0
    assert not out["ok"].any()
    assert np.isnan(out["focals"]).all() and np.isnan(ref["output.focals"].numpy()).all()
    np.testing.assert_array_equal(out["cam2world"], ref["output.poses_c2w"][0].numpy())
    np.testing.assert_array_equal(out["cam_from_world"], np.tile(np.eye(4), (4, 1, 1)))


def test_focal_uses_confident_pixels_only(ref):
    pts = ref["posest.pts3d_in_other_view"][0, 0].clone()
    conf = torch.ones(48, 64)
    conf[:, :32] = 5.0
    conf[:, 60:] = 0.5  # the 4 rightmost columns (6.25 % of the pixels) fall below the 10th percentile
    base = estimate_focal_view0(pts, conf)
    corrupted = pts.clone()
    corrupted[:, 60:] *= torch.tensor([5.0, -3.0, 1.0])  # garbage where confidence is low
    assert estimate_focal_view0(corrupted, conf) == base


def test_single_failed_view_is_flagged(ref):
    pts = ref["posest.pts3d_in_other_view"][:, 0].clone()
    conf = ref["posest.conf"][:, 0].clone()
    conf[2] = 1.0  # no pixel with conf > 1 in view 2
    out = estimate_cameras(pts, conf)
    assert out["ok"].tolist() == [True, True, False, True]
    assert np.isnan(out["focals"][2]) and np.isfinite(out["focals"][[0, 1, 3]]).all()
    np.testing.assert_array_equal(out["cam2world"][2], np.eye(4))
    # inverse poses; cam2world comes from float32 PnP, so its rotation is orthonormal to ~1e-7 only
    np.testing.assert_allclose(out["cam_from_world"] @ out["cam2world"], np.tile(np.eye(4), (4, 1, 1)), atol=1e-6)


def test_bad_shapes_raise(ref):
    with pytest.raises(ValueError, match="expected pts3d"):
        estimate_cameras(torch.zeros(2, 8, 8, 3), torch.ones(2, 8, 7))
