"""DTU: the scan importer and the official evaluation, on a tiny scan the tests write in DTU's formats.

The scan: a sphere (radius 30 mm) standing above a table plane z = -20 mm, five cameras at about
250 mm, 56x40 rectified images rendered by ray-sphere intersection, ``pos_vvv.txt`` projection
matrices written from known K and poses (each at an arbitrary scale, one negative), the STL points
as a binary PLY (sphere + table points below the plane), ``ObsMask{N}_10.mat`` (the part x > 20 mm
unobserved) and ``Plane{N}.mat`` written with scipy.io.savemat.

Expected evaluation values are computed here independently: brute-force distance matrices with
numpy, the greedy thinning as a plain loop over a dense distance matrix, and the box, mask and plane
tests restated element by element.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from scipy.io import savemat

from core import geometry
from core.data.datasets import dtu as dtu_data
from core.data.scene import Scene
from core.errors import UserError
from core.eval.metrics import EvaluationError
from core.eval.protocols import dtu as dtu_eval

SCAN = 7
WIDTH, HEIGHT = 56, 40
CENTRE = np.array([5.0, -3.0, 10.0])
RADIUS = 30.0
PLANE = np.array([0.0, 0.0, 1.0, 20.0])  # z > -20 is the object's side
BB = np.array([[-40.0, -40.0, -30.0], [50.0, 40.0, 50.0]])
RES = 2.0
UNOBSERVED_X = 20.0  # the scanner saw nothing with x > 20 mm
VIEWS = [1, 2, 3, 4, 5]
SCALES = [1.0, 2.5, -0.7, 1e-3, 4.0]  # each pos file is lambda * K [R | t]


def intrinsics(view: int) -> np.ndarray:
    return np.array([[70.0 + view, 0.3 * view, 27.6 - 0.2 * view],
                     [0.0, 72.0 - 0.5 * view, 19.4 + 0.1 * view],
                     [0.0, 0.0, 1.0]])


def pose(view: int) -> np.ndarray:
    angle = 2 * np.pi * view / 7.0
    eye = CENTRE + 250.0 * np.array([np.cos(angle), np.sin(angle), 0.6]) / np.linalg.norm([1.0, 0.6])
    return geometry.look_at(eye, CENTRE + np.array([0.0, 0.0, 2.0 * view]))


def fibonacci_sphere(count: int) -> np.ndarray:
    i = np.arange(count) + 0.5
    polar = np.arccos(1 - 2 * i / count)
    azimuth = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1)


def stl_points() -> np.ndarray:
    """``float32 [M,3]``: 1200 sphere points and 200 table points below the plane (mm)."""
    rng = np.random.default_rng(3)
    sphere = CENTRE + RADIUS * fibonacci_sphere(1200)
    table = np.column_stack([rng.uniform(-35, 45, 200), rng.uniform(-35, 35, 200), np.full(200, -25.0)])
    return np.concatenate([sphere, table]).astype(np.float32)


def render(k: np.ndarray, cam_from_world: np.ndarray) -> np.ndarray:
    """``uint8 [H,W,3]``: the sphere (orange) on black, by ray-sphere intersection per pixel centre."""
    u, v = np.meshgrid(np.arange(WIDTH, dtype=np.float64), np.arange(HEIGHT, dtype=np.float64))
    rays_cam = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(k).T
    rotation, translation = cam_from_world[:3, :3], cam_from_world[:3, 3]
    rays = rays_cam @ rotation  # R^T d per pixel
    origin = -rotation.T @ translation
    oc = origin - CENTRE
    a = np.sum(rays * rays, axis=-1)
    b = 2 * rays @ oc
    c = oc @ oc - RADIUS ** 2
    hit = b * b - 4 * a * c >= 0
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[hit] = (230, 140, 60)
    return image


def ply_with_normals(points: np.ndarray) -> bytes:
    """Binary PLY like the STL files: x y z, nx ny nz (float32) and red green blue (uchar)."""
    fields = [(n, "<f4") for n in ("x", "y", "z", "nx", "ny", "nz")] + [(n, "u1") for n in ("red", "green", "blue")]
    rows = np.zeros(len(points), dtype=fields)
    rows["x"], rows["y"], rows["z"] = points.T
    normals = (points - CENTRE) / np.linalg.norm(points - CENTRE, axis=1, keepdims=True)
    rows["nx"], rows["ny"], rows["nz"] = normals.T
    rows["red"], rows["green"], rows["blue"] = 200, 100, 50
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(points)}"]
    header += [f"property float {n}" for n in ("x", "y", "z", "nx", "ny", "nz")]
    header += [f"property uchar {n}" for n in ("red", "green", "blue")] + ["end_header"]
    return ("\n".join(header) + "\n").encode() + rows.tobytes()


def obs_mask() -> np.ndarray:
    """``uint8 [X,Y,Z]``: voxel i covers BB0 + i*RES; observed where that x <= UNOBSERVED_X."""
    shape = tuple(int(n) for n in np.ceil((BB[1] - BB[0]) / RES).astype(int) + 1)
    mask = np.ones(shape, np.uint8)
    x = BB[0, 0] + RES * np.arange(shape[0])
    mask[x > UNOBSERVED_X] = 0
    return mask


def write_projection(path, matrix: np.ndarray) -> None:
    path.write_text("\n".join(" ".join(f"{value:.15e}" for value in row) for row in matrix) + "\n")


def write_scan(root, light: int = 3):
    """The tiny scan in DTU's layout under ``root``; returns ``root``."""
    images = root / "Rectified" / f"scan{SCAN}"
    calibration = root / "Calibration" / "cal18"
    for folder in (images, calibration, root / "Points" / "stl", root / "ObsMask"):
        folder.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    for view, scale in zip(VIEWS, SCALES):
        k, cam = intrinsics(view), pose(view)
        Image.fromarray(render(k, cam)).save(images / f"rect_{view:03d}_{light}_r5000.png")
        write_projection(calibration / f"pos_{view:03d}.txt", scale * k @ cam[:3])
    write_projection(calibration / "pos_049.txt", intrinsics(49) @ pose(49)[:3])  # a position this scan lacks
    (root / "Points" / "stl" / f"stl{SCAN:03d}_total.ply").write_bytes(ply_with_normals(stl_points()))
    savemat(root / "ObsMask" / f"ObsMask{SCAN}_10.mat", {"ObsMask": obs_mask(), "BB": BB, "Res": np.array([[RES]])})
    savemat(root / "ObsMask" / f"Plane{SCAN}.mat", {"P": PLANE.reshape(4, 1)})
    return root


