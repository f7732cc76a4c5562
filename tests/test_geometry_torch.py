"""core.geometry_torch: each function equals its core.geometry twin on the same random inputs.

Tolerances: float64 inputs must agree to 1e-10 (different summation orders only); float32 inputs
to float32 precision, stated per test (rtol 1e-5 for well-conditioned values; the iterated focal
estimate and Umeyama's SVD 1e-4 relative). Torch-only properties (dtype kept, gradients through
the parametrisations DUSt3R's aligner optimises) are tested here too.
"""
import numpy as np
import pytest
import torch

from core import geometry
from core import geometry_torch as gt


def _poses(rng, n, scale=1.0):
    return np.stack([geometry.sim3_matrix(scale, geometry.random_rotation(rng), rng.normal(size=3)) for _ in range(n)])


def test_as_4x4_equals_numpy_keeps_dtype_and_gradients():
    rng = np.random.default_rng(8)
    poses = _poses(rng, 3)
    top = torch.tensor(poses[:, :3], dtype=torch.float32, requires_grad=True)
    out = gt.as_4x4(top)
    assert out.dtype == torch.float32 and out.shape == (3, 4, 4)
    np.testing.assert_array_equal(out.detach().numpy(), geometry.as_4x4(top.detach().double().numpy()))
    out.sum().backward()  # the bottom row is constant: d(sum)/d(top) = 1 everywhere
    np.testing.assert_array_equal(top.grad.numpy(), np.ones((3, 3, 4)))
    full = torch.tensor(poses)
    assert gt.as_4x4(full) is full
    with pytest.raises(ValueError, match=r"\[\.\.\.,3,4\] or \[\.\.\.,4,4\]"):
        gt.as_4x4(torch.eye(3))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_transform_points_equals_numpy(dtype, tol):
    rng = np.random.default_rng(0)
    poses, points = _poses(rng, 3, 1.7), rng.normal(size=(3, 10, 3))
    out = gt.transform_points(torch.tensor(poses, dtype=dtype), torch.tensor(points, dtype=dtype))
    assert out.dtype == dtype
    np.testing.assert_allclose(out.numpy(), geometry.transform_points(poses, points), rtol=tol, atol=tol)
    single = gt.transform_points(torch.tensor(poses[0][:3], dtype=dtype), torch.tensor(points, dtype=dtype))
    np.testing.assert_allclose(single.numpy(), geometry.transform_points(poses[0], points), rtol=tol, atol=tol)
    one = gt.transform_points(torch.tensor(poses[1], dtype=dtype), torch.tensor(points[0, 0], dtype=dtype))
    assert one.shape == (3,)
    np.testing.assert_allclose(one.numpy(), geometry.transform_points(poses[1], points[0, 0]), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_invert_transform_equals_numpy(dtype, tol):
    rng = np.random.default_rng(1)
    poses = np.concatenate([_poses(rng, 2), _poses(rng, 2, 2.5)])
    out = gt.invert_transform(torch.tensor(poses, dtype=dtype))
    assert out.dtype == dtype and out.shape == (4, 4, 4)
    np.testing.assert_allclose(out.numpy(), geometry.invert_transform(poses), rtol=tol, atol=tol)
    np.testing.assert_allclose(gt.invert_transform(torch.tensor(poses[0][:3], dtype=dtype)).numpy(),
                               geometry.invert_transform(poses[0]), rtol=tol, atol=tol)


def test_sim3_matrix_equals_numpy_and_keeps_dtype():
    rng = np.random.default_rng(2)
    rotation, translation = geometry.random_rotation(rng), rng.normal(size=3)
    out = gt.sim3_matrix(torch.tensor(0.8, dtype=torch.float32), torch.tensor(rotation, dtype=torch.float32),
                         torch.tensor(translation, dtype=torch.float32))
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), geometry.sim3_matrix(0.8, rotation, translation), rtol=1e-6, atol=1e-6)


