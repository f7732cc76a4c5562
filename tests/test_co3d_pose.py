"""The CO3D pose protocol (VGGT's AUC@30, RRA, RTA) against errors made by hand."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from core import geometry
from core.data.importers import ReconstructionFileError, read_reconstruction
from core.data.scene import Scene
from core.eval.protocols import co3d_pose


def _axis_angle(axis, degrees) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(degrees)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def _cameras(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cams = []
    for _ in range(count):
        eye = rng.normal(size=3) * 2 + [0, 0, 4]
        cams.append(geometry.look_at(eye, rng.normal(size=3) * 0.2))
    return np.stack(cams)


def _similarity(cams: np.ndarray, scale: float, rotation: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The same cameras in a world changed by x -> scale R x + shift (rigid cameras, scaled translations)."""
    out = cams.copy()
    out[:, :3, :3] = cams[:, :3, :3] @ rotation.T
    out[:, :3, 3] = scale * cams[:, :3, 3] - np.einsum("nij,j->ni", out[:, :3, :3], shift)
    return out


def test_rotating_one_camera_gives_that_angle_on_its_pairs_only():
    gt = _cameras(5)
    k, theta = 2, 7.0
    delta = _axis_angle([0.3, -1.0, 0.4], theta)
    pred = gt.copy()
    pred[k, :3, :] = delta @ gt[k, :3, :]  # rotated about its own centre
    pred = _similarity(pred, 3.7, _axis_angle([1, 2, 3], 40), np.array([0.5, -2.0, 1.0]))
    rre, rte = co3d_pose.pair_errors(pred, gt)
    i, j = co3d_pose.pair_indices(5)
    for a, b, r, t in zip(i, j, rre, rte):
        if k not in (a, b):
            assert r < 1e-5 and t < 1e-5
        elif b == k:  # E_a E_k^-1 keeps camera k's centre: the translation direction is unchanged
            assert r == pytest.approx(theta, abs=1e-6) and t < 1e-5
        else:  # E_k E_b^-1: its translation turns by delta
            t_gt = (gt[k] @ np.linalg.inv(gt[b]))[:3, 3]
            turned = delta @ t_gt
            cos = abs(t_gt @ turned) / (np.linalg.norm(t_gt) * np.linalg.norm(turned))
            assert r == pytest.approx(theta, abs=1e-6)
            assert t == pytest.approx(np.degrees(np.arccos(cos)), abs=1e-5) and t > 0.5


@pytest.mark.parametrize("angle,expected", [(30.0, 30.0), (120.0, 60.0), (180.0, 0.0), (90.0, 90.0)])
def test_translation_direction_error_ignores_the_sign(angle, expected):
    gt = np.stack([np.eye(4), np.eye(4)])
    gt[1, :3, 3] = [1.0, 0.0, 0.0]
    pred = gt.copy()
    pred[1, :3, 3] = [2 * np.cos(np.radians(angle)), 2 * np.sin(np.radians(angle)), 0.0]
    rre, rte = co3d_pose.pair_errors(pred, gt)
    assert rre[0] < 1e-6 and rte[0] == pytest.approx(expected, abs=1e-6)
    assert co3d_pose.translation_errors_deg(np.zeros(3), np.ones(3)) == pytest.approx(90.0)


def test_auc_of_a_known_error_list():
    # max(RRE, RTE) = 0.5, 2, 29.5, 30, 45. Bins [0,1) ... [29,30]: cumulative fractions are
    # 1/5 for the first two thresholds, 2/5 for the next 27, 4/5 for the last (30 is in it, 45 is not)
    rre = np.array([0.5, 0.1, 29.5, 30.0, 45.0])
    rte = np.array([0.2, 2.0, 3.0, 1.0, 0.0])
    expected = (2 * 1 / 5 + 27 * 2 / 5 + 4 / 5) / 30
    assert co3d_pose.auc(rre, rte) == pytest.approx(expected) == pytest.approx(0.4)
    s = co3d_pose.scores(rre, rte)
    assert s["rra5"] == 0.4 and s["rra30"] == 0.6 and s["rta5"] == 1.0  # strict <: 30.0 is not < 30
    assert co3d_pose.scores([5.0, 4.999], [0.0, 15.0])["rra5"] == 0.5


def test_per_category_averages_categories_pooled_averages_pairs():
    sequences = [{"category": "a", "rre_deg": [0.0], "rte_deg": [0.0]},
                 {"category": "b", "rre_deg": [45.0, 45.0], "rte_deg": [0.0, 0.0]},
                 {"category": "b", "rre_deg": [45.0], "rte_deg": [1.0]}]
    per = co3d_pose.aggregate(sequences, "per-category")
    pooled = co3d_pose.aggregate(sequences, "pooled")
    assert per["categories"]["a"]["auc30"] == 1.0 and per["categories"]["b"]["auc30"] == 0.0
    assert per["auc30"] == 0.5 and pooled["auc30"] == 0.25
    assert per["rra5"] == 0.5 and pooled["rra5"] == 0.25 and per["pairs"] == pooled["pairs"] == 4


