import numpy as np
import pytest

from core import geometry


def test_project_unproject_round_trip():
    rng = np.random.default_rng(0)
    k = np.array([[500.0, 0, 319.5], [0, 510.0, 239.5], [0, 0, 1]])
    pose = geometry.look_at(np.array([1.0, -2.0, 0.5]), np.zeros(3))
    depth = rng.uniform(1.0, 3.0, size=(48, 64))
    points, pixels = geometry.unproject_depth(depth, k, pose)
    uv, z = geometry.project(points, k, pose)
    np.testing.assert_allclose(uv[:, 0], pixels[:, 1], atol=1e-9)
    np.testing.assert_allclose(uv[:, 1], pixels[:, 0], atol=1e-9)
    np.testing.assert_allclose(z, depth[pixels[:, 0], pixels[:, 1]], atol=1e-9)


def test_point_map_matches_unproject():
    k = np.array([[100.0, 0, 31.5], [0, 100.0, 23.5], [0, 0, 1]])
    pose = geometry.look_at(np.array([0.0, -1.0, 0.2]), np.zeros(3))
    depth = np.full((48, 64), 2.0)
    depth[0, 0] = 0
    pmap = geometry.depth_to_point_map(depth, k, pose)
    points, pixels = geometry.unproject_depth(depth, k, pose)
    np.testing.assert_allclose(pmap[pixels[:, 0], pixels[:, 1]], points, atol=1e-12)
    assert np.isnan(pmap[0, 0]).all()


def test_look_at_puts_target_on_the_optical_axis_and_up_is_image_up():
    eye, target = np.array([2.0, 1.0, 1.5]), np.array([0.1, -0.2, 0.3])
    pose = geometry.look_at(eye, target)
    cam = geometry.transform_points(pose, np.stack([target, target + [0, 0, 0.1]]))
    assert abs(cam[0, 0]) < 1e-12 and abs(cam[0, 1]) < 1e-12 and cam[0, 2] > 0
    assert cam[1, 1] < cam[0, 1]  # world up is image up (negative y in OpenCV)
    np.testing.assert_allclose(geometry.camera_center(pose), eye, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(pose[:3, :3]), 1.0, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_umeyama_recovers_random_sim3(seed):
    rng = np.random.default_rng(seed)
    truth = geometry.sim3_matrix(rng.uniform(0.1, 10), geometry.random_rotation(rng), rng.normal(size=3) * 5)
    source = rng.normal(size=(50, 3))
    target = geometry.transform_points(truth, source)
    estimate = geometry.umeyama(source, target)
    np.testing.assert_allclose(estimate, truth, atol=1e-6)
    rigid = geometry.umeyama(source, geometry.transform_points(
        geometry.sim3_matrix(1.0, truth[:3, :3] / np.cbrt(np.linalg.det(truth[:3, :3])), truth[:3, 3]), source),
        with_scale=False)
    assert abs(np.linalg.det(rigid[:3, :3]) - 1) < 1e-9


def test_umeyama_weights_ignore_zero_weight_outliers():
    rng = np.random.default_rng(1)
    truth = geometry.sim3_matrix(2.0, geometry.random_rotation(rng), np.array([1.0, 2.0, 3.0]))
    source = rng.normal(size=(30, 3))
    target = geometry.transform_points(truth, source)
    target[:5] += 10.0
    weights = np.ones(30)
    weights[:5] = 0
    np.testing.assert_allclose(geometry.umeyama(source, target, weights), truth, atol=1e-6)


def test_invert_transform_and_sim3_parts():
    rng = np.random.default_rng(2)
    t = geometry.sim3_matrix(3.5, geometry.random_rotation(rng), rng.normal(size=3))
    np.testing.assert_allclose(geometry.invert_transform(t) @ t, np.eye(4), atol=1e-12)
    scale, rotation, translation = geometry.sim3_parts(t)
    assert abs(scale - 3.5) < 1e-12
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)


def test_rotation_angle_and_ray_intersection():
    angle = np.radians(37.0)
    r = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    assert abs(geometry.rotation_angle_deg(np.eye(3), r) - 37.0) < 1e-9
    point = np.array([0.3, -0.2, 0.5])
    origins = np.array([[1.0, 0, 0], [0, 2.0, 1.0], [-1.0, -1.0, 3.0]])
    np.testing.assert_allclose(geometry.least_squares_ray_intersection(origins, point - origins), point, atol=1e-12)


def test_umeyama_rejects_too_few_points():
    with pytest.raises(ValueError, match="at least 3"):
        geometry.umeyama(np.zeros((2, 3)), np.zeros((2, 3)))