def test_pixel_grid_equals_numpy():
    out = gt.pixel_grid(5, 7, torch.float64)
    assert out.dtype == torch.float64 and out.shape == (5, 7, 2)
    np.testing.assert_array_equal(out.numpy(), geometry.pixel_grid(5, 7))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_umeyama_parts_equals_numpy_with_weights_and_noise(dtype, tol):
    rng = np.random.default_rng(3)
    truth = _poses(rng, 1, 1.9)[0]
    source = rng.normal(size=(6, 7, 3))
    target = geometry.transform_points(truth, source.reshape(-1, 3)).reshape(6, 7, 3) + rng.normal(0, 0.05, (6, 7, 3))
    weights = rng.uniform(0, 2, size=(6, 7))
    expected = geometry.umeyama_parts(source, target, weights)
    got = gt.umeyama_parts(*(torch.tensor(a, dtype=dtype) for a in (source, target, weights)))
    assert all(x.dtype == dtype for x in got)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a.numpy(), b, rtol=tol, atol=tol)
    rigid = gt.umeyama_parts(torch.tensor(source, dtype=dtype), torch.tensor(target, dtype=dtype), with_scale=False)
    expected_rigid = geometry.umeyama_parts(source, target, with_scale=False)
    assert float(rigid[0]) == 1.0
    np.testing.assert_allclose(rigid[1].numpy(), expected_rigid[1], rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="positive weight"):
        gt.umeyama_parts(torch.ones(5, 3), torch.ones(5, 3), torch.zeros(5))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_focal_from_point_map_equals_numpy(dtype, tol):
    rng = np.random.default_rng(4)
    h, w = 24, 32
    v, u = np.mgrid[:h, :w].astype(np.float64)
    z = rng.uniform(1, 3, size=(h, w))
    pp = geometry.dust3r_principal_point(h, w)
    points = np.stack([(u - pp[0]) * z / 41.0, (v - pp[1]) * z / 41.0, z], -1) + rng.normal(0, 0.01, (h, w, 3))
    mask = rng.uniform(size=(h, w)) > 0.3
    for m in (None, mask):
        expected = geometry.focal_from_point_map(points, pp, m, iterations=20)
        got = gt.focal_from_point_map(torch.tensor(points, dtype=dtype), pp,
                                      None if m is None else torch.from_numpy(m), iterations=20)
        assert abs(got - expected) / expected < tol and abs(expected - 41.0) < 1.0
    assert gt.focal_from_point_map(torch.tensor(points * [-1.0, -1.0, 1.0], dtype=dtype), pp) == 0.0
    assert np.isnan(gt.focal_from_point_map(torch.tensor(points, dtype=dtype), pp, torch.zeros(h, w, dtype=torch.bool)))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_quaternion_to_matrix_equals_numpy(dtype, tol):
    q = np.random.default_rng(5).normal(size=(2, 8, 4))
    out = gt.quaternion_to_matrix(torch.tensor(q, dtype=dtype))
    assert out.dtype == dtype and out.shape == (2, 8, 3, 3)
    np.testing.assert_allclose(out.numpy(), geometry.quaternion_to_matrix(q), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_matrix_to_quaternion_equals_numpy(dtype, tol):
    rng = np.random.default_rng(6)
    rotations = np.stack([geometry.random_rotation(rng) for _ in range(16)] + [np.diag([-1.0, -1, 1])])
    rotations_t = torch.tensor(rotations, dtype=dtype)
    out = gt.matrix_to_quaternion(rotations_t)
    assert out.dtype == dtype
    # float32: the rotation's entries are rounded first, so compare with numpy on the rounded matrix
    np.testing.assert_allclose(out.numpy(), geometry.matrix_to_quaternion(rotations_t.double().numpy()),
                               rtol=tol, atol=tol)


def test_gradients_flow_through_quaternions_and_transforms():
    """DUSt3R's aligner optimises quaternions and similarities: the chain must be differentiable
    and its gradient correct (finite differences, float64)."""
    rng = np.random.default_rng(7)
    q = torch.tensor(rng.normal(size=(2, 4)), requires_grad=True)
    t = torch.tensor(rng.normal(size=(2, 3)), requires_grad=True)
    points = torch.tensor(rng.normal(size=(2, 5, 3)))

    def moved(q, t):
        rotation = gt.quaternion_to_matrix(q)
        pose = torch.cat([torch.cat([rotation, t[:, :, None]], 2),
                          torch.tensor([[[0.0, 0, 0, 1]]], dtype=q.dtype).expand(2, 1, 4)], 1)
        return gt.transform_points(gt.invert_transform(pose), points)

    assert torch.autograd.gradcheck(moved, (q, t))