@pytest.fixture(scope="module")
def scan_root(tmp_path_factory):
    return write_scan(tmp_path_factory.mktemp("dtu"))


@pytest.fixture(scope="module")
def imported(scan_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes") / "scan7"
    dtu_data.import_scan(scan_root, SCAN, out)
    return out


def eval_data() -> dtu_data.DtuEvalData:
    return dtu_data.DtuEvalData(scan=SCAN, obs_mask=obs_mask(), bb=BB.copy(), res=RES, plane=PLANE.copy())


# --------------------------------------------------------------------------- independent reference
def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a[:, None, :].astype(np.float64) - b[None, :, :].astype(np.float64)) ** 2).sum(-1))


def reference_dtu(pred: np.ndarray, stl: np.ndarray, seed: int) -> dict:
    """The official algorithm restated plainly (brute force, loops)."""
    order = np.random.default_rng(seed).permutation(len(pred))
    visited = pred[order].astype(np.float64)
    close = pairwise(visited, visited) <= 0.2
    dropped = np.zeros(len(visited), bool)
    kept = []
    for i in range(len(visited)):
        if dropped[i]:
            continue
        kept.append(visited[i])
        dropped |= close[i]
    kept = np.array(kept)
    data_in = np.array([p for p in kept if all(BB[0, a] - 60 <= p[a] < BB[1, a] + 120 for a in range(3))])
    mask = obs_mask()
    in_obs = []
    for p in data_in:
        index = [round((p[a] - BB[0, a]) / RES) for a in range(3)]
        in_obs.append(all(0 <= index[a] < mask.shape[a] for a in range(3)) and mask[tuple(index)] == 1)
    data_obs = data_in[np.array(in_obs)]
    acc = pairwise(data_obs, stl).min(axis=1)
    above = np.array([PLANE[:3] @ s + PLANE[3] > 0 for s in stl.astype(np.float64)])
    comp = pairwise(stl[above], data_in).min(axis=1)
    accuracy, completeness = acc[acc < 20].mean(), comp[comp < 20].mean()
    return {"accuracy_mm": accuracy, "completeness_mm": completeness, "overall_mm": (accuracy + completeness) / 2,
            "downsampled": len(kept), "inbound": len(data_in), "in_mask": len(data_obs)}


