"""core.geometry: one test per public function, each against an independent computation, an
invariant or a round trip. Tolerances are float64 rounding (1e-9 .. 1e-12) unless stated."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from core import geometry


def _random_pose(rng, scale=1.0):
    return geometry.sim3_matrix(scale, geometry.random_rotation(rng), rng.normal(size=3))


# ---------------------------------------------------------------------------- transforms
def test_to_homogeneous_appends_ones_and_keeps_dtype():
    points = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    out = geometry.to_homogeneous(points)
    assert out.shape == (2, 2, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[..., :3], points)
    assert (out[..., 3] == 1).all()


def test_as_4x4_completes_3x4_and_rejects_other_shapes():
    rng = np.random.default_rng(0)
    pose = _random_pose(rng)
    np.testing.assert_array_equal(geometry.as_4x4(pose[:3]), pose)
    np.testing.assert_array_equal(geometry.as_4x4(np.stack([pose[:3]] * 2)), np.stack([pose] * 2))
    with pytest.raises(ValueError, match=r"\[\.\.\.,3,4\] or \[\.\.\.,4,4\]"):
        geometry.as_4x4(np.eye(3))


def test_transform_points_matches_per_point_matrix_product_and_broadcasts():
    rng = np.random.default_rng(1)
    poses = np.stack([_random_pose(rng, 2.0) for _ in range(3)])
    points = rng.normal(size=(3, 5, 3)).astype(np.float32)
    out = geometry.transform_points(poses, points)
    assert out.dtype == np.float32 and out.shape == (3, 5, 3)
    expected = np.array([[poses[b, :3, :3] @ p + poses[b, :3, 3] for p in points[b].astype(np.float64)]
                         for b in range(3)])
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)  # float32 output
    grid = rng.normal(size=(4, 6, 3))  # one transform, any [...,3]; a 3x4 pose works as a 4x4
    np.testing.assert_allclose(geometry.transform_points(poses[0][:3], grid),
                               (grid.reshape(-1, 3) @ poses[0, :3, :3].T + poses[0, :3, 3]).reshape(4, 6, 3),
                               atol=1e-12)
    one = geometry.transform_points(poses[1], grid[0, 0])  # a single point keeps its shape
    assert one.shape == (3,)
    np.testing.assert_allclose(one, poses[1, :3, :3] @ grid[0, 0] + poses[1, :3, 3], atol=1e-12)


def test_invert_transform_of_rigid_and_sim3_batched_and_3x4():
    rng = np.random.default_rng(2)
    poses = np.stack([_random_pose(rng, s) for s in (1.0, 3.5, 0.2)])
    inverse = geometry.invert_transform(poses)
    np.testing.assert_allclose(inverse, np.linalg.inv(poses), atol=1e-12)
    np.testing.assert_allclose(inverse @ poses, np.broadcast_to(np.eye(4), (3, 4, 4)), atol=1e-12)
    np.testing.assert_allclose(geometry.invert_transform(poses[0][:3]), np.linalg.inv(poses[0]), atol=1e-12)


def test_relative_pose_maps_camera_a_coordinates_to_camera_b():
    rng = np.random.default_rng(3)
    a, b = _random_pose(rng), _random_pose(rng)
    world = rng.normal(size=(7, 3))
    b_from_a = geometry.relative_pose(a[:3], b)
    np.testing.assert_allclose(geometry.transform_points(b_from_a, geometry.transform_points(a, world)),
                               geometry.transform_points(b, world), atol=1e-12)
    np.testing.assert_allclose(geometry.relative_pose(a, a), np.eye(4), atol=1e-12)


def test_sim3_matrix_and_parts_round_trip():
    rng = np.random.default_rng(4)
    rotation, translation = geometry.random_rotation(rng), rng.normal(size=3)
    t = geometry.sim3_matrix(3.5, rotation, translation)
    np.testing.assert_allclose(geometry.transform_points(t, np.eye(3)), 3.5 * rotation.T + translation, atol=1e-12)
    scale, r, tr = geometry.sim3_parts(t)
    assert abs(scale - 3.5) < 1e-12
    np.testing.assert_allclose(r, rotation, atol=1e-12)
    np.testing.assert_allclose(tr, translation, atol=1e-12)


def test_camera_center_is_the_camera_frame_origin():
    rng = np.random.default_rng(5)
    poses = np.stack([_random_pose(rng) for _ in range(4)])
    centres = geometry.camera_center(poses[:, :3])
    for pose, centre in zip(poses, centres):
        np.testing.assert_allclose(geometry.transform_points(pose, centre[None])[0], 0.0, atol=1e-12)


def test_look_at_puts_target_on_the_optical_axis_and_up_is_image_up():
    eye, target = np.array([2.0, 1.0, 1.5]), np.array([0.1, -0.2, 0.3])
    pose = geometry.look_at(eye, target)
    cam = geometry.transform_points(pose, np.stack([target, target + [0, 0, 0.1]]))
    assert abs(cam[0, 0]) < 1e-12 and abs(cam[0, 1]) < 1e-12 and cam[0, 2] > 0
    assert cam[1, 1] < cam[0, 1]  # world up is image up (negative y in OpenCV)
    np.testing.assert_allclose(geometry.camera_center(pose), eye, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(pose[:3, :3]), 1.0, atol=1e-12)
    with pytest.raises(ValueError, match="parallel to up"):
        geometry.look_at(np.zeros(3), np.array([0.0, 0.0, 1.0]))


# ---------------------------------------------------------------------------- intrinsics
def test_intrinsics_from_fov_spans_the_field_of_view_edge_to_edge():
    k = geometry.intrinsics_from_fov(64, 48, 70.0)
    left, right = np.linalg.inv(k) @ [-0.5, 23.5, 1], np.linalg.inv(k) @ [63.5, 23.5, 1]  # outer pixel edges
    assert abs(geometry.angle_between_deg(left, right) - 70.0) < 1e-9
    np.testing.assert_allclose(k[:2, 2], [31.5, 23.5])  # image centre, integer pixel centres


def test_focal_from_fov_and_back():
    """Rays through the two outer edges of ``size`` at focal ``f`` make the field of view."""
    for size, fov in ((640.0, 50.0), (36.0, 39.6), (480.0, 90.0)):
        f = geometry.focal_from_fov(size, fov)
        assert abs(geometry.angle_between_deg(np.array([-size / 2, 0.0, f]), np.array([size / 2, 0.0, f])) - fov) < 1e-9
        assert abs(geometry.fov_from_focal(size, f) - fov) < 1e-12
    assert abs(geometry.focal_from_fov(480.0, 90.0) - 240.0) < 1e-12
    assert abs(geometry.fov_from_focal(36.0, 50.0) - 39.5977) < 1e-4  # a 50 mm lens on 35 mm film


def test_resize_crop_pixels_follows_what_a_resize_and_a_crop_do_to_an_image():
    """Measured, not derived: resize a horizontal and a vertical ramp (value = source pixel
    coordinate) with cv2 (bilinear reproduces a linear ramp exactly away from the borders),
    crop/pad by whole pixels, and read at each new pixel which source coordinate it shows."""
    import cv2

    h, w = 12, 16
    ramps = np.dstack([geometry.pixel_grid(h, w, np.float32), np.zeros((h, w), np.float32)])
    for (sx, sy), (tx, ty) in (((2.5, 2.0), (-3.0, 4.0)), ((0.5, 0.5), (1.0, -1.0)), ((1.75, 0.5), (0.0, 0.0))):
        resized = cv2.resize(ramps, (round(w * sx), round(h * sy)), interpolation=cv2.INTER_LINEAR)
        placed = np.full((resized.shape[0] + 10, resized.shape[1] + 10, 3), np.nan, np.float32)
        y0, x0 = max(int(ty), 0), max(int(tx), 0)                      # pad by t >= 0, crop by -t
        part = resized[max(-int(ty), 0):, max(-int(tx), 0):]
        placed[y0:y0 + part.shape[0], x0:x0 + part.shape[1]] = part
        new = geometry.pixel_grid(*placed.shape[:2])
        source = geometry.resize_crop_pixels(new, (sx, sy), (tx, ty), inverse=True)
        inside = np.all((source > 0.5) & (source < [w - 1.5, h - 1.5]), axis=-1)  # ramps exact here
        assert inside.sum() > 20
        np.testing.assert_allclose(placed[inside][:, :2], source[inside], atol=1e-4)  # float32 image
        np.testing.assert_allclose(geometry.resize_crop_pixels(source, (sx, sy), (tx, ty)), new, atol=1e-12)
    np.testing.assert_allclose(geometry.resize_crop_pixels([[0.0, 0.0], [3.0, 1.0]], 2.0), [[0.5, 0.5], [6.5, 2.5]])


def test_resize_crop_intrinsics_project_where_the_pixels_go():
    rng = np.random.default_rng(12)
    k = np.array([[500.0, 0.3, 319.5], [0, 480.0, 239.5], [0, 0, 1]])
    points = rng.normal(size=(6, 3)) + [0, 0, 4]
    uv, _ = geometry.project(points, k, np.eye(4))
    for scale, offset in ((0.5, (0.0, 0.0)), (2.0, (0.0, 0.0)), ((0.25, 0.4), (-7.0, 12.0))):
        k_new = geometry.resize_crop_intrinsics(k, scale, offset)
        uv_new, _ = geometry.project(points, k_new, np.eye(4))
        np.testing.assert_allclose(uv_new, geometry.resize_crop_pixels(uv, scale, offset), atol=1e-9)
        np.testing.assert_allclose(geometry.resize_crop_intrinsics(k_new, scale, offset, inverse=True), k, atol=1e-12)
    s = 0.25  # pure resize: u' + 1/2 = s (u + 1/2), focal times s
    np.testing.assert_allclose(geometry.resize_crop_intrinsics(k, s)[:2, 2], s * (k[:2, 2] + 0.5) - 0.5, atol=1e-12)
    batch = geometry.resize_crop_intrinsics(np.stack([k, 2 * k]), 0.5)  # [...,3,3]
    np.testing.assert_allclose(batch[1], geometry.resize_crop_intrinsics(2 * k, 0.5), atol=1e-12)
    degenerate = geometry.resize_crop_intrinsics(np.array([[np.inf, 0, 4], [0, np.inf, 3], [0, 0, 1]]), 2.0, (1, 1))
    assert np.isinf(degenerate[[0, 1], [0, 1]]).all() and np.isfinite(np.delete(degenerate.ravel(), [0, 4])).all()


def test_dust3r_principal_point_is_half_a_pixel_off_our_image_centre():
    assert geometry.dust3r_principal_point(48, 64) == (32.0, 24.0)
    ours = geometry.intrinsics_from_fov(64, 48, 60.0)
    theirs = geometry.dust3r_intrinsics(ours[0, 0], 48, 64)
    np.testing.assert_allclose(theirs[:2, 2] - ours[:2, 2], [0.5, 0.5])
    np.testing.assert_allclose(theirs[[0, 1, 2], [0, 1, 2]], [ours[0, 0], ours[0, 0], 1.0])
    assert theirs[0, 1] == theirs[1, 0] == theirs[2, 0] == theirs[2, 1] == 0


# ---------------------------------------------------------------------------- projection
def test_pixel_grid_is_column_row_at_integer_centres():
    grid = geometry.pixel_grid(3, 5, np.float32)
    assert grid.shape == (3, 5, 2) and grid.dtype == np.float32
    rows, cols = np.indices((3, 5))
    np.testing.assert_array_equal(grid[..., 0], cols)
    np.testing.assert_array_equal(grid[..., 1], rows)


def test_project_unproject_depth_round_trip():
    rng = np.random.default_rng(0)
    k = np.array([[500.0, 0, 319.5], [0, 510.0, 239.5], [0, 0, 1]])
    pose = geometry.look_at(np.array([1.0, -2.0, 0.5]), np.zeros(3))
    depth = rng.uniform(1.0, 3.0, size=(48, 64))
    depth[3, 4], depth[5, 6] = 0.0, np.nan
    points, pixels = geometry.unproject_depth(depth, k, pose)
    assert len(points) == 48 * 64 - 2
    uv, z = geometry.project(points, k, pose)
    np.testing.assert_allclose(uv[:, 0], pixels[:, 1], atol=1e-9)
    np.testing.assert_allclose(uv[:, 1], pixels[:, 0], atol=1e-9)
    np.testing.assert_allclose(z, depth[pixels[:, 0], pixels[:, 1]], atol=1e-9)
    behind, _ = geometry.project(-points[:1] + 2 * geometry.camera_center(pose), k, pose)
    assert np.isnan(behind).all()
    mask = np.zeros((48, 64), bool)
    mask[10:12, 20:23] = True
    assert len(geometry.unproject_depth(depth, k, pose, mask)[0]) == 6


def test_unproject_pixels_inverts_projection_at_subpixel_positions():
    rng = np.random.default_rng(6)
    k = np.array([[80.0, 0, 30.2], [0, 75.0, 22.7], [0, 0, 1]])
    pose = _random_pose(rng)
    uv = rng.uniform(0, 60, size=(9, 2))
    z = rng.uniform(0.5, 4.0, size=9)
    world = geometry.unproject_pixels(uv, z, k, pose[:3])
    uv_back, z_back = geometry.project(world, k, pose)
    np.testing.assert_allclose(uv_back, uv, atol=1e-9)
    np.testing.assert_allclose(z_back, z, atol=1e-12)
    cam = geometry.unproject_pixels(uv, z, k)  # camera frame: x = (u - cx) z / fx
    np.testing.assert_allclose(cam[:, 0], (uv[:, 0] - 30.2) * z / 80.0, atol=1e-12)


def test_depth_to_point_map_batched_with_3x4_poses_and_nan_where_invalid():
    """Batched maps equal explicit per-pixel lifting R^T (z K^-1 [u, v, 1] - t) at integer (u, v)."""
    rng = np.random.default_rng(0)
    depth = rng.uniform(1, 3, (2, 6, 8)).astype(np.float32)
    depth[1, 2, 3] = 0.0
    k = np.array([[[9.0, 0, 4], [0, 8.0, 3], [0, 0, 1]], [[7.0, 0, 3.5], [0, 7.5, 2.5], [0, 0, 1]]])
    angle = 0.3
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    cam_from_world = np.stack([np.eye(4)[:3], np.concatenate([rot, [[0.5], [-0.1], [0.2]]], 1)])
    world = geometry.depth_to_point_map(depth, k, cam_from_world)
    assert world.shape == (2, 6, 8, 3) and world.dtype == np.float64
    assert np.isnan(world[1, 2, 3]).all() and np.isfinite(np.delete(world.reshape(-1, 3), 48 + 19, 0)).all()
    for i in range(2):
        r, t = cam_from_world[i][:, :3], cam_from_world[i][:, 3]
        for v, u in [(0, 0), (5, 7), (2, 4)]:
            expected = r.T @ (float(depth[i, v, u]) * np.linalg.inv(k[i]) @ [u, v, 1.0] - t)
            np.testing.assert_allclose(world[i, v, u], expected, atol=1e-12)
    camera = geometry.depth_to_point_map(depth[0], k[0])  # no pose: camera frame, z = depth
    np.testing.assert_allclose(camera[..., 2], depth[0], atol=1e-6)


def test_frustum_corners_project_to_the_image_corners_at_the_depth():
    rng = np.random.default_rng(7)
    k = geometry.intrinsics_from_fov(40, 30, 50.0)
    pose = _random_pose(rng)
    corners = geometry.frustum_corners(k, pose, (30, 40), 2.5)
    np.testing.assert_allclose(corners[0], geometry.camera_center(pose), atol=1e-12)
    uv, z = geometry.project(corners[1:], k, pose)
    np.testing.assert_allclose(uv, [[0, 0], [39, 0], [39, 29], [0, 29]], atol=1e-9)
    np.testing.assert_allclose(z, 2.5, atol=1e-12)


def test_transfer_pixel_finds_the_point_and_tests_occlusion():
    k = geometry.intrinsics_from_fov(32, 24, 60.0)
    source = geometry.look_at(np.array([0.0, -3.0, 0.0]), np.zeros(3))
    target = geometry.look_at(np.array([3.0, 0.0, 0.0]), np.zeros(3))
    depth = np.full((24, 32), 3.0)
    point = geometry.unproject_pixels(np.array([[15.0, 11.0]]), 3.0, k, source)[0]
    uv, z = geometry.project(point[None], k, target)
    seen = np.full((24, 32), float(z[0]))
    hidden = np.full((24, 32), 0.5 * float(z[0]))
    links = geometry.transfer_pixel((15, 11), depth, k, source, np.stack([k, k]), np.stack([target, target]),
                                    np.stack([seen, hidden]))
    np.testing.assert_allclose(links[0]["point"], point, atol=1e-12)
    np.testing.assert_allclose(links[0]["uv"], uv[0], atol=1e-9)
    assert links[0]["in_bounds"] and links[0]["occluded"] is False and links[1]["occluded"] is True
    assert geometry.transfer_pixel((3, 3), np.zeros((24, 32)), k, source, k[None], target[None]) == []
    with pytest.raises(ValueError, match="outside"):
        geometry.transfer_pixel((40, 3), depth, k, source, k[None], target[None])


# ---------------------------------------------------------------------------- estimation
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
    assert np.abs(geometry.umeyama(source, target) - truth).max() > 1e-2  # the outliers do matter unweighted


def test_umeyama_parts_proper_rotation_for_a_reflection_and_any_leading_shape():
    rng = np.random.default_rng(8)
    source = rng.normal(size=(4, 5, 3))
    scale, rotation, translation = geometry.umeyama_parts(source, source * [1.0, 1.0, -1.0])
    assert abs(np.linalg.det(rotation) - 1) < 1e-12 and scale < 1  # best proper fit of a mirror image
    truth = geometry.sim3_matrix(0.7, geometry.random_rotation(rng), rng.normal(size=3))
    parts = geometry.umeyama_parts(source, geometry.transform_points(truth, source.reshape(-1, 3)).reshape(4, 5, 3),
                                   np.ones((4, 5)))
    np.testing.assert_allclose(geometry.sim3_matrix(*parts), truth, atol=1e-9)


def test_umeyama_rejects_too_few_points_and_zero_weights():
    with pytest.raises(ValueError, match="at least 3"):
        geometry.umeyama(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="positive weight"):
        geometry.umeyama(np.ones((5, 3)), np.ones((5, 3)), np.zeros(5))
    with pytest.raises(ValueError, match="matching"):
        geometry.umeyama(np.ones((5, 3)), np.ones((4, 3)))


def _point_map(h, w, focal, principal_point):
    """[H,W,3] camera-frame points of a pinhole camera over a wavy surface (independent of the library)."""
    v, u = np.mgrid[:h, :w].astype(np.float64)
    z = 2 + 0.3 * np.sin(u / 10) * np.cos(v / 7)
    return np.stack([(u - principal_point[0]) * z / focal, (v - principal_point[1]) * z / focal, z], -1)


def test_focal_from_point_map_recovers_a_known_focal():
    h, w, f = 30, 40, 37.5
    pp = geometry.dust3r_principal_point(h, w)
    pts = _point_map(h, w, f, pp)
    assert abs(geometry.focal_from_point_map(pts, pp) - f) < 1e-8
    mask = np.zeros((h, w), bool)
    mask[5:20, 10:30] = True
    corrupted = pts.copy()
    corrupted[~mask] *= [3.0, -1.0, 1.0]  # garbage outside the mask is ignored
    assert abs(geometry.focal_from_point_map(corrupted, pp, mask, iterations=100) - f) < 1e-8
    # the principal point matters: our image centre on DUSt3R's points is biased
    assert abs(geometry.focal_from_point_map(pts, ((w - 1) / 2, (h - 1) / 2)) - f) > 1e-3
    assert geometry.focal_from_point_map(pts * [-1.0, -1.0, 1.0], pp) == 0.0  # mirrored: clipped
    assert np.isnan(geometry.focal_from_point_map(pts, pp, np.zeros((h, w), bool)))


# ---------------------------------------------------------------------------- rotations
def test_quaternion_to_matrix_matches_scipy_xyzw_and_ignores_the_norm():
    rng = np.random.default_rng(9)
    q = rng.normal(size=(16, 4))
    np.testing.assert_allclose(geometry.quaternion_to_matrix(3.0 * q), Rotation.from_quat(q).as_matrix(), atol=1e-12)
    s = np.sqrt(0.5)  # XYZW: 90 degrees about z maps x to y
    np.testing.assert_allclose(geometry.quaternion_to_matrix(np.array([0.0, 0.0, s, s])) @ [1, 0, 0], [0, 1, 0],
                               atol=1e-12)


def test_matrix_to_quaternion_round_trip_with_nonnegative_w():
    rng = np.random.default_rng(10)
    rotations = np.stack([geometry.random_rotation(rng) for _ in range(32)] + [np.diag([1.0, -1, -1])])
    q = geometry.matrix_to_quaternion(rotations)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-12)
    assert (q[:, 3] >= 0).all()
    np.testing.assert_allclose(geometry.quaternion_to_matrix(q), rotations, atol=1e-12)
    reference = Rotation.from_matrix(rotations).as_quat()
    np.testing.assert_allclose(np.abs(np.sum(q * reference, axis=-1)), 1.0, atol=1e-12)  # same up to sign


def test_rotation_angle_and_angle_between():
    angle = np.radians(37.0)
    r = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    assert abs(geometry.rotation_angle_deg(np.eye(3), r) - 37.0) < 1e-9
    np.testing.assert_allclose(geometry.rotation_angle_deg(np.stack([r, r]), np.stack([r, np.eye(3)])), [0, 37.0],
                               atol=1e-12)
    rng = np.random.default_rng(13)  # random pairs, and angles of 1e-7 and 180 - 1e-5 degrees about random axes
    a, b = (np.stack([geometry.random_rotation(rng) for _ in range(8)]) for _ in range(2))
    expected = np.degrees(Rotation.from_matrix(np.swapaxes(a, -1, -2) @ b).magnitude())
    np.testing.assert_allclose(geometry.rotation_angle_deg(a, b), expected, atol=1e-10)
    axes = rng.normal(size=(2, 3))
    for degrees, axis in zip((1e-7, 180 - 1e-5), axes):
        turn = Rotation.from_rotvec(np.radians(degrees) * axis / np.linalg.norm(axis)).as_matrix()
        assert abs(geometry.rotation_angle_deg(a[0], a[0] @ turn) - degrees) < 1e-12 + 1e-6 * degrees
    assert abs(geometry.angle_between_deg(np.array([1.0, 0, 0]), np.array([1.0, 1.0, 0])) - 45.0) < 1e-12
    assert geometry.angle_between_deg(np.zeros(3), np.array([1.0, 0, 0])) == 0.0


def test_random_rotation_is_a_proper_rotation():
    rng = np.random.default_rng(11)
    for _ in range(10):
        r = geometry.random_rotation(rng)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert abs(np.linalg.det(r) - 1) < 1e-12


def test_least_squares_ray_intersection_of_rays_through_a_point():
    point = np.array([0.3, -0.2, 0.5])
    origins = np.array([[1.0, 0, 0], [0, 2.0, 1.0], [-1.0, -1.0, 3.0]])
    np.testing.assert_allclose(geometry.least_squares_ray_intersection(origins, point - origins), point, atol=1e-12)
