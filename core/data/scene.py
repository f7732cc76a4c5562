"""Scenes (views + ground truth) and Reconstructions (one method's output).

Conventions (DESIGN.md):
- cameras are OpenCV (x right, y down, z forward);
- ``cam_from_world`` is a 4x4 world -> camera matrix (like COLMAP and VGGT);
- intrinsics are 3x3 in pixels of the image they belong to;
- images ``uint8 HxWx3`` RGB, points ``float32 Nx3``, colours ``uint8 Nx3``,
  depth ``float32 HxW`` (0 = invalid), masks ``bool HxW``.

A Scene folder holds::

    scene.json        name, image names, provenance, units, flags
    cameras.npz       intrinsics [N,3,3] float64, cam_from_world [N,4,4] float64 (NaN = unregistered)
    images/           one lossless PNG or JPEG per view, named as in ``image_names``
    depths.npz        optional: depth [N,H,W] float32; or depths/<stem>.png, 16-bit PNGs of
                      round(depth / depth_scale) with ``depth_scale`` (world units per step) in scene.json
    masks.npz         optional: masks [N,H,W] bool (bit-packed on disk)
    gt_points.npz     optional: points [M,3] float32, colors [M,3] uint8, normals [M,3] float32
    gt_mesh.npz       optional: vertices [V,3] float32, faces [F,3] int32, vertex colours [V,3] uint8

A Reconstruction is stored as ``reconstruction.npz`` (arrays) + ``meta.json`` (everything else).
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps

from core import geometry
from core.errors import UserError

SCENE_FORMAT_VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class SceneError(UserError):
    """A scene folder or a reconstruction file is missing, malformed or inconsistent."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """A compressed ``.npz`` archive of ``arrays`` as bytes (for :func:`atomic_write_bytes`)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(value: Any) -> str:
    """JSON text with numpy scalars/arrays and paths converted."""
    return json.dumps(value, indent=2, sort_keys=True, default=_json_default)


def read_image(source: Path | bytes | io.BytesIO) -> np.ndarray:
    """Decode an image file to ``uint8 HxWx3`` RGB, honouring EXIF orientation.

    Raises SceneError with a readable message on undecodable data, ``core.limits.LimitError``
    (from the header, before decoding) when the image is over the pixel limit.
    """
    from core import limits

    limits.image_size(source)  # LimitError before decoding an image over the pixel limit
    try:
        handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        with Image.open(handle) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except Exception as error:  # PIL raises many types for corrupt data
        name = getattr(source, "name", source if isinstance(source, (str, Path)) else "upload")
        raise SceneError(f"cannot decode image {name}: {error}") from None


