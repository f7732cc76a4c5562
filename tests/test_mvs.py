"""CPU multi-view stereo (core.data.mvs): geometry helpers, one depth map, consistency, and the fused object's F-score.

The accuracy test runs the stereo with the sample's exact cameras (so it measures the stereo alone) on 14 of
the 42 views (every third) at a quarter of the resolution (120x160 depth maps, 64 planes), crops the object
with the automatic crop box (core.data.prepare.crop.propose_crop) and scores it with core.eval.metrics against the exact
ground-truth points.
"""
import numpy as np
import pytest

from core import geometry
from core.eval import metrics
from core.data import mvs
from core.data.prepare.crop import propose_crop
from core.data.scene import Reconstruction

VIEWS = list(range(0, 42, 3))


def _sparse_from_depths(scene, step=40):
    """Stand-in for COLMAP's sparse points: the exact depth maps unprojected on a coarse grid."""
    points = []
    for i in range(scene.num_views):
        k = geometry.resize_crop_intrinsics(scene.intrinsics[i], 1 / step)
        p, _ = geometry.unproject_depth(scene.depths[i][::step, ::step], k, scene.cam_from_world[i])
        points.append(p)
    return np.concatenate(points)


def test_select_sources_prefers_near_views_on_an_orbit(sample_scene):
    sources = mvs.select_sources(sample_scene.cam_from_world, 4, ideal_angle_deg=15.0)
    assert len(sources) == 42 and all(len(s) == 4 for s in sources)
    # views are 360/42 = 8.6 degrees apart: the best are the second neighbours (17 deg), then the first
    assert set(sources[10]) == {8, 9, 11, 12}


@pytest.fixture(scope="module")
def toy_subset(sample_scene):
    return sample_scene.subset(VIEWS)


