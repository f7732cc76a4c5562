"""CO3Dv2 import: a tiny category written here in the official layout, rendered with PyTorch3D's rules.

The test scene: two spheres (an off-centre object, so mirrored cameras show), seen by cameras on
an orbit with roll. Annotations are written the way CO3D stores them: PyTorch3D ``R`` (row
vectors) and ``T``, NDC focal length and principal point (``ndc_isotropic``, or the older
``ndc_norm_image_bounds``), depth PNGs holding float16 bits with a ``scale_adjustment``, 8-bit
mask PNGs, 1-bit depth masks and ``pointcloud.ply``. Masks and depths are ray-cast with
PyTorch3D's conventions (NDC +x left, +y up, pixel centres half a pixel inside the edges), so
the importer's OpenCV cameras are checked against an independent rendering, and each
convention has a test that the other way round would fail.
"""
from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from core import geometry
from core.data.datasets import co3d
from core.data.importers import ply_bytes
from core.data.scene import Scene

F = np.diag([-1.0, -1.0, 1.0])
OBJECT = np.array([1.5, -1.0, 0.7])  # away from the world origin, as in CO3D's COLMAP frames
SPHERES = ((tuple(OBJECT), 0.5), (tuple(OBJECT + [0.45, 0.2, 0.35]), 0.25))
SCALE_ADJUSTMENT = 0.8


# ----------------------------------------------------------------------------- writing a CO3D root
def opencv_cameras(count: int, height: int, width: int, seed: int = 0):
    """Ground-truth OpenCV cameras: an orbit with roll, off-centre principal point, fx != fy."""
    rng = np.random.default_rng(seed)
    cams, ks = [], []
    for i in range(count):
        angle = 2 * np.pi * i / count + 0.3
        eye = OBJECT + [5.0 * np.cos(angle), 5.0 * np.sin(angle), 1.2 + 0.5 * np.sin(2 * angle)]
        pose = geometry.look_at(eye, OBJECT + [0.5, -0.5, 0.4])  # the object off the image centre
        roll = np.radians(rng.uniform(-25, 25))
        c, s = np.cos(roll), np.sin(roll)
        pose[:3, :] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ pose[:3, :]
        cams.append(pose)
        f = 1.3 * min(height, width)
        ks.append(np.array([[f, 0, width / 2 + 3.3], [0, 1.05 * f, height / 2 - 2.1], [0, 0, 1]]))
    return np.stack(ks), np.stack(cams)


def to_pytorch3d(k: np.ndarray, cam: np.ndarray, height: int, width: int, fmt: str = "ndc_isotropic") -> dict:
    """CO3D's viewpoint annotation of an OpenCV camera (the inverse conversion, written out here)."""
    rotation = cam[:3, :3].T @ F  # x_view = x_world @ R + T, view axes +X left, +Y up
    translation = F @ cam[:3, 3]
    if fmt == "ndc_isotropic":
        sx = sy = min(height, width) / 2
    else:
        sx, sy = width / 2, height / 2
    # pixel centre c (ReconBench) = c + 0.5 from the image edge; NDC +x points left
    px = (width / 2 - (k[0, 2] + 0.5)) / sx
    py = (height / 2 - (k[1, 2] + 0.5)) / sy
    return {"R": rotation.tolist(), "T": translation.tolist(), "focal_length": [k[0, 0] / sx, k[1, 1] / sy],
            "principal_point": [px, py], "intrinsics_format": fmt}


def render_pytorch3d(viewpoint: dict, height: int, width: int):
    """Ray-cast the spheres with PyTorch3D's camera model: ``(rgb, depth, mask, sphere id)``."""
    rotation, translation = np.array(viewpoint["R"]), np.array(viewpoint["T"])
    if viewpoint["intrinsics_format"] == "ndc_isotropic":
        sx = sy = min(height, width) / 2
    else:
        sx, sy = width / 2, height / 2
    (fx, fy), (px, py) = viewpoint["focal_length"], viewpoint["principal_point"]
    rows, cols = np.mgrid[0:height, 0:width]
    x_ndc = (width / 2 - (cols + 0.5)) / sx  # pixel centres are half a pixel inside the edges
    y_ndc = (height / 2 - (rows + 0.5)) / sy
    direction_view = np.stack([(x_ndc - px) / fx, (y_ndc - py) / fy, np.ones_like(x_ndc)], -1)
    direction = direction_view @ rotation.T  # row vectors: x_world = (x_view - T) @ R^T
    origin = -translation @ rotation.T
    best = np.full((height, width), np.inf)
    ids = np.full((height, width), -1)
    for index, (centre, radius) in enumerate(SPHERES):
        oc = origin - np.array(centre)
        a = np.sum(direction ** 2, -1)
        b = 2 * direction @ oc
        c = oc @ oc - radius ** 2
        disc = b ** 2 - 4 * a * c
        t = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
        hit = (t > 0) & (t < best)
        best[hit], ids[hit] = t[hit], index
    mask = ids >= 0
    depth = np.where(mask, best, 0.0)  # z-depth: the view-frame direction has z = 1
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[ids == 0] = (200, 60, 40)
    rgb[ids == 1] = (40, 90, 210)
    rgb[~mask] = (235, 235, 225)
    return rgb, depth, mask


