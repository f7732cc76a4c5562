"""Exports of stored runs (core/export): each format read back by another library and compared
with the run; the export command's errors; the download archive.

The run is synthetic: five 24x32 views of the plane z = 0 seen straight down from height 2 with
different rolls and offsets; the run used views [0, 2, 3, 4] with view 4 unregistered (NaN pose),
its points are pixels of views 0, 2, 3 lifted to the plane (so every point's depth is exactly
2 in every view) plus one NaN point, and its depth maps are at half resolution.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.data.scene import Reconstruction, Scene
from core.store.cache import RunStore

H, W = 24, 32
HEIGHT = 2.0
K = np.array([[30.0, 0.0, 15.3], [0.0, 31.0, 11.6], [0.0, 0.0, 1.0]])
VIEW_IDS = [0, 2, 3, 4]
KEY = "abc123" + "0" * 14
OTHER_KEY = "abc999" + "0" * 14


def _pose(offset, roll_deg) -> np.ndarray:
    """cam_from_world of a camera at (x, y, HEIGHT) looking down -z, rolled by ``roll_deg``."""
    a = np.radians(roll_deg)
    right = np.array([np.cos(a), np.sin(a), 0.0])
    forward = np.array([0.0, 0.0, -1.0])
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    eye = np.array([offset[0], offset[1], HEIGHT])
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation, -rotation @ eye
    return pose


def _scene() -> Scene:
    rng = np.random.default_rng(3)
    poses = np.stack([_pose((0.013 * i, -0.021 * i), 17.0 * i) for i in range(5)])
    return Scene(name="exptoy", images=[rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(5)],
                 image_names=[f"view_{i}.jpg" for i in range(5)], intrinsics=np.tile(K, (5, 1, 1)),
                 cam_from_world=poses)


def _recon(scene: Scene) -> Reconstruction:
    rng = np.random.default_rng(4)
    poses = scene.cam_from_world[VIEW_IDS].copy()
    poses[3] = np.nan  # view 4 did not register
    points, source = [], []
    v, u = np.mgrid[1:H - 1:3, 1:W - 1:4]
    pixels = np.stack([u.ravel(), v.ravel()], axis=1).astype(np.float64)
    for index in range(3):
        rays = np.c_[pixels, np.ones(len(pixels))] @ np.linalg.inv(K).T * HEIGHT
        world = (rays - poses[index][:3, 3]) @ poses[index][:3, :3]  # R^T (x - t)
        points.append(world)
        source.append(np.full(len(world), index))
    points = np.concatenate(points + [np.full((1, 3), np.nan)])
    source = np.concatenate(source + [[0]])
    depth = np.full((4, H // 2, W // 2), HEIGHT, np.float32)
    depth[3] = 0.0
    return Reconstruction(method="planar", points=points, colors=rng.integers(0, 256, (len(points), 3)),
                          confidence=rng.random(len(points)), source_view=source, view_ids=VIEW_IDS,
                          cam_from_world=poses, intrinsics=np.tile(K, (4, 1, 1)), depth_maps=depth,
                          seconds=1.5, weights_kind="random-tiny", options={"weights": "random-tiny"})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(store, scene, recon, runs): the synthetic run and a camera-less run stored with their scene."""
    from core.export import StoredRun

    root = tmp_path_factory.mktemp("store")
    scene = _scene()
    scene.save(root / "scenes" / "exptoy")
    recon = _recon(scene)
    store = RunStore(root)
    store.save(scene.name, KEY, recon)
    bare = Reconstruction(method="pointsonly", points=recon.points[:40], colors=recon.colors[:40], view_ids=[1])
    store.save(scene.name, OTHER_KEY, bare)
    runs = {r.key: StoredRun.from_record(r, scene) for r in store.runs(scene.name)}
    return store, scene, recon, runs


def _finite(recon):
    keep = np.isfinite(recon.points).all(axis=1)
    return recon.points[keep], recon.colors[keep], recon.confidence[keep]


