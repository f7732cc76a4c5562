"""The ``lrm`` method end to end (random-tiny weights), its input checks, mesh and checkpoint helpers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh

from core.models import weights
from core.models.lrm import LRM, tiny_config
from core.models.lrm.inference import render_orbit
from core.models.lrm.mesh import Mesh, export_mesh, extract_mesh, marching_cubes, sample_surface
from core.app.figures import renders_from_extra
from core.errors import UserError
from core.models.lrm.method import METHOD, decode_renders
from core.models.lrm.preprocess import crop_object
from core.data.scene import Reconstruction, Scene
from core.runner import RANDOM_NOTE, execute, load_model

TINY = dict(weights="random-tiny", grid_size=24, render_resolution=24, orbit_views=3, num_points=500,
            device="cpu")


def tiny_model(seed: int = 0) -> LRM:
    return METHOD.load(METHOD.parse_options({"weights": "random-tiny", "seed": seed}), "cpu")


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


def test_run_end_to_end_random_tiny(tmp_path):
    scene = make_scene()
    rec = execute(METHOD, scene, [0], TINY)
    assert rec.method == "lrm" and rec.view_ids == [0]
    assert rec.notes[0] == RANDOM_NOTE and rec.weights_kind == "random-tiny"
    assert any("watertight" in n for n in rec.notes)
    assert isinstance(rec.extra["mesh_watertight"], bool)
    assert rec.points.shape == (500, 3) and rec.colors.shape == (500, 3)
    assert np.abs(rec.points).max() <= 1.0 + 1e-6  # canonical box
    assert rec.mesh_faces.max() < len(rec.mesh_vertices) and len(rec.mesh_faces) > 0
    assert rec.mesh_colors.dtype == np.uint8 and rec.mesh_colors.shape == rec.mesh_vertices.shape
    assert rec.renders.shape == (3, 24, 24, 3) and rec.renders.dtype == np.uint8
    assert decode_renders(rec) is rec.renders
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
    again = execute(METHOD, scene, [0], TINY)
    assert np.array_equal(rec.points, again.points) and np.array_equal(rec.renders, again.renders)
    # the round trip through the run store keeps everything; renders travel in the npz, not the JSON
    npz, meta = rec.to_bytes()
    stored = json.loads(meta)
    assert stored["extra"]["mesh_watertight"] == rec.extra["mesh_watertight"]
    assert "renders" not in stored and not any("renders" in key for key in stored["extra"])
    loaded = Reconstruction.load(rec.save(tmp_path / "run"))
    assert np.array_equal(loaded.renders, rec.renders) and loaded.renders.dtype == np.uint8
    assert all(np.array_equal(a, b) for a, b in zip(renders_from_extra(loaded), rec.renders))
    assert len(renders_from_extra(loaded)) == 3


def test_runs_stored_with_base64_png_renders_still_read(tmp_path):
    """Runs stored before renders were an array kept them as base64 PNGs in extra; both readers
    decode them to the same pixels (PNG is lossless)."""
    import base64
    import io

    from PIL import Image

    frames = np.random.default_rng(0).integers(0, 256, (2, 10, 12, 3), dtype=np.uint8)
    encoded = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    old = Reconstruction(method="lrm", points=np.zeros((4, 3)), extra={"renders_png_base64": encoded})
    old = Reconstruction.load(old.save(tmp_path / "old"))
    assert old.renders is None
    assert np.array_equal(decode_renders(old), frames)
    shown = renders_from_extra(old)
    assert len(shown) == 2 and all(np.array_equal(a, b) for a, b in zip(shown, frames))
    none = Reconstruction(method="vggt", points=np.zeros((4, 3)))
    assert decode_renders(none).shape == (0, 0, 0, 3) and renders_from_extra(none) == []


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(UserError, match="mask of the input view is empty"):
        execute(METHOD, make_scene(empty_mask=True), [0], TINY)
    one_pixel = Scene(name="px", images=[np.zeros((1, 1, 3), np.uint8)], image_names=["p.png"],
                      intrinsics=np.eye(3)[None], cam_from_world=np.eye(4)[None])
    with pytest.raises(UserError, match="too small"):
        execute(METHOD, one_pixel, [0], TINY)
    with pytest.raises(UserError, match="at most 1 view"):
        execute(METHOD, make_scene(2), [0, 1], TINY)
    with pytest.raises(UserError, match=r"view ids must be in 0..0; got \[3\]"):
        execute(METHOD, make_scene(), [3], TINY)
    with pytest.raises(UserError, match="unknown variant 'huge' .*small, base, large"):
        execute(METHOD, make_scene(), [0], {**TINY, "variant": "huge"})
    with pytest.raises(UserError, match=r"grid_size must be in \[16, 384\]"):
        execute(METHOD, make_scene(), [0], {**TINY, "grid_size": 4})


def test_availability_and_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path))
    monkeypatch.setattr(weights, "_hf_cached", lambda checkpoint: None)
    assert METHOD.availability(METHOD.parse_options({"weights": "random-tiny"})).ok
    assert METHOD.checkpoints(METHOD.parse_options({"weights": "random-tiny"})) == ()
    status = METHOD.availability(METHOD.parse_options({"variant": "small"}))
    assert not status.ok
    assert "zxhezexin/openlrm-mix-small-1.1" in status.missing and "model.safetensors" in status.missing
    assert status.fix_command == "python -m core weights fetch openlrm-mix-small-1.1"
    assert METHOD.licences(METHOD.parse_options({})) == ["openlrm-mix-base-1.1: CC BY-NC 4.0"]
    with pytest.raises(weights.MissingWeights):
        METHOD.load(METHOD.parse_options({"checkpoint_path": str(tmp_path / "nope.safetensors")}), "cpu")


def test_model_key_holds_seed_only_for_random_weights():
    pretrained = METHOD.model_key(METHOD.parse_options({"seed": 1, "render_resolution": 64}))
    assert pretrained == METHOD.model_key(METHOD.parse_options({}))
    assert dict(pretrained) == {"weights": "pretrained", "variant": "base", "checkpoint_path": ""}
    seeds = [METHOD.model_key(METHOD.parse_options({"weights": "random-tiny", "seed": s})) for s in (0, 1)]
    assert seeds[0] != seeds[1] and dict(seeds[1])["seed"] == 1
    # the runner's cache keeps one model per seed: the seed draws the random weights
    a = load_model(METHOD, METHOD.parse_options({"weights": "random-tiny", "seed": 0}), "cpu")[0]
    b = load_model(METHOD, METHOD.parse_options({"weights": "random-tiny", "seed": 1}), "cpu")[0]
    assert a is not b and not torch.equal(a.pos_embed, b.pos_embed)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), tiny_model(0).state_dict().values()))


def test_pretrained_loader_reads_checkpoint_and_refuses_wrong_one(tmp_path, monkeypatch):
    from safetensors.torch import save_file
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path))
    monkeypatch.setattr("core.models.lrm.method.preset", lambda variant: tiny_config())
    model = LRM(tiny_config())
    path = tmp_path / "openlrm-mix-base-1.1" / "model.safetensors"
    path.parent.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert METHOD.availability(METHOD.parse_options({})).ok
    loaded = METHOD.load(METHOD.parse_options({}), "cpu")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    wrong = tmp_path / "wrong.safetensors"
    state = {k: v for k, v in model.state_dict().items() if k != "pos_embed"}
    save_file(state, str(wrong))
    with pytest.raises(weights.BadCheckpoint, match="pos_embed"):
        METHOD.load(METHOD.parse_options({"checkpoint_path": str(wrong)}), "cpu")


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
    model = tiny_model()
    planes = torch.randn(1, 3, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    out = render_orbit(model, planes, n_views=5, resolution=12)
    assert out["frames"].shape == (5, 12, 12, 3) and out["frames"].dtype == np.uint8
    # first and last orbit views coincide (azimuth -pi/2 and 3pi/2); jitter differs, so close only
    assert np.abs(out["frames"][0].astype(int) - out["frames"][-1].astype(int)).mean() < 8
    assert np.allclose(out["cameras"][0], out["cameras"][-1], atol=1e-5)
    mesh = extract_mesh(model, planes, 12, float(model.query_grid(planes, 12).sigma.median()))
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
