"""Combined pipeline: each stage alone (tiny random models), the depth fit, the back-projection,
the whole pipeline through the run cache, bad input, weights resolution and mask saving."""
from __future__ import annotations

import numpy as np
import pytest

from core import geometry
from core.eval import metrics
from core.models.combined import depth_fit, projection, tiny
from core.models.combined.pipeline import StageError, Stages, ViewSettings, run_view, unpack_mask

VIEW = 0


@pytest.fixture(scope="module")
def stages():
    from core.models.combined import tiny_depth_estimator, tiny_detector, tiny_segmenter

    return Stages(tiny_detector(0), tiny_segmenter(0), tiny_depth_estimator(0))


@pytest.fixture()
def registered(monkeypatch):
    from core.models import registry

    monkeypatch.setitem(registry.METHOD_MODULES, "combined", "core.models.combined.method")
    return registry


# ----------------------------------------------------------------------------- stages alone
def test_detector_from_temp_vocab_file(tmp_path, sample_scene):
    """A tokenizer built from a vocab file drives a tiny Grounding DINO; threshold 0 forces boxes."""
    import torch
    from transformers import GroundingDinoForObjectDetection

    from core.models.combined.detection import Detector

    vocab = tiny.write_vocabulary(tmp_path / "vocab.txt", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "toy", "."])
    tokenizer = tiny.tokenizer_from_vocab_file(vocab)
    assert tokenizer("toy.").input_ids == [2, 5, 6, 3]
    torch.manual_seed(1)
    config = tiny.tiny_grounding_dino_config(len(tokenizer))
    assert config.decoder_layers >= 2
    detector = Detector(GroundingDinoForObjectDetection(config), tiny.tiny_grounding_dino_processor(tokenizer))
    image = sample_scene.images[VIEW]
    h, w = image.shape[:2]
    found = detector.detect(image, "Toy", box_threshold=0.0, text_threshold=0.0)
    assert found.prompt == "toy."
    assert len(found) == config.num_queries and found.boxes.shape == (config.num_queries, 4)
    assert np.all(np.diff(found.scores) <= 0)                      # best first
    assert np.all(found.boxes[:, [0, 2]] <= w - 1) and np.all(found.boxes[:, [1, 3]] <= h - 1)
    assert found.choose() == 0 and found.choose(3) == 3
    none = detector.detect(image, "toy", box_threshold=1.01, text_threshold=0.0)
    with pytest.raises(ValueError, match="no box detected"):
        none.choose()
    with pytest.raises(ValueError, match="prompt is empty"):
        detector.detect(image, "  . ")


def test_segmenter_and_depth_alone(stages, sample_scene):
    image = sample_scene.images[VIEW]
    h, w = image.shape[:2]
    box = np.array([100, 150, 380, 500], dtype=np.float32)
    seg = stages.segmenter.segment(image, box)
    assert seg.mask.shape == (h, w) and seg.mask.dtype == bool
    assert seg.scores.shape == (3,) and seg.score == pytest.approx(seg.scores.max())
    assert seg.point == pytest.approx((240.0, 325.0))               # default: the box centre
    assert stages.segmenter.sam.image_encoder.img_size == 128       # the package's own classes, small
    disparity = stages.depth.predict(image)
    assert disparity.shape == (h, w) and disparity.dtype == np.float32
    assert np.all(disparity >= 0) and disparity.std() > 0


# ----------------------------------------------------------------------------- depth fit
def test_fit_recovers_known_scale_and_shift(sample_scene):
    """Exact depth -> inverse depth -> disparity with a known affine map, noise and 5 % outliers."""
    z = sample_scene.depths[VIEW].astype(np.float64)
    scale, shift = 0.8, 0.15                                         # 1/z = scale * d + shift
    rng = np.random.default_rng(0)
    d = (1.0 / z - shift) / scale
    d = d + rng.normal(0, 0.01 * d.std(), size=d.shape)
    outliers = rng.random(d.shape) < 0.05
    d[outliers] = rng.uniform(d.min(), d.max(), size=outliers.sum())
    fit = depth_fit.fit_inverse_depth(d, z)
    assert fit.scale == pytest.approx(scale, rel=0.01)
    assert fit.shift == pytest.approx(shift, rel=0.01)
    assert fit.median_rel_error < 0.01
    depth = depth_fit.disparity_to_depth(d, fit.scale, fit.shift)
    assert np.median(np.abs(depth[~outliers] - z[~outliers]) / z[~outliers]) < 0.01


