"""The bundled sample is what the generator makes, and its ground truth is exact."""
import io
from pathlib import Path

import numpy as np
from PIL import Image

from core import geometry
from core.data.synthetic import SAMPLE_DEPTH_SCALE, SAMPLE_JPEG_QUALITY, ToySceneSpec, render_toy_scene, toy_sdf
from tests.conftest import SAMPLE


def test_regenerating_views_gives_the_stored_values(sample_scene):
    views = [0, 13, 29]
    fresh = render_toy_scene(ToySceneSpec(), views=views)
    # float64 look-at poses: a different CPU's libm or an equivalent rewrite of the geometry moves them by a
    # few ulps (2e-16 measured); 1e-12 is far above that and far below anything that moves a pixel
    np.testing.assert_allclose(fresh.intrinsics, sample_scene.intrinsics[views], rtol=0, atol=1e-12)
    np.testing.assert_allclose(fresh.cam_from_world, sample_scene.cam_from_world[views], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(fresh.masks, sample_scene.masks[views])
    steps_fresh = np.round(fresh.depths.astype(np.float64) / SAMPLE_DEPTH_SCALE)
    steps_stored = np.round(sample_scene.depths[views].astype(np.float64) / SAMPLE_DEPTH_SCALE)
    assert np.abs(steps_fresh - steps_stored).max() <= 1
    np.testing.assert_array_equal(fresh.gt_points, sample_scene.gt_points)
    np.testing.assert_array_equal(fresh.mesh_faces, sample_scene.mesh_faces)
    for image, i in zip(fresh.images, views):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=SAMPLE_JPEG_QUALITY, subsampling=0)
        decoded = np.asarray(Image.open(buffer).convert("RGB")).astype(int)
        diff = np.abs(decoded - sample_scene.images[i].astype(int))
        assert diff.mean() < 0.5 and diff.max() <= 8  # identical unless the JPEG codec differs


def test_back_projected_depth_lands_on_the_mesh_and_agrees_across_views(sample_scene):
    import open3d as o3d

    mesh = o3d.t.geometry.TriangleMesh()
    mesh.vertex.positions = o3d.core.Tensor(sample_scene.mesh_vertices.astype(np.float32))
    mesh.triangle.indices = o3d.core.Tensor(sample_scene.mesh_faces.astype(np.int32))
    raycast = o3d.t.geometry.RaycastingScene()
    raycast.add_triangles(mesh)
    h, w = sample_scene.image_size
    for i, j in ((0, 3), (10, 12), (20, 25)):
        points, _ = geometry.unproject_depth(sample_scene.depths[i], sample_scene.intrinsics[i],
                                             sample_scene.cam_from_world[i], sample_scene.masks[i])
        distance = raycast.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()
        assert distance.max() < 2e-4  # depth quantisation (0.05 mm) + float32
        uv, z = geometry.project(points, sample_scene.intrinsics[j], sample_scene.cam_from_world[j])
        inside = (uv[:, 0] > 0) & (uv[:, 0] < w - 1) & (uv[:, 1] > 0) & (uv[:, 1] < h - 1)
        cols, rows = np.round(uv[inside]).astype(int).T
        depth_j = sample_scene.depths[j][rows, cols]
        visible = np.abs(depth_j - z[inside]) < 5e-3
        assert visible.mean() > 0.5  # most of the surface seen in i is seen in the neighbouring view j
        # a point visible in j lands on j's own back-projection of that pixel (the same surface point)
        pixel_points = geometry.depth_to_point_map(sample_scene.depths[j], sample_scene.intrinsics[j],
                                                   sample_scene.cam_from_world[j])[rows[visible], cols[visible]]
        gap = np.linalg.norm(pixel_points - points[inside][visible], axis=1)
        pixel_size = 1.0 * z[inside][visible] / sample_scene.intrinsics[j][0, 0]
        assert np.median(gap / pixel_size) < 0.5


def test_toy_is_a_figure_not_a_sphere(sample_scene):
    v = sample_scene.mesh_vertices
    extent = v.max(axis=0) - v.min(axis=0)
    assert extent[2] > 1.8 * extent[1]  # tall: body, head and ears stacked
    assert toy_sdf(np.array([[0.0, 0.0, 0.12]]))[0] < 0  # inside the body
    assert toy_sdf(np.array([[0.0, 0.01, 0.51]]))[0] > 0  # between the ears
    assert toy_sdf(np.array([[-0.05, 0.01, 0.48]]))[0] < 0  # inside the left ear


def test_sample_is_small():
    total = sum(p.stat().st_size for p in Path(SAMPLE).rglob("*") if p.is_file())
    assert total < 15 * 2**20
