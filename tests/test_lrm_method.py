"""The ``lrm`` method end to end (random-tiny weights), its input checks, mesh and checkpoint helpers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from core.models import weights
from core.models.lrm import LRM, tiny_config
from core.models.lrm.inference import render_orbit
from core.models.lrm.mesh import Mesh, export_mesh, extract_mesh, marching_cubes, sample_surface
from core.models.lrm.method import (METHOD, RANDOM_NOTE, LRMOptions, availability, decode_renders,
                                    load_model)
from core.models.lrm.preprocess import crop_object
from core.data.scene import Scene

TINY = dict(weights="random-tiny", grid_size=24, render_resolution=24, orbit_views=3, num_points=500)


def make_scene(n_views: int = 1, size: int = 48, empty_mask: bool = False) -> Scene:
    """A red disc on grey with its mask (centre (26, 20), radius 10)."""
    yy, xx = np.mgrid[:size, :size]
    mask = (yy - 26) ** 2 + (xx - 20) ** 2 < 10 ** 2
    if empty_mask:
        mask[:] = False
    image = np.full((size, size, 3), 90, np.uint8)
    image[mask] = (210, 40, 30)
    k = np.array([[50.0, 0, size / 2], [0, 50.0, size / 2], [0, 0, 1]])
    return Scene(name="disc", images=[image] * n_views, image_names=[f"{i}.png" for i in range(n_views)],
                 intrinsics=np.stack([k] * n_views), cam_from_world=np.stack([np.eye(4)] * n_views),
                 masks=np.stack([mask] * n_views))


def test_run_end_to_end_random_tiny():
    scene = make_scene()
    rec = METHOD.run(scene, [0], LRMOptions(**TINY), None)
    assert rec.method == "lrm" and rec.view_ids == [0]
    assert rec.notes[0] == RANDOM_NOTE
    assert any("watertight" in n for n in rec.notes)
    assert isinstance(rec.extra["mesh_watertight"], bool)
    assert rec.points.shape == (500, 3) and rec.colors.shape == (500, 3)
    assert np.abs(rec.points).max() <= 1.0 + 1e-6  # canonical box
    assert rec.mesh_faces.max() < len(rec.mesh_vertices) and len(rec.mesh_faces) > 0
    assert rec.mesh_colors.dtype == np.uint8 and rec.mesh_colors.shape == rec.mesh_vertices.shape
    frames = decode_renders(rec.extra)
    assert frames.shape == (3, 24, 24, 3) and frames.dtype == np.uint8
    assert rec.parameter_count == 152796 and rec.device == "cpu" and rec.seconds > 0
    # the assumed source camera: at (0,-2,0) in LRM's frame, its axis through the crop centre,
    # so the origin projects to the centre of the object's square crop in the original image
    w2c, k = rec.cam_from_world[0], rec.intrinsics[0]
    assert np.allclose(-w2c[:3, :3].T @ w2c[:3, 3], [0, -2, 0])
    crop = rec.extra["source_crop"]
    pixel = k @ w2c[:3, 3]
    assert np.allclose(pixel[:2] / pixel[2], [crop["left"] + crop["side"] / 2, crop["top"] + crop["side"] / 2])
    up = k @ (w2c[:3, :3] @ np.array([0, 0, 0.5]) + w2c[:3, 3])  # world +z appears above the centre
    assert up[1] / up[2] < pixel[1] / pixel[2]
    # deterministic for a seed
    again = METHOD.run(scene, [0], LRMOptions(**TINY), None)
    assert np.array_equal(rec.points, again.points)
    # the round trip through the run store keeps everything
    npz, meta = rec.to_bytes()
    assert len(npz) > 0 and b"mesh_watertight" in meta


def test_bad_inputs_raise_clear_value_errors():
    with pytest.raises(ValueError, match="mask of the input view is empty"):
        METHOD.run(make_scene(empty_mask=True), [0], LRMOptions(**TINY), None)
    one_pixel = Scene(name="px", images=[np.zeros((1, 1, 3), np.uint8)], image_names=["p.png"],
                      intrinsics=np.eye(3)[None], cam_from_world=np.eye(4)[None])
    with pytest.raises(ValueError, match="too small"):
        METHOD.run(one_pixel, [0], LRMOptions(**TINY), None)
    with pytest.raises(ValueError, match="at most 1 view"):
        METHOD.run(make_scene(2), [0, 1], LRMOptions(**TINY), None)
    with pytest.raises(ValueError, match="does not exist"):
        METHOD.run(make_scene(), [3], LRMOptions(**TINY), None)


def test_availability_and_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path))
    monkeypatch.setattr(weights, "_hf_cached", lambda checkpoint: None)
    assert availability(LRMOptions(weights="random-tiny")).ok
    status = availability(LRMOptions(variant="small"))
    assert not status.ok
    assert "zxhezexin/openlrm-mix-small-1.1" in status.missing and "model.safetensors" in status.missing
    assert status.fix_command == "python -m core weights fetch openlrm-mix-small-1.1"
    with pytest.raises(weights.MissingWeights):
        load_model("pretrained", "base", str(tmp_path / "nope.safetensors"), "cpu")


def test_pretrained_loader_reads_checkpoint_and_refuses_wrong_one(tmp_path, monkeypatch):
    load_model.cache_clear()
    from safetensors.torch import save_file
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path))
    monkeypatch.setattr("core.models.lrm.method.preset", lambda variant: tiny_config())
    model = LRM(tiny_config())
    path = tmp_path / "openlrm-mix-base-1.1" / "model.safetensors"
    path.parent.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert availability(LRMOptions()).ok
    loaded = load_model("pretrained", "base", "", "cpu")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    wrong = tmp_path / "wrong.safetensors"
    state = {k: v for k, v in model.state_dict().items() if k != "pos_embed"}
    save_file(state, str(wrong))
    with pytest.raises(weights.BadCheckpoint, match="pos_embed"):
        load_model("pretrained", "base", str(wrong), "cpu")


def test_crop_object_centres_on_white_square():
    scene = make_scene()
    square, crop = crop_object(scene.images[0], scene.masks[0], border_ratio=0.2)
    side = square.shape[0]
    assert square.shape == (side, side, 3) and side == crop.side
    assert side == int(np.ceil(19 / 0.8))  # disc bbox 19 px spans 80% of the side
    assert (square[0] == 255).all() and (square[:, 0] == 255).all()  # white border
    red = np.argwhere((square == (210, 40, 30)).all(-1))
    assert np.abs(red.mean(0) - (side - 1) / 2).max() <= 1.0  # centred
    assert not (square == 90).all(-1).any()  # the grey background is gone
    # the crop maps back to the original image: the square's centre is the disc's centre
    k = crop.intrinsics()
    assert k[0, 2] == pytest.approx(crop.left + side / 2) and k[0, 0] == pytest.approx(0.75 * side)
    assert abs(crop.top + side / 2 - 26.5) <= 1.0 and abs(crop.left + side / 2 - 20.5) <= 1.0


def sphere_mesh(grid: int = 20) -> Mesh:
    axis = np.linspace(-1, 1, grid)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    density = 5.0 - 10 * np.sqrt(x ** 2 + y ** 2 + z ** 2)  # > 0 inside radius 0.5
    v, f = marching_cubes(density, 0.0)
    v = (v / (grid - 1) * 2 - 1).astype(np.float32)
    return Mesh(vertices=v, faces=f, colors=np.full_like(v, 0.5))


def test_mesh_watertight_sampling_and_export(tmp_path):
    mesh = sphere_mesh()
    assert mesh.is_watertight
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(radius - 0.5).max() < 0.03
    points, faces = sample_surface(mesh, 2000, seed=1)
    again, _ = sample_surface(mesh, 2000, seed=1)
    assert np.array_equal(points, again)
    # every sample lies on its triangle's plane and inside it (barycentric >= 0)
    tri = mesh.vertices[mesh.faces[faces]].astype(np.float64)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert np.abs(np.einsum("ij,ij->i", points - tri[:, 0], normal)).max() < 1e-6
    assert np.abs(np.linalg.norm(points, axis=1) - 0.5).max() < 0.03
    open_mesh = Mesh(mesh.vertices, mesh.faces[:-3], mesh.colors)
    assert not open_mesh.is_watertight
    for fmt in ("ply", "obj", "glb"):
        path = export_mesh(mesh, tmp_path / f"sphere.{fmt}")
        loaded = trimesh.load(str(path), force="mesh", process=False)
        assert len(loaded.faces) == len(mesh.faces), fmt
    with pytest.raises(ValueError, match="not supported"):
        export_mesh(mesh, tmp_path / "sphere.stl")


def test_marching_cubes_no_crossing_is_empty():
    v, f = marching_cubes(np.zeros((8, 8, 8)), 3.0)
    assert v.shape == (0, 3) and f.shape == (0, 3)


def test_render_orbit_frames():
    model = load_model("random-tiny", "base", "", "cpu")
    planes = torch.randn(1, 3, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    out = render_orbit(model, planes, n_views=5, resolution=12)
    assert out["frames"].shape == (5, 12, 12, 3) and out["frames"].dtype == np.uint8
    # first and last orbit views coincide (azimuth -pi/2 and 3pi/2); jitter differs, so close only
    assert np.abs(out["frames"][0].astype(int) - out["frames"][-1].astype(int)).mean() < 8
    assert np.allclose(out["cameras"][0], out["cameras"][-1], atol=1e-5)
    mesh = extract_mesh(model, planes, 12, float(model.query_grid(planes, 12)["sigma"].median()))
    assert not mesh.is_empty


def test_bench_rows_tiny():
    import json

    from core.models.lrm.bench import bench
    rows = bench(["--variant", "tiny", "--render-size", "16", "--grid", "16", "--device", "cpu"])
    assert [r["stage"] for r in rows] == ["build model (random init)", "encoder",
                                          "transformer + upsampler (triplanes)", "render one view",
                                          "density grid query", "marching cubes"]
    assert rows[0]["parameters"] == 152796
    assert all(r["seconds"] >= 0 and r["peak_rss_bytes"] > 0 and "random" in r["weights"] for r in rows)
    assert rows[-1]["faces"] > 0
    json.dumps(rows)
