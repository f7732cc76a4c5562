"""Bounded input (core/limits.py): every limit is checked from headers, before the allocation it
prevents, and refused in one line that names the limit and the variable that raises it."""
from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest

from core import limits
from core.data.importers import read_reconstruction
from core.data.scene import read_image
from core.errors import UserError
from tests.test_cli_contract import _huge_png_header
from tests.test_dataset import write_video


def peak_bytes(function) -> tuple[int, BaseException | None]:
    """Peak Python-traced allocation (bytes) while ``function`` runs, and what it raised."""
    tracemalloc.start()
    raised = None
    try:
        function()
    except BaseException as error:  # noqa: BLE001 - returned to the test
        raised = error
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, raised


def test_an_image_over_the_pixel_limit_is_refused_from_its_header():
    data = _huge_png_header(12_000, 12_000)          # 0.1 kB that would decode to 432 MB
    peak, raised = peak_bytes(lambda: read_image(data))
    assert isinstance(raised, limits.LimitError)
    assert str(raised) == ("image: 144,000,000 pixels is over the 50,000,000 pixels limit "
                           "(raise it with RECONBENCH_MAX_IMAGE_PIXELS=N)")
    assert peak < 5 * 2**20                           # nothing near the decoded size was allocated


def test_the_limits_follow_their_environment_variables(monkeypatch):
    monkeypatch.setenv("RECONBENCH_MAX_IMAGE_PIXELS", "100")
    buffer = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (11, 10)).save(buffer, format="PNG")
    with pytest.raises(limits.LimitError, match="110 pixels is over the 100 pixels limit"):
        read_image(buffer.getvalue())
    monkeypatch.setenv("RECONBENCH_MAX_IMAGE_PIXELS", "110")
    assert read_image(buffer.getvalue()).shape == (10, 11, 3)
    monkeypatch.setenv("RECONBENCH_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(limits.LimitError, match="RECONBENCH_MAX_IMAGE_PIXELS must be a number; got 'lots'"):
        read_image(buffer.getvalue())


def test_an_upload_is_bounded_in_total_pixels_before_anything_is_written(isolated_cache, monkeypatch):
    from PIL import Image

    from core.data.prepare.uploads import store_uploads

    files = []
    for i in range(3):
        buffer = io.BytesIO()
        Image.new("RGB", (10, 10), (i, 0, 0)).save(buffer, format="PNG")
        files.append((f"{i}.png", buffer.getvalue()))
    monkeypatch.setenv("RECONBENCH_MAX_UPLOAD_PIXELS", "299")
    with pytest.raises(limits.LimitError, match="3 images: 300 pixels is over the 299 pixels limit "
                                                r"\(raise it with RECONBENCH_MAX_UPLOAD_PIXELS=N\)"):
        store_uploads(files)
    assert not (isolated_cache / "uploads").exists()
    monkeypatch.setenv("RECONBENCH_MAX_UPLOAD_PIXELS", "300")
    assert len(store_uploads(files).names) == 3


def npz_compressed(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def test_an_npz_is_bounded_by_its_uncompressed_size_and_points(monkeypatch):
    points = np.zeros((1, 100, 100, 3), np.float32)   # 120,000 bytes that compress to ~0.2 kB
    data = npz_compressed(world_points=points)
    assert len(data) < 2_000
    assert limits.npz_headers(data, "p.npz") == {"world_points": ((1, 100, 100, 3), np.dtype("float32"))}
    monkeypatch.setenv("RECONBENCH_MAX_ARRAY_BYTES", "100000")
    with pytest.raises(limits.LimitError, match=r"p.npz \(uncompressed\): 120,000 bytes is over the 100,000 bytes "
                                                r"limit \(raise it with RECONBENCH_MAX_ARRAY_BYTES=N\)"):
        read_reconstruction(data, "p.npz")
    monkeypatch.delenv("RECONBENCH_MAX_ARRAY_BYTES")
    monkeypatch.setenv("RECONBENCH_MAX_POINTS", "9999")
    with pytest.raises(limits.LimitError, match="p.npz: world_points: 10,000 points is over the 9,999 points limit"):
        read_reconstruction(data, "p.npz")


@pytest.mark.parametrize("dtype, shown", [(object, "object"), (np.complex64, "complex64"), ("<U2", "<U2")])
def test_npz_arrays_of_non_real_dtypes_are_refused(dtype, shown):
    buffer = io.BytesIO()
    np.savez(buffer, world_points=np.zeros((1, 2, 2, 3)).astype(dtype))
    with pytest.raises(UserError, match=f"p.npz: array 'world_points' has dtype {shown}; only real numbers"):
        read_reconstruction(buffer.getvalue(), "p.npz")


def test_a_ply_is_bounded_by_its_header_vertex_count(monkeypatch):
    header = b"ply\nformat binary_little_endian 1.0\nelement vertex 2000000000\nproperty float x\nend_header\n"
    with pytest.raises(limits.LimitError, match="cloud.ply: vertex elements: 2,000,000,000 points is over"):
        read_reconstruction(header, "cloud.ply")
    monkeypatch.setenv("RECONBENCH_MAX_POINTS", "4")
    from core.data.importers import ply_bytes

    assert limits.ply_vertex_count(ply_bytes(np.zeros((4, 3))), "ok.ply") == 4
    with pytest.raises(limits.LimitError, match="5 points is over the 4 points limit"):
        read_reconstruction(ply_bytes(np.zeros((5, 3))), "five.ply")


def test_a_video_is_bounded_in_frames_and_keeps_only_the_sampled_ones(tmp_path, monkeypatch):
    from core.data.prepare.frames import sample_video_frames

    ramp = [np.full((32, 32, 3), 12 * i, np.uint8) for i in range(12)]
    path = write_video(tmp_path / "ramp.mp4", ramp)
    monkeypatch.setenv("RECONBENCH_MAX_VIDEO_FRAMES", "11")
    with pytest.raises(limits.LimitError, match="ramp.mp4: 12 frames is over the 11 frames limit "
                                                r"\(raise it with RECONBENCH_MAX_VIDEO_FRAMES=N\)"):
        sample_video_frames(path, 4)
    monkeypatch.setenv("RECONBENCH_MAX_VIDEO_FRAMES", "12")
    sampled, indices, info = sample_video_frames(path, 4)
    assert indices == [0, 4, 7, 11] and len(sampled) == 4 and info["total_frames"] == 12
    assert [abs(int(f.mean()) - 12 * i) <= 3 for f, i in zip(sampled, indices)] == [True] * 4


def test_view_counts_are_bounded(monkeypatch):
    from core.models.registry import check_view_ids

    monkeypatch.setenv("RECONBENCH_MAX_VIEWS", "2")
    assert check_view_ids([0, 1], 5) == [0, 1]
    with pytest.raises(limits.LimitError, match=r"view ids: 3 views is over the 2 views limit \(raise it with "
                                                r"RECONBENCH_MAX_VIEWS=N\)"):
        check_view_ids([0, 1, 2], 5)


def test_describe_lists_every_limit_with_its_variable(monkeypatch):
    monkeypatch.setenv("RECONBENCH_MAX_POINTS", "7")
    rows = {row["limit"]: row for row in limits.describe()}
    assert set(rows) == {"image_pixels", "upload_pixels", "video_frames", "points", "array_bytes", "views",
                         "run_tflops"}
    assert rows["points"] == {"limit": "points", "value": 7, "unit": "points", "env": "RECONBENCH_MAX_POINTS"}


def test_a_run_is_bounded_by_its_method_s_declared_cost(monkeypatch, sample_scene):
    from core.models import registry
    from core.runner import prepare_call

    method = registry.get("vggt")
    options = method.parse_options({"weights": "random-full"})
    h, w = sample_scene.image_size
    tflops = int(method.flops(options, 3, h, w) // 1e12)            # what 3 views of the sample declare
    assert prepare_call(method, sample_scene, [0, 1, 2], options)[1] == [0, 1, 2]
    monkeypatch.setenv("RECONBENCH_MAX_RUN_TFLOPS", str(tflops - 1))
    with pytest.raises(limits.LimitError, match=f"VGGT.* on 3 views of {w}x{h}: {tflops:,} TFLOPs is over the "
                                                f"{tflops - 1:,} TFLOPs limit"):
        prepare_call(method, sample_scene, [0, 1, 2], options)
    assert prepare_call(method, sample_scene, [0], options)[1] == [0]   # fewer views fit
