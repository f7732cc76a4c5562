"""Input limits, checked from headers before anything large is allocated.

One place for every bound on what a user (a web upload, a CLI file) can make the server decode:

=====================  ==============================  ==================================================
limit                  environment variable            what it bounds
=====================  ==============================  ==================================================
``image_pixels``       RECONBENCH_MAX_IMAGE_PIXELS      decoded pixels of one image (PIL header, pre-decode)
``upload_pixels``      RECONBENCH_MAX_UPLOAD_PIXELS     decoded pixels of all images of one upload / folder
``video_frames``       RECONBENCH_MAX_VIDEO_FRAMES      frames decoded from one video (streamed, sampled kept)
``points``             RECONBENCH_MAX_POINTS            points (rows) of an .npz array or PLY vertices
``array_bytes``        RECONBENCH_MAX_ARRAY_BYTES       uncompressed bytes of all arrays of one .npz
``views``              RECONBENCH_MAX_VIEWS             views given to one method run
``run_tflops``         RECONBENCH_MAX_RUN_TFLOPS        a run's declared cost (``Method.flops``): the views
                                                        a method accepts, at the pictures' size
=====================  ==============================  ==================================================

Each refusal is a :class:`LimitError` (a :class:`core.errors.UserError`): one line naming the
limit, the value found and the variable that raises it. Values are read from the environment
at each check, so a test or a server can change them without reloading modules.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import UserError


class LimitError(UserError):
    """An input is over one of the limits of this module."""


@dataclass(frozen=True)
class Limit:
    name: str
    env: str
    default: int
    unit: str

    def value(self) -> int:
        raw = os.environ.get(self.env)
        if raw is None or not raw.strip():
            return self.default
        try:
            value = int(float(raw))
        except ValueError:
            raise LimitError(f"{self.env} must be a number; got {raw!r}") from None
        if value <= 0:
            raise LimitError(f"{self.env} must be positive; got {raw!r}")
        return value

    def check(self, amount: int, what: str) -> None:
        """Raise :class:`LimitError` when ``amount`` (in this limit's unit) is over the limit."""
        limit = self.value()
        if amount > limit:
            raise LimitError(f"{what}: {amount:,} {self.unit} is over the {limit:,} {self.unit} limit "
                             f"(raise it with {self.env}=N)")


IMAGE_PIXELS = Limit("image_pixels", "RECONBENCH_MAX_IMAGE_PIXELS", 50_000_000, "pixels")
UPLOAD_PIXELS = Limit("upload_pixels", "RECONBENCH_MAX_UPLOAD_PIXELS", 2_000_000_000, "pixels")
VIDEO_FRAMES = Limit("video_frames", "RECONBENCH_MAX_VIDEO_FRAMES", 20_000, "frames")
POINTS = Limit("points", "RECONBENCH_MAX_POINTS", 50_000_000, "points")
ARRAY_BYTES = Limit("array_bytes", "RECONBENCH_MAX_ARRAY_BYTES", 2 * 1024**3, "bytes")
VIEWS = Limit("views", "RECONBENCH_MAX_VIEWS", 1_000, "views")
# 10 PFLOP: about 100 s at 100 TFLOP/s; VGGT takes ~200 views of 480x640 under it, DUSt3R ~120
RUN_TFLOPS = Limit("run_tflops", "RECONBENCH_MAX_RUN_TFLOPS", 10_000, "TFLOPs")
ALL = (IMAGE_PIXELS, UPLOAD_PIXELS, VIDEO_FRAMES, POINTS, ARRAY_BYTES, VIEWS, RUN_TFLOPS)


def check_run_cost(method, options, n_views: int, height: int, width: int) -> None:
    """Refuse a run whose declared cost (``method.flops``: analytic FLOPs of one forward pass on
    ``n_views`` pictures of ``height x width``) is over :data:`RUN_TFLOPS`; methods that declare no
    cost are not bounded here (only by :data:`VIEWS`)."""
    flops = method.flops(options, n_views, height, width)
    if flops is not None:
        RUN_TFLOPS.check(int(flops // 1e12), f"{method.label} on {n_views} views of {width}x{height}")


def image_size(source: Path | bytes, name: str | None = None) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header (nothing decoded); checks
    :data:`IMAGE_PIXELS`. Undecodable headers are left to the decoder's own message."""
    from PIL import Image

    label = name or (Path(source).name if isinstance(source, (str, Path)) else "image")
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with warnings.catch_warnings():  # PIL's own bomb warning: this module's limit decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(handle) as image:  # reads the header only
                width, height = image.size
    except Exception:  # PIL raises many types for corrupt data; the decoder reports it
        return 0, 0
    IMAGE_PIXELS.check(int(width) * int(height), label)
    return int(width), int(height)


def check_images(sources: list[Path | bytes], names: list[str] | None = None) -> int:
    """Check every image's header and the total decoded pixels of the set; returns the total."""
    names = names or [None] * len(sources)
    total = 0
    for source, name in zip(sources, names):
        width, height = image_size(source, name)
        total += width * height
    UPLOAD_PIXELS.check(total, f"{len(sources)} images")
    return total


_NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: the only dtypes an array input may have


def npz_headers(data: bytes, name: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{array name: (shape, dtype)}`` of an ``.npz`` from its zip directory and each member's
    ``.npy`` header (no array is read). Refuses, with a :class:`LimitError` / ``UserError``, an
    archive that is not a zip of ``.npy`` files, an array of a non-numeric dtype (object, complex,
    strings, structured), and one whose uncompressed bytes or rows exceed :data:`ARRAY_BYTES` /
    :data:`POINTS`."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise UserError(f"{name} is not a readable .npz archive ({error})") from None
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    total = 0
    with archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[:-4]
            try:
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(member)
            except (ValueError, OSError, EOFError, struct.error, zipfile.BadZipFile, RuntimeError) as error:
                raise UserError(f"{name}: array {key!r} has no readable .npy header ({error})") from None
            if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.hasobject:
                raise UserError(f"{name}: array {key!r} has dtype {dtype}; only real numbers are accepted")
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            total += count * dtype.itemsize
            ARRAY_BYTES.check(total, f"{name} (uncompressed)")
            if len(shape) >= 2:
                POINTS.check(count // max(1, int(shape[-1])), f"{name}: {key}")
            out[key] = (tuple(int(s) for s in shape), dtype)
    return out


def ply_vertex_count(data: bytes, name: str) -> int:
    """Vertices declared by a PLY header (``element vertex N``); checks :data:`POINTS` and, for a
    binary PLY, that the file holds at least the declared rows' bytes is left to the reader.
    Returns 0 when the header has no vertex element or is not a PLY header."""
    head = data[:65536]
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        return 0
    count = 0
    for line in head[:end].decode("latin-1").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "element":
            try:
                value = int(parts[2])
            except ValueError:
                raise UserError(f"{name}: malformed PLY header line {line.strip()!r}") from None
            if value < 0:
                raise UserError(f"{name}: negative element count in PLY header")
            POINTS.check(value, f"{name}: {parts[1]} elements")
            if parts[1] == "vertex":
                count = value
    return count


def describe() -> list[dict]:
    """Every limit with its current value and variable (for the README / a settings view)."""
    return [{"limit": item.name, "value": item.value(), "unit": item.unit, "env": item.env} for item in ALL]
