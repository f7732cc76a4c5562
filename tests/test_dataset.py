"""Dataset preparation (core.data.prepare): uploads, image/video checks, object crop, the prepare pipeline and CLI."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data.prepare import DatasetError, crop, frames, uploads
from core.data.scene import Scene
from tests.conftest import SAMPLE


def _jpeg(image: np.ndarray, exif_orientation: int | None = None) -> bytes:
    buffer = io.BytesIO()
    pil = Image.fromarray(image)
    if exif_orientation is None:
        pil.save(buffer, format="JPEG", quality=95)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        pil.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def _sample_files(views):
    return [(f"view_{v:03d}.jpg", (SAMPLE / "images" / f"view_{v:03d}.jpg").read_bytes()) for v in views]


def write_video(path: Path, images, fps: int = 10) -> Path:
    import imageio.v2 as imageio

    with imageio.get_writer(str(path), format="FFMPEG", fps=fps, codec="libx264", quality=8,
                            macro_block_size=16) as writer:
        for image in images:
            writer.append_data(image)
    return path


# --------------------------------------------------------------------------- uploads
def test_uploads_are_stored_under_the_cache_with_safe_names(isolated_cache):
    files = [("../../etc/evil name.JPG", b"x" * 10), ("evil name.JPG", b"y" * 10), (".hidden.png", b"z")]
    batch = uploads.store_uploads(files, "images")
    assert batch.folder.parent == isolated_cache / "uploads"
    assert batch.names == ["evil_name.JPG", "evil_name_1.JPG", "hidden.png"]
    assert [p.read_bytes() for p in batch.paths] == [b"x" * 10, b"y" * 10, b"z"]
    assert uploads.list_upload_batches()[0].names == batch.names


def test_uploads_over_the_limit_or_of_the_wrong_type_are_refused(isolated_cache, monkeypatch):
    monkeypatch.setattr(uploads, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(DatasetError, match="over the"):
        uploads.store_uploads([("big.jpg", b"x" * 101)], "images")
    with pytest.raises(DatasetError, match="not an accepted"):
        uploads.store_uploads([("notes.txt", b"hello")], "images")
    with pytest.raises(DatasetError, match="one video"):
        uploads.store_uploads([("a.mp4", b"1"), ("b.mp4", b"2")], "video")
    assert not (isolated_cache / "uploads").exists() or not any((isolated_cache / "uploads").iterdir())


# --------------------------------------------------------------------------- image checks
def test_exif_orientation_is_honoured(tmp_path):
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, :10] = 255  # a white band on the left
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(_jpeg(np.roll(image, i * 5, axis=1), exif_orientation=6))
    images, names, _ = frames.load_images(sorted(tmp_path.iterdir()))
    assert images[0].shape == (60, 40, 3)  # rotated 90 degrees as the EXIF tag says
    assert images[0][:10].mean() > 200  # the band is now on top


def test_bad_image_sets_give_clear_messages_and_keep_the_uploads(isolated_cache):
    good = _sample_files([0, 1, 2])
    cases = {
        "one": ([good[0]], "at least 3 images"),
        "copies": ([(f"copy{i}.jpg", good[0][1]) for i in range(5)], "only 1 distinct"),
        "corrupt": (good + [("broken.jpg", good[0][1][:200])], "broken.jpg"),
        "sizes": (good + [("small.jpg", _jpeg(np.full((100, 80, 3), 128, np.uint8)))], "different sizes"),
    }
    for label, (files, message) in cases.items():
        batch = uploads.store_uploads(files, "images", batch=label)
        with pytest.raises(DatasetError, match=message):
            frames.load_images(batch.paths)
        assert all(p.is_file() for p in batch.paths), f"{label}: uploads must be kept"


def test_mixed_sizes_are_resized_on_request(isolated_cache):
    small = np.asarray(Image.open(SAMPLE / "images" / "view_003.jpg").resize((240, 320)))
    files = _sample_files([0, 1, 2]) + [("small.jpg", _jpeg(small))]
    batch = uploads.store_uploads(files, "images")
    images, names, notes = frames.load_images(batch.paths, resize=True)
    assert {im.shape for im in images} == {(640, 480, 3)} and len(images) == 4
    assert any("resized 1 image" in n for n in notes)
    # the files a job may send instead of the pixels: only those decoded as they are
    *_, files = frames.load_image_files(batch.paths, resize=True)
    assert files == [*batch.paths[:3], None]


def test_duplicates_are_dropped_with_a_note(isolated_cache):
    files = _sample_files([0, 1, 2]) + [("again.jpg", _sample_files([1])[0][1])]
    batch = uploads.store_uploads(files, "images")
    images, names, notes = frames.load_images(batch.paths)
    assert names == ["view_000.jpg", "view_001.jpg", "view_002.jpg"]
    assert notes == ["again.jpg is identical to view_001.jpg and was skipped"]


# --------------------------------------------------------------------------- video
def test_video_frames_are_sampled_uniformly(tmp_path, sample_scene):
    ramp = [np.full((64, 48, 3), 10 * i, np.uint8) for i in range(20)]
    path = write_video(tmp_path / "ramp.mp4", ramp)
    sampled, indices, info = frames.sample_video_frames(path, 5)
    assert info["total_frames"] == 20
    assert indices == [0, 5, 10, 14, 19]
    assert [abs(int(f.mean()) - 10 * i) <= 3 for f, i in zip(sampled, indices)] == [True] * 5
    strip = frames.preview_strip(sampled, count=5, height=32)
    assert strip.shape == (32, 5 * 24 + 4 * 4, 3)


def test_a_video_without_decodable_frames_is_refused(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(DatasetError, match="broken.mp4: .*decodable"):
        frames.sample_video_frames(path, 10)


# --------------------------------------------------------------------------- object crop
def test_crop_box_geometry():
    rotation = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])  # box x axis = world y
    box = crop.CropBox(np.array([1.0, 2, 3]), rotation, np.array([0.5, 1.0, 2.0]))
    inside = box.contains(np.array([[1.9, 2.4, 3.0], [1.0, 2.6, 3.0], [1.0, 2.0, 5.1]]))
    assert inside.tolist() == [True, False, False]
    assert np.allclose(np.sort(box.corners()[:, 2]), [1] * 4 + [5] * 4)
    moved = box.adjusted(shift=np.array([1.0, 0, 0]), scale=np.array([2.0, 1, 1]), bottom=0.5)
    np.testing.assert_allclose(moved.centre, [1.0, 2.5, 3.5])
    np.testing.assert_allclose(moved.half_extents, [1.0, 1.0, 1.5])
    assert crop.CropBox.from_dict(json.loads(json.dumps(moved.to_dict()))).contains(moved.centre[None])[0]


def test_proposed_crop_holds_the_object_and_not_the_table(sample_scene):
    rng = np.random.default_rng(0)
    table = np.column_stack([rng.uniform(-0.5, 0.5, (20_000, 2)), rng.normal(0, 0.001, 20_000)])
    outside_footprint = np.abs(table[:, :2]).max(axis=1) > 0.2
    points = np.concatenate([sample_scene.gt_points, table])
    box = crop.propose_crop(sample_scene.cam_from_world, points)
    assert box.contains(sample_scene.gt_points).mean() > 0.97
    assert box.contains(table).mean() < 0.01
    assert box.contains(table[outside_footprint]).sum() == 0
    np.testing.assert_allclose(np.abs(box.rotation[:, 2]), [0, 0, 1], atol=0.05)  # stands on the table


# --------------------------------------------------------------------------- prepare + CLI
@pytest.fixture(scope="module")
def prepared_by_cli(tmp_path_factory):
    """``python -m core prepare --images DIR --out SCENE_DIR`` on 8 consecutive sample views (sparse + dense)."""
    import shutil

    import core.__main__ as cli

    root = tmp_path_factory.mktemp("prepare")
    images = root / "photos"
    images.mkdir()
    for v in range(8):
        shutil.copy(SAMPLE / "images" / f"view_{v:03d}.jpg", images / f"photo {v}.jpg")
    out = root / "scene"
    argv = ["prepare", "--images", str(images), "--out", str(out), "--max-features", "1024",
            "--mvs-max-size", "128", "--name", "cli-toy"]
    modules = list(cli.COMMAND_MODULES)
    cli.COMMAND_MODULES[:] = modules + ([] if "core.data.prepare.cli" in modules else ["core.data.prepare.cli"])
    try:
        status = cli.main(argv)
    finally:
        cli.COMMAND_MODULES[:] = modules
    return status, out


def test_cli_prepare_writes_a_scene_in_input_order(prepared_by_cli, sample_scene):
    status, out = prepared_by_cli
    assert status == 0
    scene = Scene.load(out)
    assert scene.name == "cli-toy"
    assert scene.image_names == [f"photo {v}.jpg" for v in range(8)]
    assert scene.intrinsics.shape == (8, 3, 3) and scene.cam_from_world.shape == (8, 4, 4)
    assert scene.registered.all()
    # the views are the inputs, undistorted when COLMAP's lens model found a (here tiny) distortion
    assert np.abs(scene.images[3].astype(int) - sample_scene.images[3].astype(int)).mean() < 3
    if (out / "images_distorted").is_dir():
        from core.data.scene import read_image

        np.testing.assert_array_equal(read_image(out / "images_distorted" / "photo_3.png"), sample_scene.images[3])
    assert (out / "sparse" / "0" / "cameras.bin").is_file() and (out / "database.db").is_file()
    assert scene.depths is not None and scene.depths.shape == (8, 640, 480) and (scene.depths > 0).mean() > 0.05
    assert scene.has_ground_truth and (out / "object.ply").read_bytes().startswith(b"ply\n")
    report = json.loads((out / "prepare.json").read_text())
    assert report["registered"] == 8 and report["object_points"] == len(scene.gt_points)
    # relative poses equal the exact ones (up to the similarity of COLMAP's frame)
    from core.eval import metrics

    errors = metrics.camera_errors(scene.cam_from_world, sample_scene.cam_from_world[:8])
    assert errors["rre_deg"] < 0.5 and errors["rte_deg"] < 1.0


def test_apply_crop_replaces_the_ground_truth(prepared_by_cli):
    _, out = prepared_by_cli
    box = crop.load_crop(out)
    half = box.adjusted(scale=np.array([0.5, 0.5, 0.5]))
    count = crop.apply_crop(out, half)
    scene = Scene.load(out)
    assert len(scene.gt_points) == count and half.contains(scene.gt_points).all()
    points, _ = crop.load_dense(out)
    assert count == int(half.contains(points).sum())
    with pytest.raises(DatasetError, match="holds 0 points"):
        crop.apply_crop(out, crop.CropBox(box.centre + 100, box.rotation, box.half_extents))


def test_cli_bad_input_exits_2_with_a_message(tmp_path, capsys):
    import core.__main__ as cli

    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((SAMPLE / "images" / "view_000.jpg").read_bytes())
    modules = list(cli.COMMAND_MODULES)
    cli.COMMAND_MODULES[:] = modules + ([] if "core.data.prepare.cli" in modules else ["core.data.prepare.cli"])
    try:
        status = cli.main(["prepare", "--images", str(folder), "--out", str(tmp_path / "out")])
        video = tmp_path / "v.mp4"
        video.write_bytes(b"not a video")
        status_video = cli.main(["prepare", "--video", str(video), "--out", str(tmp_path / "out2")])
    finally:
        cli.COMMAND_MODULES[:] = modules
    err = capsys.readouterr().err
    assert status == 2 and "at least 3 images" in err
    assert status_video == 2 and "v.mp4" in err
    assert not (tmp_path / "out" / "scene.json").exists()


def test_scene_save_records_views_already_written_and_refuses_missing_ones(tmp_path, sample_scene):
    """prepare writes COLMAP's PNGs once: Scene.save(image_files=...) records them without encoding again."""
    from core.data.scene import SceneError
    from core.data.sfm import write_colmap_images

    scene = sample_scene.subset([0, 1, 2])
    files = write_colmap_images(tmp_path / "images", scene.images, ["a b.jpg", "a b.png", "c.jpg"])
    assert files == ["a_b.png", "a_b_1.png", "c.png"]
    before = {f: (tmp_path / "images" / f).stat().st_mtime_ns for f in files}
    scene.save(tmp_path, image_files=files)
    assert {f: (tmp_path / "images" / f).stat().st_mtime_ns for f in files} == before  # not rewritten
    loaded = Scene.load(tmp_path)
    for got, expected in zip(loaded.images, scene.images):
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(SceneError, match="one existing file per view"):
        scene.save(tmp_path / "other", image_files=["a_b.png", "missing.png", "c.png"])