def sphere_points(count: int, seed: int = 1) -> np.ndarray:
    """Points on the union's surface (each sphere's part outside the other)."""
    rng = np.random.default_rng(seed)
    out = []
    for index, (centre, radius) in enumerate(SPHERES):
        d = rng.normal(size=(count, 3))
        p = np.array(centre) + radius * d / np.linalg.norm(d, axis=1, keepdims=True)
        other_centre, other_radius = SPHERES[1 - index]
        out.append(p[np.linalg.norm(p - np.array(other_centre), axis=1) > other_radius])
    return np.concatenate(out)


def _png(array: np.ndarray) -> bytes:
    """PNG bytes; a bool array is written as a 1-bit PNG (like CO3D's depth masks)."""
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    assert array.dtype != bool or image.mode == "1"
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jgz(path: Path, entries: list) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        json.dump(entries, handle)


def write_sequence(root: Path, category: str, sequence: str, height: int, width: int, count: int,
                   fmt: str = "ndc_isotropic", seed: int = 0) -> dict:
    """Write one sequence's files; returns its frame and sequence annotations and the truth."""
    folder = root / category / sequence
    for sub in ("images", "masks", "depths", "depth_masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    ks, cams = opencv_cameras(count, height, width, seed)
    frames, truth = [], {"intrinsics": ks, "cam_from_world": cams, "masks": [], "depths": [], "numbers": []}
    for i in range(count):
        number = 2 * i + 1  # not contiguous, written out of order below
        stem = f"frame{number:06d}"
        viewpoint = to_pytorch3d(ks[i], cams[i], height, width, fmt)
        rgb, depth, mask = render_pytorch3d(viewpoint, height, width)
        Image.fromarray(rgb).save(folder / "images" / f"{stem}.jpg", quality=95)
        probability = np.where(mask, 255, 0).astype(np.uint8)
        probability[0, 0] = 140 if mask[0, 0] else 120  # soft values: > 0.5 is object, < 0.5 is not
        (folder / "masks" / f"{stem}.png").write_bytes(_png(probability))
        stored = (depth / SCALE_ADJUSTMENT).astype(np.float16)
        cv2.imwrite(str(folder / "depths" / f"{stem}.jpg.geometric.png"), stored.view(np.uint16))
        trusted = np.ones((height, width), bool)
        trusted[:, :3] = False  # CO3D's depth mask: depth not trusted in the first columns
        (folder / "depth_masks" / f"{stem}.png").write_bytes(_png(trusted))
        truth["masks"].append(mask)
        truth["depths"].append(np.where(trusted, stored.astype(np.float32) * np.float32(SCALE_ADJUSTMENT), 0))
        truth["numbers"].append(number)
        rel = f"{category}/{sequence}"
        frames.append({
            "sequence_name": sequence, "frame_number": number, "frame_timestamp": 0.1 * number,
            "image": {"path": f"{rel}/images/{stem}.jpg", "size": [height, width]},
            "depth": {"path": f"{rel}/depths/{stem}.jpg.geometric.png", "scale_adjustment": SCALE_ADJUSTMENT,
                      "mask_path": f"{rel}/depth_masks/{stem}.png"},
            "mask": {"path": f"{rel}/masks/{stem}.png", "mass": float(mask.sum())},
            "viewpoint": viewpoint, "meta": {}})
    points = sphere_points(400)
    (folder / "pointcloud.ply").write_bytes(ply_bytes(points, np.full((len(points), 3), 128, np.uint8)))
    truth["points"] = points
    sequence_annotation = {"sequence_name": sequence, "category": category,
                           "video": {"path": f"{category}/{sequence}/video.mp4", "length": 1.0},
                           "point_cloud": {"path": f"{category}/{sequence}/pointcloud.ply",
                                           "quality_score": 0.7, "n_points": len(points)},
                           "viewpoint_quality_score": 1.5}
    return {"frames": frames[::-1], "sequence": sequence_annotation, "truth": truth}


def write_co3d_root(root: Path, category: str = "teddybear", specs=None) -> dict:
    """A CO3D root with one category; ``specs``: {sequence: (H, W, frames[, format])}.

    Default: a portrait and a landscape sequence of 5 frames at 56x40 / 40x56.
    """
    specs = specs or {"101_1_1": (56, 40, 5), "102_2_2": (40, 56, 5)}
    written = {}
    for seed, (name, spec) in enumerate(specs.items()):
        written[name] = write_sequence(root, category, name, *spec[:3], fmt=spec[3] if len(spec) > 3 else
                                       "ndc_isotropic", seed=seed)
    _jgz(root / category / co3d.FRAME_ANNOTATIONS, [f for w in written.values() for f in w["frames"]])
    _jgz(root / category / co3d.SEQUENCE_ANNOTATIONS, [w["sequence"] for w in written.values()])
    return {name: w["truth"] for name, w in written.items()}


def on_mask_fraction(points: np.ndarray, intrinsics: np.ndarray, cams: np.ndarray, masks: np.ndarray) -> float:
    """Fraction of (point, view) projections that land on the object mask grown by one pixel (a point
    on the silhouette may round to the pixel just outside); points outside the image or behind the
    camera count as misses."""
    hits = total = 0
    h, w = masks.shape[1:]
    for k, cam, mask in zip(intrinsics, cams, masks):
        mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        uv, z = geometry.project(points, k, cam)
        ok = np.isfinite(uv).all(axis=1)
        col, row = np.round(uv[ok]).astype(int).T
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        hits += int(mask[row[inside], col[inside]].sum())
        total += len(points)
    return hits / max(total, 1)


@pytest.fixture(scope="module")
def co3d_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("co3d")
    return root, write_co3d_root(root)


# ----------------------------------------------------------------------------- acceptance
@pytest.mark.parametrize("sequence", ["101_1_1", "102_2_2"], ids=["portrait", "landscape"])
def test_imported_cameras_reproject_the_point_cloud_onto_the_masks(co3d_root, sequence):
    root, truth = co3d_root
    scene = co3d.read_sequence(root, "teddybear", sequence)
    t = truth[sequence]
    assert scene.image_size == ((56, 40) if sequence == "101_1_1" else (40, 56))
    # frames in frame_number order, original names
    assert scene.image_names == [f"frame{n:06d}.jpg" for n in t["numbers"]]
    assert scene.provenance["frame_numbers"] == t["numbers"]
    # cameras: rotation within 0.01 degrees, translation and intrinsics within 0.01 (px)
    rotation_error = geometry.rotation_angle_deg(t["cam_from_world"][:, :3, :3], scene.cam_from_world[:, :3, :3])
    assert rotation_error.max() < 0.01
    np.testing.assert_allclose(scene.cam_from_world[:, :3, 3], t["cam_from_world"][:, :3, 3], atol=1e-6)
    assert np.abs(scene.intrinsics - t["intrinsics"]).max() < 0.01
    # the point cloud lands on the masks rendered with PyTorch3D's rules
    np.testing.assert_array_equal(scene.masks, np.stack(t["masks"]))
    np.testing.assert_allclose(scene.gt_points, t["points"], atol=1e-6)
    assert on_mask_fraction(scene.gt_points, scene.intrinsics, scene.cam_from_world, scene.masks) > 0.99
    # depths: float16 bits x scale_adjustment, 0 outside the depth mask
    np.testing.assert_array_equal(scene.depths, np.stack(t["depths"]))
    assert (scene.depths[:, :, :3] == 0).all() and (scene.depths > 0).any()
    assert "arbitrary" in scene.provenance["units"] and "missing regions" in scene.provenance["ground_truth"]


def test_depths_unproject_onto_the_spheres(co3d_root):
    root, _ = co3d_root
    scene = co3d.read_sequence(root, "teddybear", "102_2_2")
    for depth, k, cam in zip(scene.depths, scene.intrinsics, scene.cam_from_world):
        points, _ = geometry.unproject_depth(depth, k, cam)
        distance = np.min([np.abs(np.linalg.norm(points - np.array(c), axis=1) - r) for c, r in SPHERES], axis=0)
        assert np.median(distance) < 2e-3  # float16 keeps ~3 digits of a depth near 3


def test_the_cli_writes_a_scene_folder_that_loads_back(co3d_root, tmp_path, capsys):
    from core.__main__ import main

    root, truth = co3d_root
    out = tmp_path / "scene"
    assert main(["datasets", "import", "co3d", "--root", str(root), "--sequence", "teddybear/101_1_1",
                 "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["views"] == 5 and summary["height"] == 56 and summary["width"] == 40
    scene = Scene.load(out)
    assert scene.name == "co3d-teddybear-101_1_1" and scene.provenance["category"] == "teddybear"
    np.testing.assert_allclose(scene.cam_from_world, truth["101_1_1"]["cam_from_world"], atol=1e-6)
    np.testing.assert_array_equal(scene.masks, np.stack(truth["101_1_1"]["masks"]))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_the_older_per_axis_ndc_format_is_read_per_axis(tmp_path):
    truth = write_co3d_root(tmp_path, "car", {"7_7_7": (40, 56, 3, "ndc_norm_image_bounds")})["7_7_7"]
    scene = co3d.read_sequence(tmp_path, "car", "7_7_7")
    assert np.abs(scene.intrinsics - truth["intrinsics"]).max() < 0.01
    assert on_mask_fraction(scene.gt_points, scene.intrinsics, scene.cam_from_world, scene.masks) > 0.99


# ----------------------------------------------------------------------------- each convention, the other way fails
def _fraction_with(scene, cams=None, intrinsics=None) -> float:
    return on_mask_fraction(scene.gt_points, scene.intrinsics if intrinsics is None else intrinsics,
                            scene.cam_from_world if cams is None else cams, scene.masks)


def _viewpoints(root: Path, sequence: str) -> list[dict]:
    category = co3d.load_category(root, "teddybear")
    return [entry["viewpoint"] for entry in category.frames[sequence]]


def test_R_acts_on_row_vectors_not_columns(co3d_root):
    root, _ = co3d_root
    scene = co3d.read_sequence(root, "teddybear", "101_1_1")
    wrong = np.stack([co3d.opencv_cam_from_world(np.array(v["R"]).T, v["T"]) for v in _viewpoints(root, "101_1_1")])
    assert _fraction_with(scene) > 0.99
    assert _fraction_with(scene, cams=wrong) < 0.7
    # the row-vector rule itself: x_view = x_world @ R + T, then +X left / +Y up -> OpenCV
    v = _viewpoints(root, "101_1_1")[0]
    x = np.array([0.3, -0.2, 0.1])
    expected = F @ (x @ np.array(v["R"]) + np.array(v["T"]))
    np.testing.assert_allclose(geometry.transform_points(co3d.opencv_cam_from_world(v["R"], v["T"]), x), expected)


def test_pytorch3d_x_left_y_up_axes_are_flipped(co3d_root):
    root, _ = co3d_root
    scene = co3d.read_sequence(root, "teddybear", "102_2_2")
    unflipped = []
    for v in _viewpoints(root, "102_2_2"):
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = np.array(v["R"]).T, v["T"]
        unflipped.append(pose)
    assert _fraction_with(scene, cams=np.stack(unflipped)) < 0.7
    assert _fraction_with(scene) > 0.99


def test_ndc_isotropic_uses_one_scale_from_the_short_side(co3d_root):
    root, truth = co3d_root
    scene = co3d.read_sequence(root, "teddybear", "102_2_2")  # 40 x 56: the axes' scales differ
    per_axis = np.stack([co3d.pixel_intrinsics(v["focal_length"], v["principal_point"], "ndc_norm_image_bounds",
                                               40, 56) for v in _viewpoints(root, "102_2_2")])
    assert np.abs(per_axis - truth["102_2_2"]["intrinsics"]).max() > 10
    assert _fraction_with(scene, intrinsics=per_axis) < 0.8
    assert np.abs(scene.intrinsics - truth["102_2_2"]["intrinsics"]).max() < 0.01


def test_ndc_counts_from_pixel_edges_so_centres_shift_half_a_pixel(co3d_root):
    root, truth = co3d_root
    v = _viewpoints(root, "101_1_1")[0]
    k = co3d.pixel_intrinsics(v["focal_length"], v["principal_point"], "ndc_isotropic", 56, 40)
    # PyTorch3D's screen transform (x_screen = W/2 - s x_ndc, pixel j spans [j, j+1]) of view points
    points_view = np.array([[0.1, -0.2, 3.0], [-0.3, 0.25, 2.5], [0.0, 0.0, 4.0]])
    s = 20.0
    x_ndc = v["focal_length"][0] * points_view[:, 0] / points_view[:, 2] + v["principal_point"][0]
    y_ndc = v["focal_length"][1] * points_view[:, 1] / points_view[:, 2] + v["principal_point"][1]
    screen = np.stack([40 / 2 - s * x_ndc, 56 / 2 - s * y_ndc], axis=1)
    uv, _ = geometry.project((points_view * [-1, -1, 1]), k, np.eye(4))  # OpenCV view = F p3d view
    np.testing.assert_allclose(uv, screen - 0.5, atol=1e-9)  # pixel centres at integers
    no_offset = k.copy()
    no_offset[:2, 2] += 0.5
    uv_wrong, _ = geometry.project(points_view * [-1, -1, 1], no_offset, np.eye(4))
    assert np.abs(uv_wrong - (screen - 0.5)).min() > 0.49


def test_depth_pngs_hold_float16_bits_not_integer_steps(tmp_path):
    depth = np.array([[2.5, 0.0], [3.25, 1.0]], np.float32)
    path = tmp_path / "d.png"
    cv2.imwrite(str(path), (depth / SCALE_ADJUSTMENT).astype(np.float16).view(np.uint16))
    read = co3d.read_depth(path, SCALE_ADJUSTMENT)
    np.testing.assert_allclose(read, depth, rtol=1e-3)
    words = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float32)
    assert (words[depth > 0] * SCALE_ADJUSTMENT > 100 * depth[depth > 0]).all()  # the uint16 value is nonsense


def test_mask_threshold_is_half_of_the_8_bit_range(tmp_path):
    path = tmp_path / "m.png"
    path.write_bytes(_png(np.array([[0, 127, 128, 255]], np.uint8)))
    np.testing.assert_array_equal(co3d.read_mask(path), [[False, False, True, True]])


# ----------------------------------------------------------------------------- bad input: one line, nothing written
def _import_error(capsys, *args) -> str:
    from core.__main__ import main

    assert main(["datasets", "import", "co3d", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_a_root_without_the_annotation_files_is_refused(tmp_path, capsys):
    (tmp_path / "root" / "teddybear" / "1_1_1" / "images").mkdir(parents=True)
    out = tmp_path / "out"
    err = _import_error(capsys, "--root", str(tmp_path / "root"), "--sequence", "teddybear/1_1_1", "--out", str(out))
    assert "frame_annotations.jgz" in err and not out.exists()
    err = _import_error(capsys, "--root", str(tmp_path / "nowhere"), "--sequence", "a/b", "--out", str(out))
    assert "no such CO3D root" in err and not out.exists()


def test_a_sequence_not_in_the_annotations_is_refused(co3d_root, tmp_path, capsys):
    root, _ = co3d_root
    out = tmp_path / "out"
    err = _import_error(capsys, "--root", str(root), "--sequence", "teddybear/999_9_9", "--out", str(out))
    assert "999_9_9" in err and "101_1_1" in err and not out.exists()
    err = _import_error(capsys, "--root", str(root), "--sequence", "teddybear", "--out", str(out))
    assert "CATEGORY/SEQUENCE" in err and not out.exists()


def test_cameras_that_do_not_match_the_images_are_refused(tmp_path, capsys):
    root = tmp_path / "root"
    write_co3d_root(root, specs={"5_5_5": (40, 56, 3)})
    images = root / "teddybear" / "5_5_5" / "images"
    (images / "frame000099.jpg").write_bytes((images / "frame000001.jpg").read_bytes())
    out = tmp_path / "out"
    err = _import_error(capsys, "--root", str(root), "--sequence", "teddybear/5_5_5", "--out", str(out))
    assert "cameras for 3 frames but 4 images" in err and not out.exists()
    (images / "frame000099.jpg").unlink()
    (images / "frame000003.jpg").unlink()
    err = _import_error(capsys, "--root", str(root), "--sequence", "teddybear/5_5_5", "--out", str(out))
    assert "image of frame 3 is missing" in err and not out.exists()


def test_an_existing_scene_folder_is_left_unchanged(co3d_root, tmp_path, capsys):
    root, _ = co3d_root
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    err = _import_error(capsys, "--root", str(root), "--sequence", "teddybear/101_1_1", "--out", str(out))
    assert "not empty" in err and [p.name for p in out.iterdir()] == ["keep.txt"]