def test_plane_sweep_depth_of_one_view_matches_the_exact_depth(toy_subset):
    import cv2

    scene = toy_subset
    options = mvs.MvsOptions(scale=0.25, num_depths=64)
    sparse = _sparse_from_depths(scene)
    grays = [mvs._gray(im, options.scale) for im in scene.images]
    ks = geometry.resize_crop_intrinsics(scene.intrinsics, options.scale)
    src = [1, 13, 2, 12]
    near, far = mvs.depth_range(sparse, scene.intrinsics[0], scene.cam_from_world[0], scene.image_size)
    depth, score = mvs.plane_sweep(grays[0], [grays[j] for j in src], ks[0], [ks[j] for j in src],
                                   scene.cam_from_world[0], [scene.cam_from_world[j] for j in src], near, far, options)
    h, w = depth.shape
    exact = cv2.resize(scene.depths[0], (w, h), interpolation=cv2.INTER_NEAREST)
    mask = cv2.resize(scene.masks[0].astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    good = mask & (score > options.min_ncc)
    assert good.sum() > 0.5 * mask.sum()
    relative = np.abs(depth[good] - exact[good]) / exact[good]
    assert np.median(relative) < 0.01


def test_consistency_rejects_a_wrong_depth_map(sample_scene):
    import cv2

    scene = sample_scene.subset([0, 1, 2, 3])
    scale = 0.25
    h, w = int(640 * scale), int(480 * scale)
    depths = np.stack([cv2.resize(d, (w, h), interpolation=cv2.INTER_NEAREST) for d in scene.depths[:4]])
    poses, ks = scene.cam_from_world[:4], geometry.resize_crop_intrinsics(scene.intrinsics[:4], scale)
    sources = [[1], [0, 2], [1, 3], [2]]
    options = mvs.MvsOptions(consistency_px=1.0, consistency_depth=0.01)
    counts, _ = mvs.consistency_counts(depths, ks, poses, sources, options)
    masks = np.stack([cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
                      for m in scene.masks]).astype(bool)
    # exact depths agree with both neighbours on most object pixels
    assert (counts[1][masks[1]] == 2).mean() > 0.6
    wrong = depths.copy()
    wrong[2] *= 1.1
    counts, _ = mvs.consistency_counts(wrong, ks, poses, sources, options)
    assert (counts[2] > 0).mean() < 0.02 and (counts[3] > 0).mean() < 0.02
    assert (counts[1][masks[1]] == 1).mean() > 0.6  # view 1 now agrees with view 0 only


def test_run_mvs_needs_two_registered_views(toy_subset):
    poses = toy_subset.cam_from_world.copy()
    poses[1:] = np.nan
    with pytest.raises(mvs.MvsError, match="at least 2 registered views"):
        mvs.run_mvs(toy_subset.images, toy_subset.intrinsics, poses, np.zeros((100, 3)))


def test_fused_object_cloud_fscore_on_the_sample(sample_scene, toy_subset):
    options = mvs.MvsOptions(scale=0.25, num_depths=64)
    result = mvs.run_mvs(toy_subset.images, toy_subset.intrinsics, toy_subset.cam_from_world,
                         _sparse_from_depths(toy_subset), options)
    assert result.depths.shape == (len(VIEWS), 160, 120)
    assert len(result.points) == len(result.colors) == len(result.source_view) > 5000
    crop = propose_crop(toy_subset.cam_from_world, result.points)
    inside = crop.contains(result.points)
    recon = Reconstruction(method="cpu-mvs", points=result.points[inside], colors=result.colors[inside],
                           cam_from_world=toy_subset.cam_from_world, intrinsics=toy_subset.intrinsics,
                           view_ids=VIEWS)
    scores = metrics.evaluate(sample_scene, recon).scores
    print(f"CPU MVS object cloud (14 views, 120x160): F@0.02={scores['fscore']['0.02']:.3f} "
          f"accuracy={scores['accuracy']:.4f} completeness={scores['completeness']:.4f} (normalised units)")
    assert scores["fscore"]["0.02"] >= 0.8


def test_coarse_to_fine_in_the_object_box_lies_on_the_exact_surface(sample_scene, toy_subset):
    """Sweep at 1/8 of the size (60x80), refine at 1/4 (120x160), only inside the object's box (the
    exact points' bounding box grown 1 cm, its floor 5 mm above the table).

    Tolerances in units of the footprint of one fine depth-map pixel seen from the median camera
    distance (``distance / focal``, ~5.6 mm), plus half the spacing of the ground-truth samples (the
    nearest-sample distance overestimates the distance to the surface by up to that): half the points
    within 0.75 footprint, 85 % within two. The fine level is what makes it: the sweep alone at 1/8
    has a median error at least 1.2 times larger.
    """
    from scipy.spatial import cKDTree

    from core.data.prepare.crop import CropBox

    scene = toy_subset
    gt = sample_scene.gt_points.astype(np.float64)
    lo, hi = gt.min(axis=0) - 0.01, gt.max(axis=0) + 0.01
    lo[2] = 0.005
    box = CropBox((lo + hi) / 2, np.eye(3), (hi - lo) / 2)
    sparse = _sparse_from_depths(scene)
    fine = mvs.run_mvs(scene.images, scene.intrinsics, scene.cam_from_world, sparse,
                       mvs.MvsOptions(scale=0.125, fine_scale=0.25, num_depths=48), region=box)
    assert fine.depths.shape == (len(VIEWS), 160, 120)
    assert len(fine.points) > 3000 and box.contains(fine.points).all()
    tree = cKDTree(gt)
    half_spacing = float(np.median(tree.query(gt[:2000], k=2)[0][:, 1])) / 2
    centres = geometry.camera_center(scene.cam_from_world)
    distance = float(np.median(np.linalg.norm(centres - gt.mean(axis=0), axis=1)))
    footprint = distance / (scene.intrinsics[0, 0, 0] * 0.25)
    errors = tree.query(fine.points)[0]
    assert np.median(errors) < 0.75 * footprint + half_spacing
    assert np.mean(errors < 2 * footprint + half_spacing) > 0.85
    coarse = mvs.run_mvs(scene.images, scene.intrinsics, scene.cam_from_world, sparse,
                         mvs.MvsOptions(scale=0.125, num_depths=48), region=box)
    assert np.median(tree.query(coarse.points)[0]) > 1.2 * np.median(errors)


def test_dense_settings_grow_in_resolution_and_refuse_unknown_names():
    size = (640, 480)
    fast, balanced, best = (mvs.options_for_setting(s, size) for s in ("fast", "balanced", "best"))
    assert fast.fine_scale == 0 and fast.map_scale == 256 / 640
    assert balanced.scale == fast.scale and balanced.map_scale == 512 / 640
    assert best.map_scale == 1.0 and best.num_sources > balanced.num_sources  # never above full size
    assert mvs.options_for_setting("balanced", size, max_size=128).map_scale == 128 / 640
    with pytest.raises(mvs.MvsError, match="unknown dense setting 'huge'"):
        mvs.options_for_setting("huge", size)
