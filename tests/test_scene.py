import numpy as np
import pytest

from core.data.scene import Reconstruction, Scene, SceneError, find_scenes


def _random_scene(n=3, h=20, w=30, seed=0):
    rng = np.random.default_rng(seed)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, 3] = rng.normal(size=(n, 3))
    poses[1] = np.nan  # an unregistered view
    return Scene(
        name="rand", images=[rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)],
        image_names=[f"img{i}.png" for i in range(n)],
        intrinsics=np.tile(np.array([[20.0, 0, 14.5], [0, 21.0, 9.5], [0, 0, 1]]), (n, 1, 1)),
        cam_from_world=poses, depths=rng.uniform(0, 5, (n, h, w)).astype(np.float32),
        masks=rng.random((n, h, w)) > 0.5, gt_points=rng.normal(size=(100, 3)).astype(np.float32),
        gt_colors=rng.integers(0, 256, (100, 3), dtype=np.uint8),
        mesh_vertices=rng.normal(size=(10, 3)).astype(np.float32), mesh_faces=np.array([[0, 1, 2], [2, 3, 4]]),
        provenance={"made_by": "test", "seed": 0})


def test_scene_round_trip_is_exact(tmp_path):
    scene = _random_scene()
    scene.save(tmp_path / "s")
    loaded = Scene.load(tmp_path / "s")
    assert loaded.image_names == scene.image_names and loaded.provenance == scene.provenance
    for a, b in zip(scene.images, loaded.images):
        np.testing.assert_array_equal(a, b)
    for name in ("intrinsics", "cam_from_world", "depths", "masks", "gt_points", "gt_colors",
                 "mesh_vertices", "mesh_faces"):
        np.testing.assert_array_equal(getattr(scene, name), getattr(loaded, name), err_msg=name)
    assert loaded.registered.tolist() == [True, False, True]


def test_quantised_depth_round_trip_within_half_a_step(tmp_path):
    scene = _random_scene()
    scene.save(tmp_path / "q", depth_scale=1e-4)
    loaded = Scene.load(tmp_path / "q")
    assert np.abs(loaded.depths - scene.depths).max() <= 0.5e-4 + 1e-6


def test_reconstruction_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(1)
    recon = Reconstruction(method="m", points=rng.normal(size=(50, 3)), colors=rng.integers(0, 255, (50, 3)),
                           confidence=rng.random(50), source_view=rng.integers(0, 2, 50), view_ids=[3, 7],
                           cam_from_world=np.tile(np.eye(4), (2, 1, 1)), intrinsics=np.tile(np.eye(3), (2, 1, 1)),
                           depth_maps=rng.random((2, 4, 5)), options={"a": 1, "b": "x"}, seconds=1.5,
                           peak_memory_bytes=123, parameter_count=9, notes=["random weights"], extra={"k": [1, 2]})
    recon.save(tmp_path / "r")
    loaded = Reconstruction.load(tmp_path / "r")
    for name in ("points", "colors", "confidence", "source_view", "cam_from_world", "intrinsics", "depth_maps"):
        np.testing.assert_array_equal(getattr(recon, name), getattr(loaded, name), err_msg=name)
    assert loaded.meta() == recon.meta()


def test_scene_validation_messages():
    scene = _random_scene()
    with pytest.raises(SceneError, match="different sizes"):
        Scene("x", [scene.images[0], scene.images[1][:10]], ["a", "b"], scene.intrinsics[:2], scene.cam_from_world[:2])
    with pytest.raises(SceneError, match="intrinsics must be"):
        Scene("x", scene.images, scene.image_names, np.eye(3), scene.cam_from_world)
    with pytest.raises(SceneError, match="at least one view"):
        Scene("x", [], [], np.zeros((0, 3, 3)), np.zeros((0, 4, 4)))
    with pytest.raises(SceneError, match="rows for"):
        Reconstruction(method="m", points=np.zeros((5, 3)), colors=np.zeros((4, 3)))


def test_subset_and_find_scenes(tmp_path):
    scene = _random_scene()
    sub = scene.subset([2, 0])
    assert sub.image_names == ["img2.png", "img0.png"]
    np.testing.assert_array_equal(sub.depths[1], scene.depths[0])
    scene.save(tmp_path / "root" / "folder")
    assert find_scenes(tmp_path / "root") == {"rand": tmp_path / "root" / "folder"}
    with pytest.raises(SceneError, match="not a scene folder"):
        Scene.load(tmp_path)


def test_sample_scene_is_complete(sample_scene):
    assert sample_scene.num_views == 42 and sample_scene.image_size == (640, 480)
    assert sample_scene.registered.all() and sample_scene.has_ground_truth
    assert sample_scene.masks.any(axis=(1, 2)).all()
