"""Correspondences with occlusion (against mesh ray casting) and the viewer's attention maps."""
import numpy as np
import pytest
import torch

from core.errors import UserError

from core import geometry
from core.studies.attention import capture_session


def _raycaster(scene):
    import open3d as o3d

    mesh = o3d.t.geometry.TriangleMesh()
    mesh.vertex.positions = o3d.core.Tensor(scene.mesh_vertices.astype(np.float32))
    mesh.triangle.indices = o3d.core.Tensor(scene.mesh_faces.astype(np.int32))
    rc = o3d.t.geometry.RaycastingScene()
    rc.add_triangles(mesh)
    return rc


def _cast(rc, origin, direction):
    import open3d as o3d

    ray = np.concatenate([origin, direction])[None].astype(np.float32)
    return float(rc.cast_rays(o3d.core.Tensor(ray))["t_hit"].numpy()[0])


def test_ground_truth_transfer_lands_within_a_pixel_and_sees_occlusion(sample_scene):
    scene = sample_scene
    rc = _raycaster(scene)
    source = 0
    rows, cols = np.nonzero(scene.masks[source])
    picks = np.random.default_rng(0).choice(len(rows), 40, replace=False)
    checked_visible = checked_hidden = 0
    for pick in picks:
        u, v = float(cols[pick]), float(rows[pick])
        world_from_cam = geometry.invert_transform(scene.cam_from_world[source])
        direction = world_from_cam[:3, :3] @ (np.linalg.inv(scene.intrinsics[source]) @ [u, v, 1.0])
        t = _cast(rc, world_from_cam[:3, 3], direction)
        if not np.isfinite(t):
            continue
        truth_point = world_from_cam[:3, 3] + t * direction  # independent of the depth maps
        links = geometry.transfer_pixel((u, v), scene.depths[source], scene.intrinsics[source],
                                        scene.cam_from_world[source], scene.intrinsics, scene.cam_from_world,
                                        scene.depths)
        for j in (2, 21):  # a neighbour and the view from behind
            expected_uv, _ = geometry.project(truth_point[None], scene.intrinsics[j], scene.cam_from_world[j])
            assert np.linalg.norm(np.array(links[j]["uv"]) - expected_uv[0]) < 1.0
            centre = geometry.camera_center(scene.cam_from_world[j])
            to_point = truth_point - centre
            hit = _cast(rc, centre, to_point / np.linalg.norm(to_point))
            hidden = hit < np.linalg.norm(to_point) * (1 - 0.03)
            near_threshold = abs(hit - np.linalg.norm(to_point) * (1 - 0.03)) < 0.005 * np.linalg.norm(to_point)
            if links[j]["in_bounds"] and not near_threshold:
                assert links[j]["occluded"] == hidden
                checked_hidden += hidden
                checked_visible += not hidden
    assert checked_hidden >= 5 and checked_visible >= 5  # front points are hidden from behind, seen nearby


def test_attention_maps_match_the_capture_rows(sample_scene):
    from core.models.vggt import AttentionCapture
    from core.models.vggt.processing import preprocess_images
    from core.studies.attention import vggt_model

    session = capture_session(sample_scene, [0, 14, 28], weights="random-tiny")
    token = session.token_for_pixel(1, 200, 150)
    model = vggt_model("random-tiny")
    tensor, _ = preprocess_images([sample_scene.images[v] for v in (0, 14, 28)], "crop")
    rows = AttentionCapture([token])
    with torch.inference_mode():
        model(tensor, heads=("camera",), capture=rows)
    for layer in session.layers:
        reference = rows.rows[layer][0, :, 0].amax(0).numpy()  # max over heads, all tokens
        mine = session.layer_attention(token, layer, "max")
        np.testing.assert_allclose(mine, session._patch_maps(reference), atol=1e-6)
        head0 = session.layer_attention(token, layer, 0)
        assert head0.sum() <= 1.0 + 1e-5  # patches only: camera/register tokens take the rest
    steps = []
    rolled = session.rollout(token, session.layers[0], session.layers[-1], 0.5,
                             progress=lambda fraction, message: steps.append(fraction))
    assert rolled.shape == (3,) + session.grid and rolled.min() >= 0 and rolled.sum() <= 1 + 1e-5
    assert steps == [i / len(session.layers) for i in range(len(session.layers))]
    again = session.rollout(token, session.layers[0], session.layers[-1], 0.5,
                            progress=lambda fraction, message: steps.append(fraction))
    assert again is rolled and len(steps) == len(session.layers)  # kept, not recomputed
    other = session.rollout(token, session.layers[0], session.layers[-1], 0.9)
    assert not np.array_equal(other, rolled)
    with pytest.raises(UserError, match="no captured layer"):
        session.rollout(token, 50, 60)


def test_capture_without_the_checkpoint_says_what_is_missing(sample_scene, tmp_path, monkeypatch):
    from core.models import model_cache, weights

    monkeypatch.setenv("RECONBENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(weights, "_hf_cached", lambda checkpoint: None)  # ignore a real HF cache
    model_cache.clear()
    with pytest.raises(UserError, match="weights fetch vggt"):
        capture_session(sample_scene, [0], weights="pretrained")
    with pytest.raises(UserError, match="nowhere.pt does not exist"):
        capture_session(sample_scene, [0], weights="pretrained", checkpoint_path=str(tmp_path / "nowhere.pt"))


def test_crop_to_aspect_keeps_the_centre():
    from core.data.prepare.frames import crop_to_aspect

    portrait = np.arange(640 * 480).reshape(640, 480)
    landscape = crop_to_aspect(portrait, 392 / 518)
    assert landscape.shape == (363, 480)  # 480 * 392/518 = 363.2
    np.testing.assert_array_equal(landscape, portrait[138:501])
    wide = crop_to_aspect(portrait.T, 1.0)
    assert wide.shape == (480, 480) and wide[0, 0] == portrait.T[0, 80]
    assert crop_to_aspect(portrait, 640 / 480) is portrait


def test_attention_benchmark_reports_the_capture_it_holds(sample_scene):
    from core.studies.attention import bench
    from core.store.cache import REPO_ROOT
    from core.models.vggt import VGGTConfig

    (row,) = bench(["--scene", str(REPO_ROOT / "sample_data" / "toy"), "--weights", "random-tiny", "--views", "2"])
    config = VGGTConfig.tiny()
    assert (row["height"], row["width"]) == (392, 518)
    tokens = 2 * (1 + config.num_register_tokens + (392 // 14) * (518 // 14))
    assert row["tokens"] == tokens and row["layers_captured"] == config.depth
    # queries and keys of every global layer, float32: 2 · N · C · 4 bytes per layer
    assert row["capture_bytes"] == config.depth * 2 * tokens * config.embed_dim * 4
    assert 0.5 < row["rollout_mass_on_patches"] <= 1 + 1e-5
    assert row["peak_rss_bytes"] > row["model_rss_bytes"] + row["capture_bytes"]
    assert row["view_ids"] == sample_scene.uniform_views(2)