def test_fit_refuses_too_few_samples():
    with pytest.raises(depth_fit.NoDepthReference, match="reference depth samples"):
        depth_fit.fit_inverse_depth(np.ones((10, 10)), np.zeros((10, 10)))


def test_scene_points_reference_sees_the_near_side(sample_scene):
    """The z-buffered points of the ground-truth cloud agree with the exact depth map where they land."""
    ref = depth_fit.scene_points_reference(sample_scene, VIEW)
    assert ref is not None and ref.samples > 1000
    hit = ref.depth > 0
    rel = np.abs(ref.depth[hit] - sample_scene.depths[VIEW][hit]) / sample_scene.depths[VIEW][hit]
    assert np.median(rel) < 0.01 and np.mean(rel < 0.05) > 0.9


def test_colmap_sparse_points_seen_in_the_view(sample_scene, tmp_path):
    """Points of a COLMAP text model observed by the view are its reference; others are not used."""
    scene = sample_scene.subset([VIEW, 1])
    scene.path = tmp_path
    rng = np.random.default_rng(0)
    rows, cols = np.nonzero(scene.masks[0])
    pick = rng.choice(len(rows), 40, replace=False)
    pixels = np.zeros(scene.image_size, bool)
    pixels[rows[pick], cols[pick]] = True
    seen, _ = geometry.unproject_depth(scene.depths[0], scene.intrinsics[0], scene.cam_from_world[0], pixels)
    other = seen + 0.5                                                        # observed by the other image only
    folder = tmp_path / "sparse" / "0"
    folder.mkdir(parents=True)
    k = scene.intrinsics[0]
    (folder / "cameras.txt").write_text(f"1 PINHOLE {scene.image_size[1]} {scene.image_size[0]} "
                                        f"{k[0, 0]} {k[1, 1]} {k[0, 2]} {k[1, 2]}\n")
    obs0 = " ".join(f"{c + 0.5} {r + 0.5} {i + 1}" for i, (r, c) in enumerate(zip(rows[pick], cols[pick])))
    obs1 = " ".join(f"0 0 {i + 41}" for i in range(40))
    (folder / "images.txt").write_text(f"1 1 0 0 0 0 0 0 1 {scene.image_names[0]}\n{obs0}\n"
                                       f"2 1 0 0 0 0 0 0 1 {scene.image_names[1]}\n{obs1}\n")
    lines = [f"{i + 1} {x} {y} {z} 255 255 255 0.5 1 {i}" for i, (x, y, z) in enumerate(seen)]
    lines += [f"{i + 41} {x} {y} {z} 255 255 255 0.5 2 {i}" for i, (x, y, z) in enumerate(other)]
    (folder / "points3D.txt").write_text("\n".join(lines) + "\n")
    ref = depth_fit.find_reference(scene, 0, "colmap sparse")
    assert ref.kind == "colmap sparse" and ref.samples == 40
    hit = ref.depth > 0
    assert np.array_equal(hit, pixels)
    assert np.allclose(ref.depth[hit], scene.depths[0][hit], rtol=1e-5)
    scene.depths = None
    assert depth_fit.find_reference(scene, 0, "auto").kind == "colmap sparse"


