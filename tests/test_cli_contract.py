"""The CLI contract, property-based: every malformed input to ``evaluate``, ``run`` and ``prepare``
exits with status 2, prints exactly one ``error:`` line (no traceback) and leaves the store and
the output folder as they were.

Each example starts from a valid input and applies one corruption drawn by Hypothesis, so every
example is malformed by construction. ``core.__main__.main`` runs in-process (capsys), against a
tiny scene (3 views of 16x16 pixels) and a store with one run in it. Bounded: 30 examples per
command, no deadline.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.__main__ import main
from core.data.scene import Reconstruction, Scene
from core.store.cache import RunStore

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny scene folder, a store holding one run, a folder of 3 images and the paths to write to."""
    root = tmp_path_factory.mktemp("contract")
    rng = np.random.default_rng(0)
    scene = Scene(name="tiny", images=[rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(3)],
                  image_names=["a.png", "b.png", "c.png"],
                  intrinsics=np.repeat(np.array([[[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]]), 3, axis=0),
                  cam_from_world=np.repeat(np.eye(4)[None], 3, axis=0), gt_points=rng.normal(size=(200, 3)))
    scene.save(root / "scene")
    store = RunStore(root / "cache")
    store.save("tiny", "k" * 20, Reconstruction(method="imported", points=rng.normal(size=(50, 3))),
               {"chamfer": 0.246})
    images = root / "images"
    images.mkdir()
    for name, image in zip(scene.image_names, scene.images):
        (images / name).write_bytes((root / "scene" / "images" / name).read_bytes())
    return {"root": root, "scene": root / "scene", "cache": root / "cache", "images": images, "store": store}


def snapshot(*folders: Path) -> dict[str, bytes]:
    out = {}
    for folder in folders:
        if folder.exists():
            out.update({str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()})
    return out


def assert_refused(argv: list[str], world, capsys, monkeypatch, extra_folders=()) -> str:
    monkeypatch.setenv("RECONBENCH_CACHE", str(world["cache"]))
    before = snapshot(world["cache"], world["scene"], *extra_folders)
    capsys.readouterr()
    status = main(["--cache", str(world["cache"]), *argv])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note:")]
    assert status == 2, (argv, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
    assert "Traceback" not in err and out == ""
    assert snapshot(world["cache"], world["scene"], *extra_folders) == before, argv
    return lines[0]


# ------------------------------------------------------------------------------ evaluate
def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def valid_arrays(s: int = 2, h: int = 4, w: int = 5) -> dict:
    rng = np.random.default_rng(1)
    return {"world_points": rng.normal(size=(s, h, w, 3)).astype(np.float32),
            "world_points_conf": np.ones((s, h, w), np.float32)}


@st.composite
def malformed_reconstruction(draw):
    """(file name, bytes, extra CLI arguments) of a reconstruction file that must be refused."""
    kind = draw(st.sampled_from(["object", "complex", "strings", "last_dim", "ndim", "truncated", "garbage",
                                 "nan", "empty", "views_range", "views_duplicate", "views_count", "points",
                                 "suffix", "ply_header", "evaluation_option"]))
    arrays, name, extra = valid_arrays(), "predictions.npz", []
    s = arrays["world_points"].shape[0]
    if kind == "object":
        arrays["world_points"] = np.array([None, 1.0, "x"], dtype=object)
    elif kind == "complex":
        arrays[draw(st.sampled_from(["world_points", "world_points_conf"]))] = arrays["world_points"] * 1j
    elif kind == "strings":
        arrays["world_points"] = np.array(["a", "b"])
    elif kind == "last_dim":
        arrays["world_points"] = np.zeros((s, 4, 5, draw(st.sampled_from([1, 2, 4, 6]))), np.float32)
    elif kind == "ndim":
        shape = draw(st.lists(st.integers(1, 4), min_size=0, max_size=3))
        arrays["world_points"] = np.zeros(shape, np.float32)
    elif kind == "nan":
        arrays["world_points"] = np.full_like(arrays["world_points"], np.nan)
    elif kind == "empty":
        arrays = {"world_points": np.zeros((0, 4, 5, 3), np.float32)}
    elif kind == "views_range":
        extra = ["--views", str(draw(st.integers(-50, -1))), "1"] if draw(st.booleans()) else ["--views", "0", "3"]
    elif kind == "views_duplicate":
        view = str(draw(st.integers(0, 2)))
        extra = ["--views", view, view]
    elif kind == "views_count":
        extra = ["--views"] + [str(v) for v in range(draw(st.sampled_from([1, 3])))]
    elif kind == "points":
        extra = ["--points", draw(st.sampled_from(["0", "-1", "-100", "abc", "1.5", "", "1e12", "nan"]))]
    elif kind == "evaluation_option":
        extra = draw(st.sampled_from([["--alignment", "sideways"], ["--emd-points", "0"], ["--emd-points", "x"],
                                      ["--seed", "-1"], ["--taus", "a,b"], ["--crop-margin", "-0.5"],
                                      ["--min-points", "0"], ["--icp", "maybe"], ["--protocol", "nosuch"]]))
    data = npz(**arrays)
    if kind == "truncated":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif kind == "garbage":
        data = draw(st.binary(min_size=0, max_size=256))
        name = "predictions" + draw(st.sampled_from([".npz", ".ply", ".obj", ".glb"]))
    elif kind == "suffix":
        name = "predictions" + draw(st.sampled_from([".txt", ".npy", "", ".PLY.exe"]))
    elif kind == "ply_header":
        count = draw(st.sampled_from(["-3", "abc", "99999999999"]))
        data = f"ply\nformat binary_little_endian 1.0\nelement vertex {count}\nproperty float x\nend_header\n".encode()
        name = "cloud.ply"
    return name, data, extra


@SETTINGS
@given(case=malformed_reconstruction())
def test_evaluate_refuses_malformed_files_and_arguments(world, capsys, monkeypatch, case):
    name, data, extra = case
    path = world["root"] / "inputs" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    assert_refused(["evaluate", "--scene", str(world["scene"]), "--reconstruction", str(path), *extra],
                   world, capsys, monkeypatch)


# ------------------------------------------------------------------------------ run
def _corrupt_scene(folder: Path, kind: str) -> None:
    if kind == "json_list":
        (folder / "scene.json").write_text("[1, 2]")
    elif kind == "json_garbage":
        (folder / "scene.json").write_bytes(b"\xff{")
    elif kind == "no_cameras":
        (folder / "cameras.npz").unlink()
    elif kind == "cameras_object":
        (folder / "cameras.npz").write_bytes(npz(intrinsics=np.array([None], object),
                                                 cam_from_world=np.zeros((3, 4, 4))))
    elif kind == "cameras_shape":
        (folder / "cameras.npz").write_bytes(npz(intrinsics=np.zeros((2, 3, 3)), cam_from_world=np.zeros((3, 4, 4))))
    elif kind == "image_garbage":
        (folder / "images" / "a.png").write_bytes(b"not a png")
    elif kind == "image_missing":
        (folder / "images" / "b.png").unlink()
    elif kind == "gt_garbage":
        (folder / "gt_points.npz").write_bytes(b"PK\x03\x04garbage")
    elif kind == "gt_no_points":
        (folder / "gt_points.npz").write_bytes(npz(colors=np.zeros((3, 3), np.uint8)))


@st.composite
def malformed_run(draw):
    """(CLI arguments after ``run``, scene corruption or None) that must be refused."""
    kind = draw(st.sampled_from(["views", "option_value", "option_unknown", "option_syntax", "flag_type",
                                 "method", "scene"]))
    args = ["vggt", "--weights", "random-tiny"]
    views = ["--views", "0", "1"]
    corruption = None
    if kind == "views":
        views = ["--views"] + draw(st.sampled_from([["-1", "0"], ["0", "0"], ["0", "3"], ["0", "x"], ["1.5"],
                                                    ["99999999999999999999"]]))
    elif kind == "option_value":
        args += ["--option", draw(st.sampled_from(["weights=3", "device=gpu", "confidence_percentile=150",
                                                   "confidence_percentile=abc", "frames_chunk_size=0",
                                                   "preprocess=", "min_confidence=-1"]))]
    elif kind == "option_unknown":
        args += ["--option", draw(st.text(alphabet="abcxyz_", min_size=1, max_size=8)) + "_zz=1"]
    elif kind == "option_syntax":
        args += ["--option", draw(st.sampled_from(["weights", "=3", "", " =x"]))]
    elif kind == "flag_type":
        args += [draw(st.sampled_from(["--confidence-percentile", "--frames-chunk-size"])),
                 draw(st.sampled_from(["abc", "-5", "1e400", "nan"]))]
    elif kind == "method":
        args[0] = draw(st.sampled_from(["nosuch", "VGGT", "vggt2", ""]))
    else:
        corruption = draw(st.sampled_from(["json_list", "json_garbage", "no_cameras", "cameras_object",
                                           "cameras_shape", "image_garbage", "image_missing", "gt_garbage",
                                           "gt_no_points"]))
    return args + views, corruption


@SETTINGS
@given(case=malformed_run())
def test_run_refuses_malformed_scenes_options_and_views(world, capsys, monkeypatch, case):
    import shutil

    args, corruption = case
    scene = world["scene"]
    if corruption is not None:
        scene = world["root"] / "broken-scene"
        shutil.rmtree(scene, ignore_errors=True)
        shutil.copytree(world["scene"], scene)
        _corrupt_scene(scene, corruption)
    assert_refused(["run", *args[:1], "--scene", str(scene), *args[1:]], world, capsys, monkeypatch)


# ------------------------------------------------------------------------------ prepare
@st.composite
def malformed_prepare(draw):
    """(CLI arguments after ``prepare``, how to spoil the images folder) that must be refused."""
    kind = draw(st.sampled_from(["too_few", "garbage_image", "mixed_sizes", "huge_header", "empty",
                                 "missing_folder", "option", "video", "out_not_scene", "sample"]))
    return kind, draw(st.integers(0, 2))


def _huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` (the data is one empty chunk): a decoder
    would allocate ``3*width*height`` bytes."""
    import struct
    import zlib

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xffffffff)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@SETTINGS
@given(case=malformed_prepare())
def test_prepare_refuses_malformed_inputs(world, capsys, monkeypatch, case):
    import shutil

    kind, which = case
    folder = world["root"] / "prepare-input"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(world["images"], folder)
    names = sorted(p.name for p in folder.iterdir())
    out = world["root"] / "prepare-out"
    shutil.rmtree(out, ignore_errors=True)
    args = ["--images", str(folder), "--out", str(out), "--no-dense", "--threads", "1"]
    if kind == "too_few":
        (folder / names[which]).unlink()
    elif kind == "garbage_image":
        (folder / names[which]).write_bytes(b"\x89PNG not really")
    elif kind == "mixed_sizes":
        from PIL import Image

        Image.new("RGB", (20 + which, 16)).save(folder / names[which])
    elif kind == "huge_header":
        (folder / names[which]).write_bytes(_huge_png_header(60_000, 60_000))
    elif kind == "empty":
        for name in names:
            (folder / name).unlink()
    elif kind == "missing_folder":
        args[1] = str(folder / "nope")
    elif kind == "option":
        args += [["--mvs-max-size", "abc"], ["--frames", "x"], ["--num-threads", "-4"]][which]
    elif kind == "video":
        video = folder / "clip.mp4"
        video.write_bytes(b"\x00" * (which * 50))
        args = ["--video", str(video), "--out", str(out), "--frames", ["10", "2", "-1"][which]]
    elif kind == "out_not_scene":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    else:
        args = ["--sample", ["nosuch", "../toy", ""][which], "--out", str(out)]
    before_out = snapshot(out)
    assert_refused(["prepare", *args], world, capsys, monkeypatch, extra_folders=(out,))
    assert snapshot(out) == before_out and not list(world["root"].glob(".tmp-prepare-*"))


def test_the_store_still_holds_its_one_run(world):
    """The examples above refused everything: the store holds exactly what the fixture put there."""
    (record,) = world["store"].runs()
    assert record.evaluation == {"chamfer": 0.246}
