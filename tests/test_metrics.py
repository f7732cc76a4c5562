import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from core import geometry
from core.eval import metrics
from core.data.scene import Reconstruction
from tests.conftest import known_sim3


def test_chamfer_matches_brute_force():
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(300, 3)), rng.normal(size=(200, 3)) + 0.3
    d = cdist(p, q)
    assert metrics.chamfer_distance(p, q) == pytest.approx(d.min(axis=1).mean() + d.min(axis=0).mean(), rel=1e-12)


def test_emd_matches_linear_sum_assignment():
    rng = np.random.default_rng(1)
    p, q = rng.normal(size=(150, 3)), rng.uniform(-1, 1, size=(150, 3))
    cost = cdist(p, q)
    rows, cols = linear_sum_assignment(cost)
    assert metrics.earth_movers_distance(p, q) == pytest.approx(cost[rows, cols].mean(), rel=1e-9)


def test_a_cloud_scored_against_itself_is_zero():
    rng = np.random.default_rng(2)
    p = rng.normal(size=(500, 3))
    assert metrics.chamfer_distance(p, p) == 0.0
    assert metrics.earth_movers_distance(p, p, max_points=256) < 1e-7  # sqrt round-off on the diagonal


def test_precision_recall_fscore_direct():
    pred_to_gt = np.array([0.0, 0.005, 0.02, 0.5])
    gt_to_pred = np.array([0.001, 0.002, 0.2])
    precision, recall, f = metrics.precision_recall_fscore(pred_to_gt, gt_to_pred, 0.01)
    assert (precision, recall) == (0.5, 2 / 3)
    assert f == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(metrics.EvaluationError, match="empty"):
        metrics.chamfer_distance(np.zeros((0, 3)), np.zeros((3, 3)))
    with pytest.raises(metrics.EvaluationError, match="NaN"):
        metrics.chamfer_distance(np.full((3, 3), np.nan), np.zeros((3, 3)))
    with pytest.raises(metrics.EvaluationError, match="Nx3"):
        metrics.earth_movers_distance(np.zeros((3, 2)), np.zeros((3, 3)))


def test_camera_errors_are_similarity_invariant_and_see_a_known_rotation():
    rng = np.random.default_rng(3)
    poses = np.stack([geometry.look_at(rng.normal(size=3) * 2 + [0, 0, 3], np.zeros(3)) for _ in range(5)])
    sim = known_sim3(4)
    scale = geometry.sim3_parts(sim)[0]
    # The same cameras in a world moved by `sim`: cam_from_world' = scale * pose @ sim^-1 (kept rigid).
    moved = []
    for pose in poses:
        p = pose @ geometry.invert_transform(sim)
        p[:3, :] *= scale
        moved.append(p)
    errors = metrics.camera_errors(np.stack(moved), poses)
    assert errors["pairs"] == 10 and errors["rre_deg"] < 1e-6 and errors["rte_deg"] < 1e-4
    assert errors["auc30"] == 1.0
    tilted = poses.copy()
    angle = np.radians(10)
    tilt = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    tilted[0, :3, :3] = tilt @ poses[0, :3, :3]
    tilted[0, :3, 3] = tilt @ poses[0, :3, 3]  # rotate camera 0 about its own centre
    errors = metrics.camera_errors(tilted, poses)
    assert errors["rra@5"] == pytest.approx(6 / 10) and errors["rra@15"] == 1.0


def test_depth_errors_after_median_scaling():
    rng = np.random.default_rng(5)
    gt = rng.uniform(1, 2, size=(2, 40, 30)).astype(np.float32)
    out = metrics.depth_errors(3.0 * gt[:, ::2, ::2], gt)
    assert out["abs_rel"] < 1e-6 and out["delta1"] == 1.0
    noisy = gt * np.where(rng.random(gt.shape) < 0.5, 1.0, 1.5)
    out = metrics.depth_errors(noisy, gt)
    assert out["delta1"] < 1.0 and out["abs_rel"] > 0.1