def test_stored_vggt_run_is_a_reference_and_a_camera(stages, sample_scene, isolated_cache):
    """A stored VGGT run (network pixels = half the original, its own scale x2) serves depth and intrinsics."""
    from core.store.cache import RunStore
    from core.data.scene import Reconstruction

    h, w = sample_scene.image_size
    net_depth = 2.0 * sample_scene.depths[[VIEW, 1], ::2, ::2]             # VGGT's frame: twice the scale
    k = sample_scene.intrinsics[[VIEW, 1]].copy()
    transform = {"original_hw": [h, w], "scale": [0.5, 0.5], "offset": [0.0, 0.0], "network_hw": [h // 2, w // 2]}
    fake = Reconstruction(method="vggt", points=np.zeros((10, 3)), view_ids=[VIEW, 1], depth_maps=net_depth,
                          intrinsics=k, cam_from_world=np.stack([np.eye(4)] * 2),
                          extra={"transforms": [transform, transform]})
    RunStore().save(sample_scene.name, "fakevggt0000", fake)
    ref = depth_fit.find_reference(sample_scene, VIEW, "vggt")
    assert ref.frame == "vggt:fakevggt0000" and "VGGT" in ref.label
    rel = np.abs(ref.depth - 2 * sample_scene.depths[VIEW]) / (2 * sample_scene.depths[VIEW])
    assert ref.depth.shape == (h, w) and np.median(rel) < 0.01
    settings = ViewSettings(box_threshold=0.0, text_threshold=0.0, depth_reference="vggt", camera="vggt")
    result = run_view(sample_scene, VIEW, stages, settings, vggt_run=depth_fit.stored_vggt_run(sample_scene, VIEW))
    assert "VGGT's intrinsics" in result.intrinsics_label and np.allclose(result.intrinsics, k[0])
    assert result.reference.startswith("VGGT's depth") and result.fit.samples >= 20


# ----------------------------------------------------------------------------- back-projection
def test_backprojection_reproduces_ground_truth_surface(sample_scene):
    """Exact depth + exact intrinsics + object mask -> the object's visible surface (Chamfer < 1e-3).

    The reference surface is computed independently: rays through the same masked pixels cast
    (open3d) against the ground-truth mesh; both clouds in core.eval.metrics' normalised frame.
    """
    import open3d as o3d

    depth, mask = sample_scene.depths[VIEW], sample_scene.masks[VIEW]
    k, pose = sample_scene.intrinsics[VIEW], sample_scene.cam_from_world[VIEW]
    points, colors, pixels = projection.backproject(depth, mask, k, sample_scene.images[VIEW])
    assert points.shape == (int(mask.sum()), 3) and colors.shape == points.shape
    assert mask[pixels[:, 0], pixels[:, 1]].all()
    assert np.array_equal(colors, sample_scene.images[VIEW][mask])
    world = geometry.transform_points(geometry.invert_transform(pose), points.astype(np.float64))
    normalize = metrics.normalization_transform(sample_scene.gt_points)
    pred = geometry.transform_points(normalize, world)

    rows, cols = np.nonzero(mask)
    directions_cam = np.stack([cols, rows, np.ones_like(cols)], 1).astype(np.float64) @ np.linalg.inv(k).T
    world_from_cam = geometry.invert_transform(pose)
    directions = directions_cam @ world_from_cam[:3, :3].T
    origin = np.broadcast_to(world_from_cam[:3, 3], directions.shape)
    mesh = o3d.t.geometry.RaycastingScene()
    mesh.add_triangles(o3d.core.Tensor(sample_scene.mesh_vertices.astype(np.float32)),
                       o3d.core.Tensor(sample_scene.mesh_faces.astype(np.uint32)))
    rays = np.concatenate([origin, directions], axis=1).astype(np.float32)
    t_hit = mesh.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy().astype(np.float64)
    hit = np.isfinite(t_hit)
    assert hit.mean() > 0.99
    surface = origin[hit] + t_hit[hit, None] * directions[hit]
    chamfer = metrics.chamfer_distance(pred, geometry.transform_points(normalize, surface))
    assert chamfer < 1e-3


def test_erosion_and_fov_guess(sample_scene):
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:15, 5:25] = True
    eroded = projection.erode_mask(mask, 2)
    assert eroded.sum() == 6 * 16 and not (eroded & ~mask).any()
    k, label = projection.view_intrinsics(sample_scene, VIEW, "fov guess", fov_deg=60.0)
    h, w = sample_scene.image_size
    assert k[0, 0] == pytest.approx(0.5 * w / np.tan(np.radians(30)))
    assert "default guess" in label


# ----------------------------------------------------------------------------- whole pipeline
def test_pipeline_end_to_end_through_cache(sample_scene, isolated_cache, registered):
    from core.store.cache import RunStore
    from core.models.combined import method as combined
    from core.runner import RANDOM_NOTE, leaderboard, run_method

    options = combined.CombinedOptions(weights="random-tiny", box_threshold=0.0, text_threshold=0.0, erode_px=3)
    store = RunStore()
    result = run_method(sample_scene, "combined", [VIEW], options, store=store, score_random_weights=False)
    recon = result.recon
    h, w = sample_scene.image_size
    assert not result.cached and recon.method == "combined"
    assert recon.points.shape[1] == 3 and len(recon.points) > 100
    assert recon.colors.shape == recon.points.shape and recon.depth_maps.shape == (1, h, w)
    assert recon.cam_from_world.shape == (1, 4, 4) and np.allclose(recon.cam_from_world[0], np.eye(4))
    assert np.allclose(recon.intrinsics[0], sample_scene.intrinsics[VIEW])
    assert recon.notes[0] == RANDOM_NOTE and recon.weights_kind == "random-tiny"
    summary = recon.extra["views"][0]
    assert summary["reference"] == "the scene's depth map" and summary["fit"]["samples"] >= 20
    assert set(recon.extra["stage_seconds"]) == {"detection", "segmentation", "depth", "back-projection"}
    # every point re-projects into the (eroded) SAM mask, at the fitted depth
    mask = unpack_mask(summary["segmentation"]["mask"], (h, w))
    eroded = projection.erode_mask(mask, 3)
    uv, z = geometry.project(recon.points.astype(np.float64), recon.intrinsics[0], np.eye(4))
    col, row = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    assert eroded[row, col].all()
    assert np.allclose(z, recon.depth_maps[0][row, col], rtol=1e-4)
    assert eroded.sum() == len(recon.points) or eroded.sum() > len(recon.points)  # invalid depths dropped
    # cached and on the leaderboard, unscored: random weights (the Metrics page scores it on request)
    again = run_method(sample_scene, "combined", [VIEW], options, store=store, score_random_weights=False)
    assert again.cached and again.key == result.key and again.evaluation is None
    rows = [r for r in leaderboard(store, sample_scene.name) if r["method"] == "combined"]
    assert len(rows) == 1 and rows[0]["chamfer"] is None and rows[0]["weights"] == "random-tiny"
    assert "random weights" in rows[0]["notes"]


def test_two_views_fuse_with_scene_poses(stages, sample_scene):
    """With the exact depth as reference, fused points from two views lie on the ground truth."""
    from core.models.combined import method as combined
    from core.progress import silent

    options = combined.CombinedOptions(weights="random-tiny", box_threshold=0.0, text_threshold=0.0)
    recon = combined.METHOD.predict(stages, sample_scene, [0, 5], options, silent(), "cpu")
    assert set(np.unique(recon.source_view)) == {0, 1}
    expected = sample_scene.cam_from_world[5] @ np.linalg.inv(sample_scene.cam_from_world[0])
    assert np.allclose(recon.cam_from_world[1], expected)


# ----------------------------------------------------------------------------- bad input
def test_prompt_that_detects_nothing(stages, sample_scene):
    with pytest.raises(StageError, match="no box detected") as error:
        run_view(sample_scene, VIEW, stages, ViewSettings(prompt="toy", box_threshold=1.01))
    assert error.value.stage == "detection" and error.value.partial.detections is not None
    assert error.value.partial.segmentation is None


def test_empty_mask_keeps_the_detection(stages, sample_scene):
    from core.models.combined.segmentation import Segmentation

    class EmptySam:
        def segment(self, image, box, point=None, use_point=True):
            return Segmentation(np.zeros(image.shape[:2], bool), 0.1, np.zeros(3, np.float32), box, None)

    broken = Stages(stages.detector, EmptySam(), stages.depth)
    with pytest.raises(StageError, match="empty mask") as error:
        run_view(sample_scene, VIEW, broken, ViewSettings(box_threshold=0.0, text_threshold=0.0))
    assert error.value.stage == "segmentation" and error.value.partial.box is not None


def test_view_without_depth_reference(stages, sample_scene, isolated_cache):
    bare = sample_scene.subset([VIEW])
    bare.depths, bare.gt_points = None, None
    settings = ViewSettings(box_threshold=0.0, text_threshold=0.0)
    with pytest.raises(StageError, match="no depth reference") as error:
        run_view(bare, 0, stages, settings)
    partial = error.value.partial
    assert error.value.stage == "depth" and partial.mask is not None and partial.disparity is not None
    settings.depth_reference = "none (relative depth)"
    result = run_view(bare, 0, stages, settings)
    assert result.depth_mode == "relative" and "relative" in result.reference and len(result.points) > 0


# ----------------------------------------------------------------------------- weights
def test_pretrained_needs_weights_and_names_the_fetch(tmp_path, monkeypatch):
    from core.models.combined import method as combined
    from core.models.weights import registered

    monkeypatch.setenv("RECONBENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    available = combined.METHOD.availability(combined.METHOD.parse_options({}))
    assert not available.ok
    assert available.fix_command == "python -m core weights fetch grounding-dino depth-anything sam"
    assert combined.METHOD.availability(combined.METHOD.parse_options({"weights": "random-tiny"})).ok
    fetch_keys = {c.fetch_key for c in registered().values()}
    assert {"grounding-dino", "sam", "depth-anything"} <= fetch_keys
    assert registered()["sam-vit-b"].url.endswith("sam_vit_b_01ec64.pth")


def test_pretrained_loading_reads_a_local_snapshot(tmp_path, monkeypatch, sample_scene):
    """A snapshot in $RECONBENCH_WEIGHTS/<key>/ loads through the real from_pretrained path."""
    import torch
    from transformers import DepthAnythingForDepthEstimation

    from core.models.combined import checkpoints, depth

    monkeypatch.setenv("RECONBENCH_WEIGHTS", str(tmp_path))
    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(tiny.tiny_depth_anything_config())
    folder = tmp_path / "depth-anything-v2-small"
    model.save_pretrained(folder)
    tiny.tiny_depth_processor().save_pretrained(folder)
    assert checkpoints.model_folder(checkpoints.DEPTH_MODELS["depth-anything-v2-small"]) == folder
    loaded = depth.load_depth_estimator("depth-anything-v2-small")
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor)
    assert loaded.predict(sample_scene.images[VIEW]).shape == sample_scene.image_size


def test_weights_fetch_cli_names_every_file_of_the_default_models(registered, monkeypatch, capsys):
    """``python -m core weights fetch grounding-dino sam depth-anything`` downloads what from_pretrained needs."""
    from core.__main__ import main
    from core.models import weights
    from core.models.combined import checkpoints

    fetched = []
    monkeypatch.setattr(registered, "METHOD_MODULES", {"combined": "core.models.combined.method"})
    monkeypatch.setattr(weights, "fetch", lambda checkpoint: fetched.append(checkpoint) or checkpoint.filename)
    assert main(["weights", "fetch", "grounding-dino", "sam", "depth-anything"]) == 0
    got = {(c.repo_id or c.url, c.filename) for c in fetched}
    dino = checkpoints.DETECTORS["grounding-dino-tiny"]
    depth = checkpoints.DEPTH_MODELS["depth-anything-v2-small"]
    assert got == ({(dino.repo_id, f) for f in dino.files} | {(depth.repo_id, f) for f in depth.files}
                   | {(checkpoints.SEGMENTERS["sam-vit-b"][1].url, "sam_vit_b_01ec64.pth")})
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"} <= set(dino.files)


# ----------------------------------------------------------------------------- masks into a scene
def test_masks_saved_as_derived_copy_never_into_the_sample(sample_scene, isolated_cache):
    """A bundled scene gets a derived copy (4 views here, to stay fast); an app scene is updated in place."""
    from core.models.combined import scene_masks
    from tests.conftest import SAMPLE

    before = {p: p.stat().st_mtime for p in SAMPLE.rglob("*") if p.is_file()}
    small = sample_scene.subset([0, 1, 2, 3])
    assert small.path == SAMPLE and not scene_masks.is_app_scene(small)
    h, w = small.image_size
    mask = np.zeros((h, w), dtype=bool)
    mask[100:200, 50:150] = True
    saved = scene_masks.save_masks(small, {3: mask})
    assert saved.name == "toy-masks" and scene_masks.is_app_scene(saved)
    assert saved.path == isolated_cache / "scenes" / "toy-masks"
    assert np.array_equal(saved.masks[3], mask)
    assert np.array_equal(saved.masks[2], small.masks[2])                    # other views kept
    assert all(np.array_equal(a, b) for a, b in zip(saved.images, small.images))
    assert np.allclose(saved.depths, small.depths, atol=1e-4)
    assert {p: p.stat().st_mtime for p in SAMPLE.rglob("*") if p.is_file()} == before
    again = scene_masks.save_masks(saved, {2: mask})                         # app scene: in place
    assert again.path == saved.path and again.name == "toy-masks" and np.array_equal(again.masks[2], mask)
    assert np.array_equal(again.masks[3], mask)
    assert again.provenance["object_masks"]["views"] == [2, 3]