def test_frame_draw_is_seeded_and_recorded():
    drawn = co3d_pose.sample_frames(60, 10, seed=3)
    assert drawn == co3d_pose.sample_frames(60, 10, seed=3) == sorted(set(drawn)) and len(drawn) == 10
    assert drawn != co3d_pose.sample_frames(60, 10, seed=4)
    assert drawn == sorted(np.random.default_rng(3).choice(60, 10, replace=False).tolist())


# ----------------------------------------------------------------------------- the command line
@pytest.fixture()
def pose_scene(tmp_path):
    cams = _cameras(12, seed=5)
    k = np.array([[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]])
    scene = Scene(name="co3d-cup-1_2_3", images=[np.full((12, 16, 3), 9 * i, np.uint8) for i in range(12)],
                  image_names=[f"frame{i:06d}.jpg" for i in range(12)], intrinsics=np.repeat(k[None], 12, 0),
                  cam_from_world=cams, provenance={"category": "cup", "sequence": "1_2_3"})
    scene.save(tmp_path / "scene")
    return tmp_path / "scene", cams


def _npz(path, extrinsic, **extra):
    buffer = io.BytesIO()
    np.savez(buffer, extrinsic=extrinsic, intrinsic=np.repeat(np.eye(3)[None], len(extrinsic), 0), **extra)
    path.write_bytes(buffer.getvalue())
    return path


def test_cli_scores_a_cameras_only_npz(pose_scene, tmp_path, capsys):
    from core.__main__ import main

    folder, cams = pose_scene
    views = [1, 4, 6, 10]
    pred = _similarity(cams[views], 0.2, _axis_angle([0, 0, 1], 90), np.ones(3))
    pred[3, :3, :] = _axis_angle([1, 0, 0], 20.0) @ pred[3, :3, :]  # view 10 off by 20 degrees
    path = _npz(tmp_path / "pred.npz", pred[:, :3, :])
    assert main(["evaluate", "--scene", str(folder), "--reconstruction", str(path), "--protocol", "co3d-pose",
                 "--views", *map(str, views)]) == 0
    result = json.loads(capsys.readouterr().out)
    rre, rte = co3d_pose.pair_errors(pred, cams[views])
    assert result["pairs_views"] == [[1, 4], [1, 6], [1, 10], [4, 6], [4, 10], [6, 10]]
    np.testing.assert_allclose(result["rre_deg"], rre)
    # 3 of 6 pairs involve view 10 (RRE 20: below 30, not below 15)
    assert result["rra15"] == 0.5 and result["rra30"] == 1.0 and result["category"] == "cup"
    assert result["auc30"] == pytest.approx(co3d_pose.auc(rre, rte))
    assert result["frame_draw"]["seed"] == 0 and result["frame_draw"]["views_are_the_draw"] is False


def test_cli_without_views_uses_the_seeded_draw(pose_scene, tmp_path, capsys):
    from core.__main__ import main

    folder, cams = pose_scene
    drawn = co3d_pose.sample_frames(12, 5, seed=2)
    path = _npz(tmp_path / "pred.npz", cams[drawn][:, :3, :])
    assert main(["evaluate", "--scene", str(folder), "--reconstruction", str(path), "--protocol", "co3d-pose",
                 "--pose-frames", "5", "--pose-seed", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["views"] == drawn and result["frame_draw"]["views_are_the_draw"] is True
    assert result["auc30"] == 1.0 and result["rta5"] == 1.0
    # a frame count that matches neither the scene nor the draw: one line naming the fix
    path = _npz(tmp_path / "seven.npz", cams[:7, :3, :])
    assert main(["evaluate", "--scene", str(folder), "--reconstruction", str(path), "--protocol", "co3d-pose"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "7 frames" in err and "--views" in err and "\n" not in err


def test_an_npz_without_world_points_is_read_for_its_cameras():
    cams = _cameras(3)
    buffer = io.BytesIO()
    np.savez(buffer, extrinsic=cams[:, :3, :], intrinsic=np.repeat(np.eye(3)[None], 3, 0))
    recon = read_reconstruction(buffer.getvalue(), "pred.npz", view_ids=[0, 2, 5], require_points=False)
    assert len(recon.points) == 0 and recon.view_ids == [0, 2, 5]
    np.testing.assert_allclose(recon.cam_from_world, cams)
    with pytest.raises(ReconstructionFileError, match="lacks the point map.*--protocol co3d-pose"):
        read_reconstruction(buffer.getvalue(), "pred.npz", view_ids=[0, 2, 5])  # a point evaluation
    buffer = io.BytesIO()
    np.savez(buffer, depth=np.zeros((2, 4, 4)))
    with pytest.raises(ReconstructionFileError, match="neither a point map .* nor cameras"):
        read_reconstruction(buffer.getvalue(), "pred.npz")