def predicted_cloud(seed: int = 0) -> np.ndarray:
    """``float32 [N,3]``: a noisy partial sphere with near-duplicates, outliers and far points (mm)."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(1500, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    directions = directions[directions[:, 1] < 20 / RADIUS]  # the cap y > 20 is missing
    surface = CENTRE + RADIUS * directions + rng.normal(scale=0.3, size=directions.shape)
    duplicates = surface[:250] + rng.normal(scale=0.05, size=(250, 3))  # thinned away (mostly)
    outliers = CENTRE + (RADIUS + rng.uniform(22, 40, (40, 1))) * directions[:40]
    far_box = np.column_stack([rng.uniform(BB[1, 0] + 61, BB[1, 0] + 119, 10), rng.uniform(-10, 10, 10),
                               rng.uniform(0, 20, 10)])  # inbound only because the box is asymmetric
    outside = np.column_stack([np.full(10, BB[1, 0] + 150.0), rng.uniform(-10, 10, 10), rng.uniform(0, 20, 10)])
    return np.concatenate([surface, duplicates, outliers, far_box, outside]).astype(np.float32)


# --------------------------------------------------------------------------- the evaluation
def test_evaluation_equals_the_official_algorithm_restated_independently():
    pred, stl = predicted_cloud(), stl_points()
    expected = reference_dtu(pred, stl, seed=5)
    got = dtu_eval.score_points(pred, stl, eval_data(), dtu_eval.DtuOptions(seed=5))
    for key in ("accuracy_mm", "completeness_mm", "overall_mm"):
        assert got[key] == pytest.approx(expected[key], rel=0.02), key
        assert got[key] == pytest.approx(expected[key], rel=1e-6), key  # same algorithm: equal in practice
    assert got["counts"]["downsampled"] == expected["downsampled"] < len(pred)  # thinning took effect
    assert got["counts"]["inbound"] == expected["inbound"]
    assert got["counts"]["in_mask"] == expected["in_mask"] < expected["inbound"]  # the mask took effect
    assert got["overall_mm"] == pytest.approx((got["accuracy_mm"] + got["completeness_mm"]) / 2)


def test_thinning_is_greedy_seeded_and_leaves_points_more_than_the_radius_apart():
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 2.0, (600, 3))
    kept = dtu_eval.downsample(points, 0.2, seed=4, chunk=50)  # small chunks: the chunked loop is exercised
    assert np.array_equal(kept, dtu_eval.downsample(points, 0.2, seed=4))
    distances = pairwise(points[kept], points[kept]) + np.eye(len(kept)) * 1e9
    assert distances.min() > 0.2
    dropped = np.setdiff1d(np.arange(len(points)), kept)
    assert (pairwise(points[dropped], points[kept]).min(axis=1) <= 0.2).all()
    assert not np.array_equal(np.sort(kept), np.sort(dtu_eval.downsample(points, 0.2, seed=5)))
    # A chain 0 -- 0.15 -- 0.30: whichever end is visited first, a dropped middle drops nothing.
    chain = np.array([[0.0, 0, 0], [0.15, 0, 0], [0.30, 0, 0]])
    for seed in range(8):
        order = np.random.default_rng(seed).permutation(3)
        expected = {1} if order[0] == 1 else {0, 2}
        assert set(dtu_eval.downsample(chain, 0.2, seed).tolist()) == expected


# --------------------------------------------------------------------------- convention traps
def test_inbound_box_is_asymmetric_and_half_open():
    lo, hi = BB[0, 0], BB[1, 0]
    xs = np.array([lo - 60, lo - 60.5, lo - 59, hi + 119, hi + 120, hi + 61, hi + 121])
    points = np.column_stack([xs, np.zeros(len(xs)), np.zeros(len(xs))])
    assert dtu_eval.inbound(points, BB, 60.0).tolist() == [True, False, True, True, False, True, False]
    # The far points of the cloud (BB1 + 61..119) reach completeness only through the +120 side.
    pred = predicted_cloud()
    counts = dtu_eval.score_points(pred, stl_points(), eval_data())["counts"]
    symmetric = np.all((pred >= BB[0] - 60) & (pred < BB[1] + 60), axis=1)
    assert counts["inbound"] > int(symmetric.sum()) - 250  # more than any symmetric box could keep after thinning


def test_mask_index_rounds_uses_the_box_origin_and_xyz_order():
    mask = np.zeros((12, 9, 7), np.uint8)
    mask[3, 5, 2] = 1
    mask[-1, 5, 2] = 1  # a negative index must not wrap around to this voxel
    data = dtu_data.DtuEvalData(scan=1, obs_mask=mask, bb=np.array([[10.0, -20.0, 4.0], [40.0, 0.0, 20.0]]),
                                res=2.5, plane=PLANE)
    voxel = lambda i, j, k: data.bb[0] + data.res * np.array([i, j, k])  # noqa: E731
    points = np.array([voxel(2.7, 5, 2),    # round -> 3 (observed); floor -> 2
                       voxel(3.6, 5, 2),    # round -> 4; floor -> 3 (observed)
                       voxel(3, 5.4, 1.6),  # round -> (3, 5, 2)
                       voxel(-0.8, 5, 2),   # index -1: outside the array
                       voxel(2, 5, 3),      # (2, 5, 3) vs [z, y, x] order -> (3, 5, 2)
                       voxel(3, 5, 2) - np.array([0.0, 0.0, 3 * 2.5])])  # index (3,5,-1)
    assert dtu_eval.in_observation_mask(points, data).tolist() == [True, False, True, False, False, False]


def test_plane_side_is_positive_and_strict():
    points = np.array([[0.0, 0.0, -19.0], [0.0, 0.0, -21.0], [3.0, 4.0, -20.0]])
    assert dtu_eval.above_plane(points, PLANE).tolist() == [True, False, False]
    # Completeness: only the sphere (above) counts; the table points (below) lie far from any prediction.
    stl = stl_points()
    pred = (CENTRE + RADIUS * fibonacci_sphere(900)).astype(np.float32)
    got = dtu_eval.score_points(pred, stl, eval_data())
    assert got["counts"]["stl_above_plane"] == 1200
    expected = pairwise(stl[:1200], pred).min(axis=1)
    assert got["completeness_mm"] == pytest.approx(expected[expected < 20].mean(), rel=1e-6)
    with_table = pairwise(stl, pred).min(axis=1)
    assert abs(with_table[with_table < 20].mean() - got["completeness_mm"]) > 0.1  # the sign matters


def test_the_20mm_cut_applies_to_both_means_and_excludes_20():
    stl = np.array([[0.0, 0, 0], [100, 0, 0], [200, 0, 0]])
    pred = np.array([[0.0, 0, 1], [100, 0, 3], [200, 0, 25], [0, 0, -20]])  # 1, 3, 25 and exactly 20 mm
    data = dtu_data.DtuEvalData(scan=1, obs_mask=np.ones((36, 11, 11), np.uint8),
                                bb=np.array([[-50.0, -50, -50], [300, 50, 50]]), res=10.0,
                                plane=np.array([0.0, 0, 1, 100]))
    got = dtu_eval.score_points(pred, stl, data)
    assert got["accuracy_mm"] == pytest.approx(2.0)      # not 49/4 (no cut) nor 44/4 (clipped at 20)
    assert got["completeness_mm"] == pytest.approx(2.0)  # not 29/3 (no cut) nor 24/3 (clipped)
    assert got["counts"]["accuracy_used"] == 2 and got["counts"]["completeness_used"] == 2


def test_projection_decomposition_fixes_rq_signs_and_the_scale_sign():
    from scipy.linalg import rq

    raw_negative = False
    for view in range(1, 9):
        k, cam = intrinsics(view), pose(view)
        for scale in (3.0, -0.25):
            p = scale * k @ cam[:3]
            raw_k, _ = rq(p[:, :3])
            raw_negative |= bool((np.diag(raw_k) < 0).any())
            got_k, got_pose = dtu_data.decompose_projection(p)
            assert np.allclose(got_k, k, atol=1e-9) and np.allclose(got_pose, cam, atol=1e-9)
            assert np.linalg.det(got_pose[:3, :3]) == pytest.approx(1.0)
    assert raw_negative  # scipy's plain RQ gives negative diagonals here: the sign fix is exercised


@pytest.mark.parametrize("matrix, message", [
    (np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 1]]), "does not decompose"),
    (np.zeros((3, 4)), "does not decompose"),
    (np.array([[1.0, 0, 0, 0], [0, np.nan, 0, 0], [0, 0, 1, 1]]), "NaN or infinite"),
])
def test_projection_that_does_not_decompose_is_a_clear_error(matrix, message):
    with pytest.raises(dtu_data.DtuError, match=message):
        dtu_data.decompose_projection(matrix, "pos_001.txt")


# --------------------------------------------------------------------------- the importer
def test_import_round_trip_cameras_points_and_evaluation_data(imported, scan_root):
    scene = Scene.load(imported)
    assert scene.name == f"dtu_scan{SCAN}" and scene.image_size == (HEIGHT, WIDTH)
    assert scene.image_names == [f"rect_{v:03d}_3_r5000.png" for v in VIEWS]
    for i, view in enumerate(VIEWS):
        assert np.abs(scene.intrinsics[i] - intrinsics(view)).max() < 1e-6
        assert np.abs(scene.cam_from_world[i] - pose(view)).max() < 1e-6
    assert np.array_equal(scene.gt_points, stl_points())
    assert scene.gt_colors is not None and (scene.gt_colors == (200, 100, 50)).all()
    assert "millimetres" in scene.provenance["units"] and "Calibration" in scene.provenance["cameras"]
    assert scene.provenance["views"] == VIEWS
    data = dtu_data.DtuEvalData.load(imported)
    assert np.array_equal(data.obs_mask, obs_mask()) and data.obs_mask.dtype == np.uint8
    assert np.array_equal(data.bb, BB) and data.res == RES and np.array_equal(data.plane, PLANE)


def test_imported_cameras_reproject_the_stl_points_onto_the_object(imported):
    scene = Scene.load(imported)
    sphere = scene.gt_points[:1200]
    for i in range(scene.num_views):
        uv, z = geometry.project(sphere, scene.intrinsics[i], scene.cam_from_world[i])
        assert (z > 0).all()
        pixel = np.rint(uv).astype(int)
        inside = (pixel[:, 0] >= 0) & (pixel[:, 0] < WIDTH) & (pixel[:, 1] >= 0) & (pixel[:, 1] < HEIGHT)
        assert inside.all()
        silhouette = scene.images[i].any(axis=2)
        padded = np.pad(silhouette, 1)  # grown by one pixel: limb points round to either side of the edge
        grown = np.max([padded[dy:dy + HEIGHT, dx:dx + WIDTH] for dy in range(3) for dx in range(3)], axis=0)
        assert grown[pixel[:, 1], pixel[:, 0]].all()
        assert silhouette[pixel[:, 1], pixel[:, 0]].mean() > 0.8
        # The check is sharp: the sphere moved 40 mm sideways (about 11 px) mostly misses the object.
        moved = sphere + 40.0 * scene.cam_from_world[i, 0, :3]
        uv_moved = np.rint(geometry.project(moved, scene.intrinsics[i], scene.cam_from_world[i])[0]).astype(int)
        hits = [0 <= u < WIDTH and 0 <= v < HEIGHT and grown[v, u] for u, v in uv_moved]
        assert np.mean(hits) < 0.5


def test_light_option_and_missing_light(tmp_path):
    root = write_scan(tmp_path / "root", light=0)
    scene, _ = dtu_data.read_scan(root, SCAN, light=0)
    assert scene.image_names[0] == "rect_001_0_r5000.png"
    with pytest.raises(dtu_data.DtuError, match=r"no image rect_vvv_3_r5000.png for light 3 \(lights found: 0\)"):
        dtu_data.read_scan(root, SCAN)


# --------------------------------------------------------------------------- bad input
def _one_line_nothing_written(root, out, match):
    with pytest.raises(UserError, match=match) as info:
        dtu_data.import_scan(root, SCAN, out)
    assert "\n" not in str(info.value)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_bad_root_is_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    _one_line_nothing_written(tmp_path / "empty", tmp_path / "out",
                              r"not a DTU MVS root for scan 7: missing Rectified/scan7, Calibration/cal18, "
                              r"Points/stl/stl007_total.ply, ObsMask/ObsMask7_10.mat, ObsMask/Plane7.mat")


def test_mat_without_res_names_the_key(tmp_path):
    root = write_scan(tmp_path / "root")
    savemat(root / "ObsMask" / f"ObsMask{SCAN}_10.mat", {"ObsMask": obs_mask(), "BB": BB})
    _one_line_nothing_written(root, tmp_path / "out", r"ObsMask7_10.mat has no Res \(found: BB, ObsMask\)")
    savemat(root / "ObsMask" / f"Plane{SCAN}.mat", {"Q": PLANE})
    savemat(root / "ObsMask" / f"ObsMask{SCAN}_10.mat", {"ObsMask": obs_mask(), "BB": BB, "Res": RES})
    _one_line_nothing_written(root, tmp_path / "out", r"Plane7.mat has no P")


def test_projection_that_does_not_decompose_stops_the_import(tmp_path):
    root = write_scan(tmp_path / "root")
    matrix = intrinsics(2) @ pose(2)[:3]
    matrix[2, :3] = matrix[0, :3]  # rank-deficient left block
    write_projection(root / "Calibration" / "cal18" / "pos_002.txt", matrix)
    _one_line_nothing_written(root, tmp_path / "out", r"pos_002.txt: the projection matrix does not decompose")


def test_camera_count_must_match_the_images(tmp_path):
    root = write_scan(tmp_path / "root")
    (root / "Calibration" / "cal18" / "pos_003.txt").unlink()
    _one_line_nothing_written(root, tmp_path / "out",
                              r"scan 7 has 5 images at light 3 but 4 of them have a camera .*missing pos_003.txt")


def test_calibration_of_other_resolution_images_is_refused(tmp_path):
    root = write_scan(tmp_path / "root")
    for view in VIEWS:  # cameras of images 4x the size: the principal point falls outside 56x40
        write_projection(root / "Calibration" / "cal18" / f"pos_{view:03d}.txt",
                         np.diag([4.0, 4.0, 1.0]) @ intrinsics(view) @ pose(view)[:3])
    _one_line_nothing_written(root, tmp_path / "out", r"principal point .* lies outside the 56x40 images")


def test_an_existing_folder_is_not_overwritten(scan_root, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        dtu_data.import_scan(scan_root, SCAN, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


# --------------------------------------------------------------------------- command line
def test_cli_import_and_evaluate_in_the_scan_frame(scan_root, tmp_path, capsys):
    from core.__main__ import main
    from core.data.importers import ply_bytes

    out = tmp_path / "scene"
    assert main(["datasets", "import", "dtu", "--root", str(scan_root), "--scan", str(SCAN), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["views"] == 5 and summary["gt_points"] == len(stl_points())
    pred = predicted_cloud()
    (tmp_path / "pred.ply").write_bytes(ply_bytes(pred))
    assert main(["evaluate", "--scene", str(out), "--reconstruction", str(tmp_path / "pred.ply"),
                 "--protocol", "dtu", "--seed", "5"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = reference_dtu(pred, stl_points(), seed=5)
    assert result["alignment"] == {"mode": "none"} and result["scan"] == SCAN
    for key in ("accuracy_mm", "completeness_mm", "overall_mm"):
        assert result[key] == pytest.approx(expected[key], rel=0.02)
    assert main(["datasets", "import", "dtu", "--root", str(tmp_path), "--scan", "3", "--out",
                 str(tmp_path / "other")]) == 2
    assert capsys.readouterr().err.startswith("error: ") and not (tmp_path / "other").exists()


def test_alignment_by_cameras_recovers_a_method_frame(imported, tmp_path, capsys):
    """The cloud and the cameras moved into a 'method frame' by a known Sim(3) score as in the scan's frame."""
    scene = Scene.load(imported)
    rotation = geometry.random_rotation(np.random.default_rng(2))
    world_from_method = geometry.sim3_matrix(130.0, rotation, np.array([4.0, -7.0, 600.0]))
    method_from_world = geometry.invert_transform(world_from_method)
    pred = predicted_cloud()
    pred = pred[: len(pred) // 5 * 5]  # five frames of a VGGT-style point map
    pred_method = geometry.transform_points(method_from_world, pred.astype(np.float64))
    extrinsic = []
    for cam in scene.cam_from_world:  # cam_from_method = [R_c R_T, (R_c t_T + t_c) / s]
        combined = cam @ world_from_method
        extrinsic.append(np.concatenate([combined[:3, :3] / 130.0, (combined[:3, 3] / 130.0)[:, None]], axis=1))
    extrinsic = np.stack(extrinsic)
    path = tmp_path / "predictions.npz"
    np.savez(path, world_points=pred_method.reshape(5, 1, -1, 3).astype(np.float32), extrinsic=extrinsic)
    args = lambda align: argparse.Namespace(scene=str(imported), reconstruction=str(path),  # noqa: E731
                                            views=[0, 1, 2, 3, 4], opt__align=align, opt__seed="5")
    assert dtu_eval.evaluate_cli(args("cameras")) == 0
    result = json.loads(capsys.readouterr().out)
    expected = reference_dtu(pred, stl_points(), seed=5)
    assert result["alignment"]["mode"] == "cameras"
    assert result["alignment"]["scale"] == pytest.approx(130.0, rel=1e-6)
    for key in ("accuracy_mm", "completeness_mm", "overall_mm"):
        assert result[key] == pytest.approx(expected[key], rel=0.02)
    assert dtu_eval.evaluate_cli(args("cameras+icp")) == 0
    refined = json.loads(capsys.readouterr().out)
    assert refined["alignment"]["mode"] == "cameras+icp" and refined["alignment"]["icp_fitness"] > 0
    assert refined["alignment"]["scale"] == pytest.approx(130.0, rel=0.01)
    assert refined["overall_mm"] == pytest.approx(expected["overall_mm"], rel=0.05)
    with pytest.raises(EvaluationError, match="is the reconstruction in the scan's frame"):
        dtu_eval.evaluate_cli(args("none"))
    no_views = argparse.Namespace(scene=str(imported), reconstruction=str(path), views=None,
                                  opt__align="cameras", opt__seed=None)
    with pytest.raises(EvaluationError, match="needs the reconstruction's cameras"):
        dtu_eval.evaluate_cli(no_views)
