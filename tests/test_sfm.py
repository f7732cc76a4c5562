"""COLMAP sparse reconstruction (core.data.sfm) on the sample's 42 views, against the exact cameras.

The reconstruction runs once per session (1,024 SIFT features per image) and is shared by the tests.
"""
import numpy as np
import pytest

from core.data import sfm
from core.errors import OptionError, UserError
from tests.conftest import SAMPLE


@pytest.fixture(scope="session")
def toy_sfm(sample_scene, tmp_path_factory):
    import json

    files = json.loads((SAMPLE / "scene.json").read_text())["image_files"]
    options = sfm.SfmOptions(max_features=1024)
    return sfm.run_sfm(SAMPLE / "images", files, tmp_path_factory.mktemp("sfm"), options)


def _radius(scene):
    gt = scene.gt_points.astype(np.float64)
    return float(np.linalg.norm(gt - (gt.min(0) + gt.max(0)) / 2, axis=1).max())


def test_all_views_register_with_accurate_poses(toy_sfm, sample_scene):
    report = toy_sfm.report()
    assert report["registered"] == 42 and report["unregistered"] == []
    errors = sfm.pose_errors(toy_sfm.cam_from_world, sample_scene.cam_from_world, _radius(sample_scene))
    print("SfM on the sample:", report, errors)
    assert errors["median_rotation_error_deg"] < 0.5
    assert errors["max_centre_error_rel"] < 0.01
    assert report["mean_reprojection_error_px"] < 1.0


def test_intrinsics_follow_the_pixel_centre_convention(toy_sfm, sample_scene):
    k_true = sample_scene.intrinsics[0]
    for k in toy_sfm.intrinsics:
        assert abs(k[0, 0] / k_true[0, 0] - 1) < 0.01
        # the sample's principal point is (239.5, 319.5) in our convention, (240, 320) in COLMAP's
        np.testing.assert_allclose(k[:2, 2], k_true[:2, 2], atol=1e-6)


def test_report_matches_the_written_model(toy_sfm):
    import pycolmap

    model = pycolmap.Reconstruction(str(toy_sfm.sparse_path))
    report = toy_sfm.report()
    assert model.num_reg_images() == report["registered"]
    assert model.num_points3D() == report["points"] == len(toy_sfm.points)
    tracks = [p.track.length() for p in model.points3D.values()]
    assert report["mean_track_length"] == pytest.approx(np.mean(tracks))
    assert report["mean_track_length"] >= 2
    assert set(report["stage_seconds"]) == {"extraction", "matching", "mapping"}


def test_views_missing_from_the_model_get_nan_poses(toy_sfm):
    import pycolmap

    model = pycolmap.Reconstruction(str(toy_sfm.sparse_path))
    names = ["not_there.png"] + list(toy_sfm.image_names[:3])
    result = sfm.reconstruction_to_result(model, names)
    assert not np.isfinite(result.cam_from_world[0]).any()
    assert np.isfinite(result.cam_from_world[1:]).all()
    assert result.unregistered_names == ["not_there.png"]
    np.testing.assert_allclose(result.intrinsics[0], result.intrinsics[1])  # shared camera as fallback


@pytest.mark.parametrize("model,params,expected_k,expected_dist", [
    ("SIMPLE_PINHOLE", [500, 320, 240], [[500, 0, 319.5], [0, 500, 239.5]], [0, 0, 0, 0]),
    ("SIMPLE_RADIAL", [500, 320, 240, 0.1], [[500, 0, 319.5], [0, 500, 239.5]], [0.1, 0, 0, 0]),
    ("PINHOLE", [500, 510, 320, 240], [[500, 0, 319.5], [0, 510, 239.5]], [0, 0, 0, 0]),
    ("OPENCV", [500, 510, 320, 240, 0.1, -0.02, 0.001, 0.002], [[500, 0, 319.5], [0, 510, 239.5]],
     [0.1, -0.02, 0.001, 0.002]),
])
def test_colmap_cameras_convert_to_opencv(model, params, expected_k, expected_dist):
    import pycolmap

    camera = pycolmap.Camera(model=model, width=640, height=480, params=params)
    k, dist = sfm.colmap_to_opencv_intrinsics(camera)
    np.testing.assert_allclose(k[:2], expected_k)
    np.testing.assert_allclose(dist, expected_dist)