def test_colmap_round_trip_through_pycolmap(setup, tmp_path):
    import pycolmap
    from core.export import export_to

    store, scene, recon, runs = setup
    out = export_to("colmap", [runs[KEY]], tmp_path / "colmap")
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    points, colors, _ = _finite(recon)
    assert model.num_images() == 3  # the unregistered view is left out
    by_name = {image.name: image for image in model.images.values()}
    assert sorted(by_name) == ["view_0.png", "view_2.png", "view_3.png"]
    for index, view in enumerate(VIEW_IDS[:3]):
        image = by_name[f"view_{view}.png"]
        pose = np.eye(4)
        pose[:3] = image.cam_from_world().matrix()
        np.testing.assert_allclose(pose, recon.cam_from_world[index], atol=1e-6)
        camera = model.cameras[image.camera_id]
        assert camera.model.name == "PINHOLE" and (camera.width, camera.height) == (W, H)
        np.testing.assert_allclose(camera.params, [30.0, 31.0, 15.8, 12.1], atol=1e-12)
        assert np.array_equal(np.asarray(Image_open(out / "images" / image.name)), scene.images[view])
    assert model.num_points3D() == len(points)
    ids = sorted(model.points3D)
    xyz = np.array([model.points3D[i].xyz for i in ids])
    np.testing.assert_allclose(xyz, points, atol=1e-6)
    assert np.array_equal(np.array([model.points3D[i].color for i in ids]), colors)
    # Tracks: every view whose image the point falls in (all depths agree on the plane), each 2-D
    # point where pycolmap itself projects the point.
    names = {image.image_id: image.name for image in model.images.values()}
    total = 0
    for row, pid in enumerate(ids):
        track = model.points3D[pid].track
        seen = set()
        for element in track.elements:
            image = model.images[element.image_id]
            xy = image.points2D[element.point2D_idx].xy
            np.testing.assert_allclose(xy, image.project_point(points[row].astype(np.float64)), atol=1e-6)
            assert image.points2D[element.point2D_idx].point3D_id == pid
            seen.add(names[element.image_id])
        expected = set()
        for index, view in enumerate(VIEW_IDS[:3]):
            cam = recon.cam_from_world[index][:3, :3] @ points[row] + recon.cam_from_world[index][:3, 3]
            u, v = (K @ cam)[:2] / cam[2]
            if -0.5 <= u < W - 0.5 and -0.5 <= v < H - 0.5:
                expected.add(f"view_{view}.png")
        assert seen == expected
        total += track.length()
    assert total > len(points)  # most points are seen by more than their own view
    readme = (out / "README.txt").read_text()
    assert f"tracks: {total} observations" in readme and "3 posed views of 4 input views" in readme


def test_colmap_without_track_information_says_so(setup, tmp_path):
    import dataclasses

    import pycolmap
    from core.export import StoredRun, export_to

    store, scene, recon, runs = setup
    bare = dataclasses.replace(recon, source_view=None, depth_maps=None)
    out = export_to("colmap", [StoredRun(bare, scene)], tmp_path / "colmap")
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert model.num_points3D() == len(_finite(recon)[0])
    assert all(p.track.length() == 0 for p in model.points3D.values())
    assert "tracks: none" in (out / "README.txt").read_text()