@dataclass
class Scene:
    """A set of views of one object with (possibly partial) ground truth.

    Attributes:
        name: short identifier used in the cache (``cache/runs/<name>/...``).
        images: list of N ``uint8 HxWx3`` RGB arrays (all views share one size).
        image_names: N file names, in input order.
        intrinsics: ``float64 [N,3,3]`` pixel intrinsics of each image.
        cam_from_world: ``float64 [N,4,4]`` world -> camera (OpenCV); rows of NaN for views
            that did not register.
        depths: optional ``float32 [N,H,W]`` z-depth in world units, 0 = invalid.
        masks: optional ``bool [N,H,W]`` object masks.
        gt_points: optional ``float32 [M,3]`` object surface points in the world frame.
        gt_colors: optional ``uint8 [M,3]``.
        gt_normals: optional ``float32 [M,3]`` unit outward normals.
        mesh_vertices / mesh_faces / mesh_colors: optional object mesh (world frame).
        provenance: free-form dict (generator, seed, COLMAP options, ...).
        path: folder the scene was loaded from, if any.
    """

    name: str
    images: list[np.ndarray]
    image_names: list[str]
    intrinsics: np.ndarray
    cam_from_world: np.ndarray
    depths: np.ndarray | None = None
    masks: np.ndarray | None = None
    gt_points: np.ndarray | None = None
    gt_colors: np.ndarray | None = None
    gt_normals: np.ndarray | None = None
    mesh_vertices: np.ndarray | None = None
    mesh_faces: np.ndarray | None = None
    mesh_colors: np.ndarray | None = None
    provenance: dict = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        self.validate()

    # ----------------------------------------------------------------- checks
    def validate(self) -> None:
        """Raise SceneError when arrays disagree in count, shape or dtype."""
        n = len(self.images)
        if n == 0:
            raise SceneError("a scene needs at least one view")
        if len(self.image_names) != n:
            raise SceneError(f"{len(self.image_names)} names for {n} images")
        shapes = {image.shape for image in self.images}
        if len(shapes) != 1:
            raise SceneError(f"views have different sizes: {sorted(shapes)}")
        h, w, c = next(iter(shapes))
        if c != 3 or self.images[0].dtype != np.uint8:
            raise SceneError("images must be uint8 HxWx3 RGB")
        self.intrinsics = np.asarray(self.intrinsics, dtype=np.float64)
        self.cam_from_world = np.asarray(self.cam_from_world, dtype=np.float64)
        if self.intrinsics.shape != (n, 3, 3):
            raise SceneError(f"intrinsics must be [{n},3,3], got {list(self.intrinsics.shape)}")
        if self.cam_from_world.shape != (n, 4, 4):
            raise SceneError(f"cam_from_world must be [{n},4,4], got {list(self.cam_from_world.shape)}")
        if self.depths is not None:
            self.depths = np.asarray(self.depths, dtype=np.float32)
            if self.depths.shape != (n, h, w):
                raise SceneError(f"depths must be [{n},{h},{w}], got {list(self.depths.shape)}")
        if self.masks is not None:
            self.masks = np.asarray(self.masks, dtype=bool)
            if self.masks.shape != (n, h, w):
                raise SceneError(f"masks must be [{n},{h},{w}], got {list(self.masks.shape)}")
        if self.gt_points is not None:
            self.gt_points = np.asarray(self.gt_points, dtype=np.float32).reshape(-1, 3)

    # ------------------------------------------------------------ properties
    @property
    def num_views(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every view."""
        return self.images[0].shape[:2]

    @property
    def registered(self) -> np.ndarray:
        """``bool [N]``: views with a finite pose."""
        return np.isfinite(self.cam_from_world).all(axis=(1, 2))

    @property
    def has_ground_truth(self) -> bool:
        return self.gt_points is not None and len(self.gt_points) > 0

    def world_from_cam(self) -> np.ndarray:
        """``float64 [N,4,4]`` camera -> world (NaN for unregistered views)."""
        out = np.full_like(self.cam_from_world, np.nan)
        ok = self.registered
        out[ok] = geometry.invert_transform(self.cam_from_world[ok])
        return out

    def camera_centers(self) -> np.ndarray:
        """``float64 [N,3]`` camera centres in the world frame (NaN when unregistered)."""
        return self.world_from_cam()[:, :3, 3]

    def uniform_views(self, count: int, offset: float = 0.0) -> list[int]:
        """``count`` view indices evenly spaced over the capture order (a 360° orbit for the samples).

        ``offset`` in [0, 1) shifts the start by that fraction of one spacing step (for random subsets).
        """
        if not 1 <= count <= self.num_views:
            raise ValueError(f"choose between 1 and {self.num_views} views; got {count}")
        step = self.num_views / count
        return sorted({int(np.floor((i + offset) * step)) % self.num_views for i in range(count)})

    def subset(self, views: list[int] | np.ndarray) -> "Scene":
        """A new Scene holding only ``views`` (ground truth kept whole)."""
        idx = [int(v) for v in views]
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return Scene(
            name=self.name,
            images=[self.images[i] for i in idx],
            image_names=[self.image_names[i] for i in idx],
            intrinsics=self.intrinsics[idx],
            cam_from_world=self.cam_from_world[idx],
            depths=pick(self.depths),
            masks=pick(self.masks),
            gt_points=self.gt_points,
            gt_colors=self.gt_colors,
            gt_normals=self.gt_normals,
            mesh_vertices=self.mesh_vertices,
            mesh_faces=self.mesh_faces,
            mesh_colors=self.mesh_colors,
            provenance={**self.provenance, "subset_of": self.name, "views": idx},
            path=self.path,
        )

    # -------------------------------------------------------------- storage
    def save(self, folder: Path | str, image_format: str = "png", jpeg_quality: int = 95,
             depth_scale: float | None = None, image_files: list[str] | None = None) -> Path:
        """Write the scene folder (see module docstring).

        Args:
            image_format: ``png`` (lossless, round-trip exact) or ``jpg``.
            depth_scale: when given, depth is stored as 16-bit PNGs of ``round(depth / depth_scale)``
                (world units per step), much smaller than float32 (quantised to half a step);
                otherwise as float32 (exact).
            image_files: names of files already in ``folder/images`` that hold exactly ``images``
                losslessly (e.g. the PNGs the prepare pipeline gave COLMAP): recorded, not encoded again.
        """
        folder = Path(folder)
        (folder / "images").mkdir(parents=True, exist_ok=True)
        suffix = ".png" if image_format == "png" else ".jpg"
        names = []
        if image_files is not None:
            missing = [f for f in image_files if not (folder / "images" / f).is_file()]
            if len(image_files) != len(self.images) or missing:
                raise SceneError(f"image_files must name one existing file per view in {folder / 'images'}")
            names = list(image_files)
        for image, name in zip(self.images if image_files is None else [], self.image_names):
            stem = Path(name).stem
            file_name = stem + suffix
            buffer = io.BytesIO()
            if suffix == ".png":
                # zlib level 1: 12x faster than 9 for 16% more bytes (0.035 s against 0.41 s per
                # 480x640 view), still lossless; scenes are written on the critical path of prepare.
                Image.fromarray(image).save(buffer, format="PNG", optimize=False, compress_level=1)
            else:
                Image.fromarray(image).save(buffer, format="JPEG", quality=jpeg_quality, subsampling=0)
            atomic_write_bytes(folder / "images" / file_name, buffer.getvalue())
            names.append(file_name)
        atomic_write_bytes(folder / "cameras.npz", npz_bytes(
            intrinsics=self.intrinsics, cam_from_world=self.cam_from_world))
        if self.depths is not None:
            if depth_scale is None:
                atomic_write_bytes(folder / "depths.npz", npz_bytes(depth=self.depths.astype(np.float32)))
            else:
                steps = np.round(self.depths.astype(np.float64) / depth_scale)
                if steps.max() >= 65535:
                    raise SceneError("depth does not fit uint16 at this depth_scale")
                for stem, view_steps in zip((Path(n).stem for n in names), steps.astype(np.uint16)):
                    ok, encoded = cv2.imencode(".png", view_steps, [cv2.IMWRITE_PNG_COMPRESSION, 1])
                    atomic_write_bytes(folder / "depths" / f"{stem}.png", encoded.tobytes())
        if self.masks is not None:
            atomic_write_bytes(folder / "masks.npz", npz_bytes(
                packed=np.packbits(self.masks, axis=-1), shape=np.array(self.masks.shape)))
        if self.gt_points is not None:
            arrays = {"points": self.gt_points.astype(np.float32)}
            if self.gt_colors is not None:
                arrays["colors"] = self.gt_colors.astype(np.uint8)
            if self.gt_normals is not None:
                arrays["normals"] = self.gt_normals.astype(np.float32)
            atomic_write_bytes(folder / "gt_points.npz", npz_bytes(**arrays))
        if self.mesh_vertices is not None and self.mesh_faces is not None:
            arrays = {"vertices": self.mesh_vertices.astype(np.float32),
                      "faces": self.mesh_faces.astype(np.int32)}
            if self.mesh_colors is not None:
                arrays["colors"] = self.mesh_colors.astype(np.uint8)
            atomic_write_bytes(folder / "gt_mesh.npz", npz_bytes(**arrays))
        meta = {"format_version": SCENE_FORMAT_VERSION, "name": self.name,
                "image_names": list(self.image_names), "image_files": names,
                "depth_scale": depth_scale if self.depths is not None else None,
                "provenance": self.provenance}
        atomic_write_bytes(folder / "scene.json", to_json(meta).encode())
        self.path = folder
        return folder

    @classmethod
    def load(cls, folder: Path | str) -> "Scene":
        """Read a scene folder written by :meth:`save` (or by ``python -m core prepare``).

        Raises SceneError (one line naming the folder and the problem) for a missing or malformed
        file of any kind: unreadable, bad JSON or JSON of the wrong shape, an archive that is not
        one, arrays of the wrong dtype or shape."""
        try:
            return cls._load(folder)
        except UserError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, EOFError,
                zipfile.BadZipFile) as error:  # what numpy, json and PIL raise for malformed files
            detail = str(error).splitlines()[0][:200] if str(error).strip() else ""
            raise SceneError(f"scene {Path(folder).name} is malformed: {type(error).__name__}"
                             + (f": {detail}" if detail else "")) from None

    @classmethod
    def _load(cls, folder: Path | str) -> "Scene":
        folder = Path(folder)
        meta_path = folder / "scene.json"
        if not meta_path.is_file():
            raise SceneError(f"{_shown(folder)} is not a scene folder (no scene.json)")
        try:
            meta = json.loads(meta_path.read_text())
            cameras = np.load(folder / "cameras.npz")
        except (OSError, ValueError, zipfile.BadZipFile) as error:  # unreadable file, bad JSON, not an npz
            raise SceneError(f"cannot read scene {_shown(folder)}: {str(error).replace(str(folder), folder.name)}") from None
        files = meta.get("image_files", meta["image_names"])
        images = [read_image(folder / "images" / name) for name in files]
        depths = masks = None
        if (folder / "depths.npz").is_file():
            with np.load(folder / "depths.npz") as data:
                depths = data["depth"].astype(np.float32)
        elif meta.get("depth_scale"):
            scale = float(meta["depth_scale"])
            depths = np.stack([
                (cv2.imread(str(folder / "depths" / f"{Path(name).stem}.png"), cv2.IMREAD_UNCHANGED)
                 .astype(np.float64) * scale).astype(np.float32) for name in files])
        if (folder / "masks.npz").is_file():
            with np.load(folder / "masks.npz") as data:
                shape = tuple(int(s) for s in data["shape"])
                masks = np.unpackbits(data["packed"], axis=-1, count=shape[-1]).astype(bool)
        extra: dict[str, Any] = {}
        if (folder / "gt_points.npz").is_file():
            with np.load(folder / "gt_points.npz") as data:
                extra["gt_points"] = data["points"]
                extra["gt_colors"] = data["colors"] if "colors" in data else None
                extra["gt_normals"] = data["normals"] if "normals" in data else None
        if (folder / "gt_mesh.npz").is_file():
            with np.load(folder / "gt_mesh.npz") as data:
                extra["mesh_vertices"] = data["vertices"]
                extra["mesh_faces"] = data["faces"]
                extra["mesh_colors"] = data["colors"] if "colors" in data else None
        return cls(name=meta["name"], images=images, image_names=list(meta["image_names"]),
                   intrinsics=cameras["intrinsics"], cam_from_world=cameras["cam_from_world"],
                   depths=depths, masks=masks, provenance=meta.get("provenance", {}),
                   path=folder, **extra)


def _shown(folder: Path) -> str:
    """A scene folder as messages name it: the path, or on a hosted server only its name."""
    from core.hosted import is_hosted

    return folder.name if is_hosted() else str(folder)


# Arrays a Reconstruction may carry, with their dtypes; everything else goes to meta.json.
_RECON_ARRAYS = {
    "points": np.float32, "colors": np.uint8, "confidence": np.float32, "source_view": np.int32,
    "cam_from_world": np.float64, "intrinsics": np.float64, "depth_maps": np.float32,
    "depth_confidence": np.float32, "point_maps": np.float32, "point_confidence": np.float32,
    "mesh_vertices": np.float32, "mesh_faces": np.int32, "mesh_colors": np.uint8,
    "renders": np.uint8,
}


@dataclass
class Reconstruction:
    """One method's output on a set of views, in the method's own world frame.

    Attributes:
        method: registry name (``vggt``, ``dust3r``, ``imported``, ...).
        version: method version string (part of the cache key).
        points: ``float32 [N,3]`` world-frame points (the method's frame; learned methods use
            the first input view's camera as the world).
        colors: optional ``uint8 [N,3]``.
        confidence: optional ``float32 [N]`` per-point confidence (higher = more certain).
        source_view: optional ``int32 [N]`` index into ``view_ids`` of the view a point came from
            (-1 when not from a view).
        view_ids: indices of the scene's views used as input, in input order.
        cam_from_world: optional ``float64 [V,4,4]`` predicted cameras for ``view_ids``.
        intrinsics: optional ``float64 [V,3,3]`` predicted intrinsics in pixels of the scene's
            original images.
        depth_maps: optional ``float32 [V,h,w]`` predicted z-depth (the method's resolution).
        depth_confidence: optional ``float32 [V,h,w]``.
        point_maps: optional ``float32 [V,h,w,3]`` world-frame point maps.
        point_confidence: optional ``float32 [V,h,w]``.
        mesh_vertices / mesh_faces / mesh_colors: optional mesh.
        renders: optional ``uint8 [K,H,W,3]`` RGB images the method rendered (novel views, orbits).
        options: the options the method ran with (part of the cache key).
        seconds: wall time of the method's run.
        peak_memory_bytes: peak memory (RSS on CPU, allocator peak on CUDA).
        parameter_count: number of model parameters (0 for non-learned methods).
        device: ``cpu``, ``cuda:0``, ...
        weights_kind: ``pretrained`` | ``random-tiny`` | ``random-full`` | ``trained-here``, or
            None for methods without learned weights (COLMAP, imported files).
        notes: human-readable caveats shown with the result (e.g. "random weights").
        extra: any further JSON-serialisable record (stage timings, loss curves...).
    """

    method: str
    points: np.ndarray
    version: str = "1"
    colors: np.ndarray | None = None
    confidence: np.ndarray | None = None
    source_view: np.ndarray | None = None
    view_ids: list[int] = field(default_factory=list)
    cam_from_world: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    depth_maps: np.ndarray | None = None
    depth_confidence: np.ndarray | None = None
    point_maps: np.ndarray | None = None
    point_confidence: np.ndarray | None = None
    mesh_vertices: np.ndarray | None = None
    mesh_faces: np.ndarray | None = None
    mesh_colors: np.ndarray | None = None
    renders: np.ndarray | None = None
    options: dict = field(default_factory=dict)
    seconds: float = 0.0
    peak_memory_bytes: int = 0
    parameter_count: int = 0
    device: str = "cpu"
    weights_kind: str | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float32).reshape(-1, 3)
        for name, dtype in _RECON_ARRAYS.items():
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.asarray(value, dtype=dtype))
        n = len(self.points)
        for name in ("colors", "confidence", "source_view"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise SceneError(f"{name} has {len(value)} rows for {n} points")
        self.view_ids = [int(v) for v in self.view_ids]

    @property
    def has_cameras(self) -> bool:
        return self.cam_from_world is not None and len(self.cam_from_world) > 0

    def meta(self) -> dict:
        """Everything except the arrays, JSON-ready."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name not in _RECON_ARRAYS and f.name != "points":
                out[f.name] = getattr(self, f.name)
        out["num_points"] = int(len(self.points))
        return out

    def to_bytes(self) -> tuple[bytes, bytes]:
        """(``reconstruction.npz`` bytes, ``meta.json`` bytes)."""
        arrays = {"points": self.points}
        for name in _RECON_ARRAYS:
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value
        return npz_bytes(**arrays), to_json(self.meta()).encode()

    def save(self, folder: Path | str) -> Path:
        """Write ``reconstruction.npz`` and ``meta.json`` into ``folder`` (atomically each)."""
        folder = Path(folder)
        npz, meta = self.to_bytes()
        atomic_write_bytes(folder / "reconstruction.npz", npz)
        atomic_write_bytes(folder / "meta.json", meta)
        return folder

    @classmethod
    def load(cls, folder: Path | str) -> "Reconstruction":
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            with np.load(folder / "reconstruction.npz") as data:
                arrays = {name: data[name] for name in data.files}
        except FileNotFoundError as error:
            raise SceneError(f"no reconstruction in {folder}: {error.filename} missing") from None
        meta.pop("num_points", None)
        meta.setdefault("weights_kind", infer_weights_kind(meta))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in meta.items() if k in known}, **arrays)


def infer_weights_kind(meta: dict) -> str | None:
    """The weights kind of a run stored before ``weights_kind`` was recorded, from its options
    (``weights`` = pretrained / random-tiny / random-full, 3D-LMNet's ``shipped`` = trained-here)."""
    if meta.get("weights_kind") is not None:
        return meta["weights_kind"]
    value = (meta.get("options") or {}).get("weights")
    if value in ("pretrained", "random-tiny", "random-full", "trained-here"):
        return value
    if value == "shipped":
        return "trained-here"
    return None


def find_scenes(*roots: Path) -> dict[str, Path]:
    """{scene name: folder} of every scene folder (one holding ``scene.json``) directly under ``roots``.

    Later roots do not override earlier ones (the bundled sample keeps its name).
    """
    found: dict[str, Path] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for meta in sorted(root.glob("*/scene.json")):
            try:
                name = json.loads(meta.read_text()).get("name") or meta.parent.name
            except (OSError, json.JSONDecodeError):
                continue
            found.setdefault(name, meta.parent)
    return found