def test_undistortion_inverts_the_camera_model():
    import cv2

    k = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])
    dist = np.array([-0.2, 0.0, 0.0, 0.0])
    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), (320, 240), interpolation=cv2.INTER_CUBIC)
    # a distorted image: pixel p of it shows the undistorted image at undistort(p)
    grid = np.stack(np.meshgrid(np.arange(320.0), np.arange(240.0)), -1).reshape(-1, 1, 2)
    ideal = cv2.undistortPoints(grid, k, dist, P=k).reshape(240, 320, 2).astype(np.float32)
    distorted = cv2.remap(image, ideal[..., 0], ideal[..., 1], cv2.INTER_LINEAR)
    restored = sfm.undistort_image(distorted, k, dist)
    inner = (slice(20, 220), slice(20, 300))
    error_before = np.abs(distorted[inner].astype(int) - image[inner].astype(int)).mean()
    error_after = np.abs(restored[inner].astype(int) - image[inner].astype(int)).mean()
    assert error_after < 0.3 * error_before
    assert sfm.undistort_image(image, k, np.zeros(4)) is image


def test_too_few_images_is_a_clear_error(tmp_path):
    with pytest.raises(sfm.SfmError, match="at least 2 images") as raised:
        sfm.run_sfm(SAMPLE / "images", ["view_000.jpg"], tmp_path)
    assert isinstance(raised.value, UserError)  # the CLI and the pages show it as one line
    with pytest.raises(OptionError, match="unknown camera_model 'FISH' .choices: SIMPLE_RADIAL"):
        sfm.run_sfm(SAMPLE / "images", ["view_000.jpg", "view_001.jpg"], tmp_path, sfm.SfmOptions(camera_model="FISH"))


def test_colmap_images_are_written_losslessly_under_unique_names(tmp_path):
    from core.data.scene import read_image

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(4)]
    names = ["a b.jpg", "a_b.png", "../c.JPG", ""]
    files = sfm.write_colmap_images(tmp_path, images, names)
    assert files == ["a_b.png", "a_b_1.png", "c.png", "view_003.png"]
    for image, file_name in zip(images, files):
        np.testing.assert_array_equal(read_image(tmp_path / file_name), image)
    assert sfm.write_colmap_images(tmp_path, images[::-1], names) == files  # same names, same files
    np.testing.assert_array_equal(read_image(tmp_path / files[0]), images[-1])


def test_dense_without_cuda_says_so(tmp_path):
    import pycolmap

    if pycolmap.has_cuda:
        pytest.fail("this test documents the CPU wheel; a CUDA pycolmap needs a dense test instead")
    with pytest.raises(sfm.SfmError, match="CUDA"):
        sfm.colmap_dense(tmp_path, tmp_path, tmp_path)


def test_sfm_options_are_declared_once_with_help_choices_and_ranges():
    from core import options as opts

    specs = {s.name: s for s in opts.specs(sfm.SfmOptions)}
    assert set(specs) == {"camera_model", "shared_camera", "matcher", "max_features", "max_image_size",
                          "sequential_overlap", "num_threads", "seed", "first_octave"}
    assert all(s.help for s in specs.values())
    assert specs["camera_model"].choices == sfm.CAMERA_MODELS and "OPENCV" in sfm.CAMERA_MODELS
    assert specs["matcher"].choices == sfm.MATCHERS == ("auto", "exhaustive", "sequential")
    assert sfm.SfmOptions.max_features == specs["max_features"].default == 4096  # the pages read class defaults
    sfm.SfmOptions(matcher="sequential", num_threads=-1).validate()
    with pytest.raises(OptionError, match=r"sequential_overlap must be in \[1, inf\]"):
        sfm.SfmOptions(sequential_overlap=0).validate()
    with pytest.raises(OptionError, match="unknown matcher 'sideways' .choices: auto, exhaustive, sequential"):
        sfm.SfmOptions(matcher="sideways").validate()