def _sphere_scene(count=4000, seed=0):
    """A lumpy sphere with cameras around it, as a minimal Scene."""
    from core.data.scene import Scene

    rng = np.random.default_rng(seed)
    d = rng.normal(size=(count, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    r = 1 + 0.3 * np.sin(3 * d[:, 0]) * np.cos(2 * d[:, 1]) + 0.2 * d[:, 2] ** 3
    points = d * r[:, None] * np.array([1.0, 0.7, 1.4])
    poses = np.stack([geometry.look_at(np.array([4 * np.cos(a), 4 * np.sin(a), 1.0 + np.sin(3 * a)]), np.zeros(3))
                      for a in np.linspace(0, 2 * np.pi, 6, endpoint=False)])
    k = np.tile(np.array([[50.0, 0, 15.5], [0, 50.0, 11.5], [0, 0, 1]]), (6, 1, 1))
    return Scene("lumpy", [np.zeros((24, 32, 3), np.uint8)] * 6, [f"{i}.png" for i in range(6)], k, poses,
                 gt_points=points.astype(np.float32))


@pytest.mark.parametrize("seed", [3, 11])
def test_evaluate_recovers_a_known_similarity_without_cameras(seed):
    scene = _sphere_scene()
    sim = known_sim3(seed)
    recon = Reconstruction(method="t", points=geometry.transform_points(sim, scene.gt_points.astype(np.float64)))
    result = metrics.evaluate(scene, recon)
    expected = metrics.normalization_transform(scene.gt_points) @ geometry.invert_transform(sim)
    np.testing.assert_allclose(result.alignment.transform, expected, atol=1e-6)
    assert result.scores["chamfer"] < 1e-6 and result.scores["fscore"]["0.005"] == 1.0


def test_evaluate_uses_cameras_when_both_sides_have_them():
    scene = _sphere_scene()
    sim = known_sim3(7)
    points = geometry.transform_points(sim, scene.gt_points.astype(np.float64))
    cams = np.stack([p @ geometry.invert_transform(sim) for p in scene.cam_from_world])
    scale = geometry.sim3_parts(sim)[0]
    cams[:, :3, :] *= scale  # keep them rigid: scale * [R/s | t/s]
    cams[:, 3] = [0, 0, 0, 1]
    recon = Reconstruction(method="t", points=points, view_ids=list(range(6)), cam_from_world=cams)
    camera_guess = metrics.camera_alignment(recon, scene, metrics.normalization_transform(scene.gt_points))
    expected = metrics.normalization_transform(scene.gt_points) @ geometry.invert_transform(sim)
    np.testing.assert_allclose(camera_guess, expected, atol=1e-6)
    result = metrics.evaluate(scene, recon)
    assert result.alignment.method.startswith("cameras")
    assert result.scores["cameras"]["rre_deg"] < 1e-6


def test_evaluate_rejects_unusable_reconstructions():
    scene = _sphere_scene()
    with pytest.raises(metrics.EvaluationError, match="no finite points"):
        metrics.evaluate(scene, Reconstruction(method="t", points=np.full((50, 3), np.nan)))
    with pytest.raises(metrics.EvaluationError, match="2 usable points"):
        metrics.evaluate(scene, Reconstruction(method="t", points=np.zeros((2, 3))))


def test_overlay_from_scores_reproduces_the_evaluation():
    scene = _sphere_scene()
    rng = np.random.default_rng(0)
    noisy = scene.gt_points + rng.normal(scale=0.02, size=scene.gt_points.shape)
    recon = Reconstruction(method="t", points=noisy)
    result = metrics.evaluate(scene, recon)
    rebuilt = metrics.overlay_from_scores(scene, recon, result.scores)
    np.testing.assert_allclose(rebuilt.aligned_points, result.aligned_points, atol=1e-5)
    np.testing.assert_allclose(rebuilt.point_errors, result.point_errors, atol=1e-5)


def test_icp_that_would_collapse_the_scale_is_redone_rigidly(monkeypatch):
    scene = _sphere_scene()
    real_icp = metrics.icp
    calls = []

    def shrinking_icp(source, target, init, distances, with_scale=True, iterations=40):
        transform, fitness, rmse = real_icp(source, target, init, distances, with_scale, iterations)
        calls.append(with_scale)
        if with_scale and len(distances) == len(metrics.EvaluationOptions().icp_distances):
            transform = geometry.sim3_matrix(0.2, np.eye(3), np.zeros(3)) @ transform  # a collapse
        return transform, fitness, rmse

    monkeypatch.setattr(metrics, "icp", shrinking_icp)
    sim = known_sim3(3)
    recon = Reconstruction(method="t", points=geometry.transform_points(sim, scene.gt_points.astype(np.float64)))
    result = metrics.evaluate(scene, recon)
    assert result.alignment.method == "global+icp(rigid)" and calls[-1] is False
    assert result.scores["chamfer"] < 5e-3  # rigid refinement from the coarse (global search) scale