def Image_open(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB").copy()


def test_ply_round_trip_through_open3d_and_trimesh(setup, tmp_path):
    import open3d as o3d
    import trimesh
    from core.export import export_to

    store, scene, recon, runs = setup
    out = export_to("ply", [runs[KEY]], tmp_path / "ply")
    points, colors, confidence = _finite(recon)
    cloud = o3d.io.read_point_cloud(str(out / "points.ply"))
    assert np.array_equal(np.asarray(cloud.points).astype(np.float32), points)  # float32 stored exactly
    assert np.array_equal(np.rint(np.asarray(cloud.colors) * 255).astype(np.uint8), colors)
    raw = trimesh.load(out / "points.ply").metadata["_ply_raw"]["vertex"]["data"]
    assert np.array_equal(raw["confidence"], confidence)


def test_glb_round_trip_through_trimesh(setup, tmp_path):
    import trimesh
    from core.export import export_to

    store, scene, recon, runs = setup
    out = export_to("glb", [runs[KEY]], tmp_path / "glb")
    loaded = trimesh.load(out / "scene.glb")
    points, colors, _ = _finite(recon)
    cloud = loaded.geometry["points"]
    assert isinstance(cloud, trimesh.PointCloud) and len(cloud.vertices) == len(points)
    np.testing.assert_allclose(cloud.vertices, points, atol=1e-6)
    assert np.array_equal(np.asarray(cloud.colors)[:, :3], colors)
    cameras = {name: g for name, g in loaded.geometry.items() if name.startswith("camera_")}
    assert sorted(cameras) == ["camera_0", "camera_2", "camera_3"]
    for index, view in enumerate(VIEW_IDS[:3]):
        pose = recon.cam_from_world[index]
        centre = -pose[:3, :3].T @ pose[:3, 3]
        vertices = np.asarray(cameras[f"camera_{view}"].vertices)
        assert np.linalg.norm(vertices - centre, axis=1).min() < 1e-6


def test_nerfstudio_round_trip(setup, tmp_path):
    from core.export import export_to
    from core.export.nerfstudio import cam_from_world_of

    store, scene, recon, runs = setup
    out = export_to("nerfstudio", [runs[KEY]], tmp_path / "ns")
    data = json.loads((out / "transforms.json").read_text())
    assert [f["reconbench_view_id"] for f in data["frames"]] == [0, 2, 3]
    for index, frame in enumerate(data["frames"]):
        pose = recon.cam_from_world[index]
        c2w = np.array(frame["transform_matrix"])
        # OpenGL axes: x = camera right, y = up = -(OpenCV down), z = back = -(OpenCV forward).
        np.testing.assert_allclose(c2w[:3, 0], pose[0, :3], atol=1e-12)
        np.testing.assert_allclose(c2w[:3, 1], -pose[1, :3], atol=1e-12)
        np.testing.assert_allclose(c2w[:3, 2], -pose[2, :3], atol=1e-12)
        np.testing.assert_allclose(c2w[:3, 3], -pose[:3, :3].T @ pose[:3, 3], atol=1e-12)
        np.testing.assert_allclose(cam_from_world_of(c2w), pose, atol=1e-6)
        assert (frame["fl_x"], frame["fl_y"], frame["w"], frame["h"]) == (30.0, 31.0, W, H)
        assert frame["cx"] == pytest.approx(15.8) and frame["cy"] == pytest.approx(12.1)
        assert (out / frame["file_path"]).is_file()
    assert (out / data["ply_file_path"]).is_file()


def test_report_holds_plotly_once_and_every_figure(setup, tmp_path):
    import plotly.graph_objects as go
    from core.export import export_to
    from core.export.report import FigureItem, Table, write_html

    store, scene, recon, runs = setup
    out = export_to("html", [runs[KEY], runs[OTHER_KEY]], tmp_path / "report")
    text = (out / "report.html").read_text()
    assert text.count("plotly.js v") == 1 and "<script src=" not in text  # inline, once: works offline
    figures = text.count('class="plotly-graph-div"')
    assert figures >= 2 and all(f'id="figure-{i}"' in text for i in range(figures))
    assert runs[KEY].label in text and runs[OTHER_KEY].label in text

    items = [("a bar", go.Figure(go.Bar(x=[1], y=[2]))), Table("numbers", [{"x": 1.23456789, "y": None}]),
             FigureItem("a line", go.Figure(go.Scatter(x=[1, 2], y=[2, 3])), caption="c<1>")]
    text = write_html(items, tmp_path / "custom.html").read_text()
    assert text.count("plotly.js v") == 1 and text.count('class="plotly-graph-div"') == 2
    assert "<td>1.235</td><td>—</td>" in text and "c&lt;1&gt;" in text


def _cli(args, capsys):
    from core.__main__ import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_exports_by_key_prefix_and_refuses_bad_input(setup, tmp_path, capsys):
    store, scene, recon, runs = setup
    base = ["--cache", str(store.root), "export"]
    code, out, err = _cli(base + ["abc1", "--format", "ply", "--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    assert json.loads(out)["files"] == ["points.ply"] and (tmp_path / "a" / "points.ply").is_file()

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    (tmp_path / "file").write_text("x")
    bad = [
        (["abc", "--format", "ply", "--out", str(tmp_path / "b")], "names 2 runs"),
        (["zzz", "--format", "ply", "--out", str(tmp_path / "b")], "no stored run"),
        (["exptoy/planar/nokey", "--format", "ply", "--out", str(tmp_path / "b")], "no stored run"),
        (["abc1", "--format", "obj", "--out", str(tmp_path / "b")], "unknown export format"),
        (["abc9", "--format", "colmap", "--out", str(tmp_path / "b")], "has no cameras"),
        (["abc1", "abc9", "--format", "glb", "--out", str(tmp_path / "b")], "takes one run"),
        (["abc1", "--format", "ply", "--out", str(tmp_path / "full")], "not empty"),
        (["abc1", "--format", "ply", "--out", str(tmp_path / "file")], "is a file"),
        (["abc1", "--format", "ply", "--out", str(tmp_path / "b"), "--scene", str(tmp_path / "nowhere")],
         "not a scene folder"),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for args, message in bad:
        code, out, err = _cli(base + args, capsys)
        assert code == 2 and out == "", args
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temporary left
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"

    code, out, err = _cli(base + ["exptoy/planar/" + KEY, "--format", "glb", "--out", str(tmp_path / "full"),
                                  "--force"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["scene.glb"]


def test_archive_zips_folders_and_passes_single_files(setup, tmp_path):
    from core.export import archive, export_to

    store, scene, recon, runs = setup
    name, data, mime = archive("colmap", runs[KEY])
    assert name.endswith(".zip") and mime == "application/zip"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
    assert {"sparse/0/cameras.bin", "sparse/0/images.bin", "sparse/0/points3D.bin", "README.txt",
            "images/view_0.png"} <= names
    name, data, mime = archive("ply", runs[KEY])
    assert name == f"exptoy-planar-{KEY[:8]}.ply"
    assert data == (export_to("ply", [runs[KEY]], tmp_path / "p") / "points.ply").read_bytes()


def _download_section(root: str, key: str) -> None:
    from pathlib import Path

    from core.app.exports import export_buttons
    from core.data.scene import Scene
    from core.store.cache import RunStore

    record = next(r for r in RunStore(root).runs("exptoy") if r.key == key)
    export_buttons(record, Scene.load(Path(root) / "scenes" / "exptoy"), "test")


def test_download_section_offers_every_format_and_explains_missing_cameras(setup):
    from streamlit.testing.v1 import AppTest

    from core.export import FORMATS

    store = setup[0]
    for key, disabled in ((KEY, set()), (OTHER_KEY, {"colmap", "nerfstudio"})):
        at = AppTest.from_function(_download_section, args=(str(store.root), key), default_timeout=30).run()
        assert not at.exception
        buttons = {b.key.rsplit(".", 1)[1]: b for b in at.download_button}
        assert set(buttons) == set(FORMATS)
        assert {name for name, b in buttons.items() if b.proto.disabled} == disabled
        assert all("has no cameras" in buttons[name].help for name in disabled)


def test_metrics_page_shows_the_download_section_of_the_committed_runs():
    """No isolated cache: a committed 3D-LMNet run (points, no cameras), read only."""
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    lmnet = next(r for r in RunStore(ROOT / "cache").runs("toy") if r.method == "lmnet")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page("pages/metrics.py")
    at.session_state["metrics.inspect"] = ("toy", "lmnet", lmnet.key)
    at.run()
    assert not at.exception
    buttons = {b.key.rsplit(".", 1)[1]: b for b in at.download_button if b.key.startswith("metrics.export.")}
    assert len(buttons) == 5 and {k for k, b in buttons.items() if b.proto.disabled} == {"colmap", "nerfstudio"}


def test_report_of_the_committed_scored_runs_has_the_compare_figures(tmp_path):
    """The class handout: the committed COLMAP and 3D-LMNet runs (scored), read only."""
    from core.export import StoredRun, export_to
    from tests.conftest import ROOT, SAMPLE

    store = RunStore(ROOT / "cache")
    scene = Scene.load(SAMPLE)
    records = [next(r for r in store.runs("toy") if r.method == m) for m in ("colmap", "lmnet")]
    before = store.snapshot()
    out = export_to("html", [StoredRun.from_record(r, scene) for r in records], tmp_path / "handout")
    text = (out / "report.html").read_text()
    assert text.count("plotly.js v") == 1 and "<script src=" not in text
    for heading in ("Runs and scores", "Distance to the ground truth", "Score charts", "Quality against cost"):
        assert f"<h2>{heading}</h2>" in text
    assert "data-linked-scenes" in text  # the 3-D views share one camera
    assert f"{json.loads((records[0].path / 'evaluation.json').read_text())['chamfer']:.4g}" in text
    assert store.snapshot() == before


def test_mesh_runs_export_their_mesh_and_distortion_gives_opencv_cameras(setup, tmp_path):
    import dataclasses

    import pycolmap
    import trimesh
    from core.export import StoredRun, export_to

    store, scene, recon, runs = setup
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]], np.int32)
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)
    distortion = [[0.01, -0.002, 0.0003, 0.0], [0.0] * 4, [0.02, 0.0, 0.0, 0.001], [0.0] * 4]
    meshy = dataclasses.replace(recon, mesh_vertices=vertices, mesh_faces=faces, mesh_colors=colours,
                                extra={"distortion": distortion})
    run = StoredRun(meshy, scene)
    loaded = trimesh.load(export_to("glb", [run], tmp_path / "glb") / "scene.glb")
    assert "points" not in loaded.geometry
    mesh = loaded.geometry["mesh"]
    assert np.array_equal(mesh.faces, faces) and np.allclose(mesh.vertices, vertices)
    assert np.array_equal(mesh.visual.vertex_colors[:, :3], colours)
    model = pycolmap.Reconstruction(str(export_to("colmap", [run], tmp_path / "colmap") / "sparse" / "0"))
    for image in model.images.values():
        camera, index = model.cameras[image.camera_id], image.camera_id - 1
        expected = ("OPENCV", [30.0, 31.0, 15.8, 12.1] + distortion[index]) if any(distortion[index]) \
            else ("PINHOLE", [30.0, 31.0, 15.8, 12.1])
        assert camera.model.name == expected[0]
        np.testing.assert_allclose(camera.params, expected[1], atol=1e-12)
    frames = json.loads((export_to("nerfstudio", [run], tmp_path / "ns") / "transforms.json").read_text())["frames"]
    assert [[f[k] for k in ("k1", "k2", "p1", "p2")] for f in frames] == distortion[:3]
