"""CO3Dv2 (Common Objects in 3D, v2) read in its official layout, one sequence -> a Scene.

Layout under a data set root ``ROOT``::

    ROOT/<category>/frame_annotations.jgz      gzipped JSON list, one object per frame
    ROOT/<category>/sequence_annotations.jgz   gzipped JSON list, one object per sequence
    ROOT/<category>/<sequence>/images/         frameNNNNNN.jpg
    ROOT/<category>/<sequence>/masks/          frameNNNNNN.png, 8-bit object probability
    ROOT/<category>/<sequence>/depths/         frameNNNNNN.jpg.geometric.png, 16-bit PNG holding float16 bits
    ROOT/<category>/<sequence>/depth_masks/    frameNNNNNN.png, where the depth is trusted
    ROOT/<category>/<sequence>/pointcloud.ply  the sequence's point cloud

Frame annotation fields (CO3D's names): ``sequence_name``, ``frame_number``, ``frame_timestamp``,
``image {path, size=[H, W]}``, ``depth {path, scale_adjustment, mask_path}``, ``mask {path, mass}``,
``viewpoint {R, T, focal_length, principal_point, intrinsics_format}``. Sequence annotation
fields: ``sequence_name``, ``category``, ``point_cloud {path, quality_score, n_points}``,
``viewpoint_quality_score``. Paths are relative to ``ROOT``.

Conventions converted here (each has its own test in ``tests/test_co3d.py``):

- Cameras are PyTorch3D's: ``R`` acts on row vectors, ``x_view = x_world @ R + T``, with the view
  axes +X left, +Y up, +Z forward. OpenCV (x right, y down) is ``F = diag(-1, -1, 1)`` of it, so
  ``R_cv = (R F)^T`` and ``t_cv = F T`` (:func:`opencv_cam_from_world`).
- Intrinsics are in NDC units: ``x_ndc = f_x X / Z + p_x`` with +x_ndc to the left. With
  ``intrinsics_format = "ndc_isotropic"`` (CO3Dv2) one scale ``s = min(H, W) / 2`` serves both
  axes; the older ``"ndc_norm_image_bounds"`` scales x by ``W / 2`` and y by ``H / 2``. NDC is
  measured from pixel edges (the image spans ``[0, W]``), ReconBench puts pixel centres at
  integers, so ``f_px = s_x f_x``, ``c_x = W / 2 - s_x p_x - 0.5`` (likewise y)
  (:func:`pixel_intrinsics`).
- Depth = the PNG's 16-bit words read as float16, times ``scale_adjustment``; 0 where the depth
  mask is 0 or the value is not finite (:func:`read_depth`).
- Object masks: the 8-bit mask PNG / 255 > 0.5 (:func:`read_mask`).
- Frames are ordered by ``frame_number``; the images keep their file names and resolution.

Units: CO3D's world frame and scale come from a COLMAP reconstruction of each sequence, so the
scale is arbitrary per sequence (not metric) and comparable only within one sequence.
"""
from __future__ import annotations

import gzip
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.data.datasets import DatasetFormatError, check_out_folder, write_scene_folder
from core.data.scene import IMAGE_SUFFIXES, Scene, read_image
from core.errors import UserError

FRAME_ANNOTATIONS = "frame_annotations.jgz"
SEQUENCE_ANNOTATIONS = "sequence_annotations.jgz"
PYTORCH3D_TO_OPENCV = np.diag([-1.0, -1.0, 1.0])
INTRINSICS_FORMATS = ("ndc_isotropic", "ndc_norm_image_bounds")
MASK_THRESHOLD = 0.5
UNITS = "CO3D's arbitrary per-sequence scale (the sequence's COLMAP reconstruction; not metric)"
GT_POINTS_NOTE = ("pointcloud.ply: the sequence's COLMAP-derived dense cloud, in the cameras' frame and "
                  "units; it has missing regions (surfaces no frame saw well: undersides, thin and "
                  "textureless parts) and some background and noise points")


class Co3dError(DatasetFormatError):
    """A CO3D root, category or sequence lacks what the official layout has; the message says what."""


# ----------------------------------------------------------------------------- conventions
def opencv_cam_from_world(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """OpenCV ``cam_from_world [4,4]`` of a PyTorch3D camera (``x_view = x_world @ R + T``).

    Args:
        rotation: ``R [3,3]`` acting on row vectors; translation: ``T [3]`` (world units).
    Returns:
        ``[[F R^T, F T], [0, 1]]`` with ``F = diag(-1, -1, 1)``, i.e. ``R_cv = (R F)^T``.
    """
    rotation = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    translation = np.asarray(translation, dtype=np.float64).reshape(3)
    out = np.eye(4)
    out[:3, :3] = (rotation @ PYTORCH3D_TO_OPENCV).T
    out[:3, 3] = PYTORCH3D_TO_OPENCV @ translation
    return out


def ndc_scales(intrinsics_format: str, height: int, width: int) -> tuple[float, float]:
    """Pixels per NDC unit ``(s_x, s_y)`` for an image of ``height x width`` pixels."""
    if intrinsics_format == "ndc_isotropic":
        s = min(height, width) / 2.0
        return s, s
    if intrinsics_format == "ndc_norm_image_bounds":
        return width / 2.0, height / 2.0
    raise Co3dError(f"unknown intrinsics_format {intrinsics_format!r}; expected one of "
                    f"{', '.join(INTRINSICS_FORMATS)}")


def pixel_intrinsics(focal_length, principal_point, intrinsics_format: str, height: int, width: int
                     ) -> np.ndarray:
    """``K [3,3]`` in pixels (centres at integers) from CO3D's NDC focal length and principal point.

    ``f_px = s f_ndc`` and ``c = size / 2 - s p_ndc - 0.5`` per axis, with ``s`` from
    :func:`ndc_scales` (NDC's +x is to the left, hence the minus; NDC counts from pixel edges,
    hence the half pixel).
    """
    fx, fy = (float(v) for v in focal_length)
    px, py = (float(v) for v in principal_point)
    sx, sy = ndc_scales(intrinsics_format, height, width)
    return np.array([[sx * fx, 0.0, width / 2.0 - sx * px - 0.5],
                     [0.0, sy * fy, height / 2.0 - sy * py - 0.5],
                     [0.0, 0.0, 1.0]])


def read_depth(path: Path, scale_adjustment: float, depth_mask: np.ndarray | None = None) -> np.ndarray:
    """``float32 [H,W]`` depth (world units) of a CO3D depth PNG; 0 = invalid.

    The PNG's 16-bit words are float16 bit patterns (not integer steps); the value is multiplied
    by ``scale_adjustment``. Non-finite values and pixels where ``depth_mask`` is False become 0.
    """
    words = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if words is None or words.dtype != np.uint16 or words.ndim != 2:
        raise Co3dError(f"{path} is not a single-channel 16-bit PNG (CO3D stores depth as float16 bits)")
    depth = np.ascontiguousarray(words).view(np.float16).astype(np.float32) * np.float32(scale_adjustment)
    depth[~np.isfinite(depth)] = 0.0
    if depth_mask is not None:
        depth[~depth_mask] = 0.0
    return depth


def read_mask(path: Path) -> np.ndarray:
    """``bool [H,W]`` object mask: the 8-bit mask PNG / 255 > 0.5 (CO3D stores a probability)."""
    values = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if values is None:
        raise Co3dError(f"cannot read the mask {path}")
    if values.ndim == 3:
        values = values[..., 0]
    scale = 65535.0 if values.dtype == np.uint16 else 255.0
    return values.astype(np.float64) / scale > MASK_THRESHOLD


def read_depth_mask(path: Path) -> np.ndarray:
    """``bool [H,W]``: where CO3D trusts the depth (any non-zero value of the depth-mask PNG)."""
    values = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if values is None:
        raise Co3dError(f"cannot read the depth mask {path}")
    return (values if values.ndim == 2 else values[..., 0]) > 0


def read_point_cloud(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``points float32 [M,3]`` and optional ``colors uint8 [M,3]`` of a sequence's ``pointcloud.ply``."""
    from core.data.importers import read_mesh_or_cloud

    try:
        cloud = read_mesh_or_cloud(path.read_bytes(), path.name)
    except UserError as error:  # ReconstructionFileError: say which file
        raise Co3dError(f"cannot read the point cloud {path}: {error}") from None
    return np.asarray(cloud.points, np.float32), cloud.colors


# ----------------------------------------------------------------------------- annotations
def read_jgz(path: Path) -> list:
    """The JSON list in a gzipped annotation file (``*.jgz``)."""
    if not path.is_file():
        raise Co3dError(f"{path.parent} has no {path.name}: not a CO3Dv2 category folder")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise Co3dError(f"{path} is not gzipped JSON ({error})") from None
    if not isinstance(value, list):
        raise Co3dError(f"{path} holds a JSON {type(value).__name__}, expected a list of annotations")
    return value


def is_co3d_root(folder: Path) -> bool:
    """Whether ``folder`` holds at least one category folder with a ``frame_annotations.jgz``."""
    folder = Path(folder)
    return folder.is_dir() and any((child / FRAME_ANNOTATIONS).is_file() for child in folder.iterdir()
                                   if child.is_dir())


def find_roots(datasets_folder: Path) -> dict[str, Path]:
    """{name: root} of the CO3D roots in a datasets folder: the folder itself, or its subfolders."""
    datasets_folder = Path(datasets_folder)
    if not datasets_folder.is_dir():
        return {}
    if is_co3d_root(datasets_folder):
        return {datasets_folder.name: datasets_folder}
    return {child.name: child for child in sorted(datasets_folder.iterdir())
            if not child.name.startswith(".") and is_co3d_root(child)}


def list_categories(root: Path) -> list[str]:
    """Category folders of a CO3D root (those with a ``frame_annotations.jgz``), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise Co3dError(f"no such CO3D root: {root}")
    return sorted(child.name for child in root.iterdir() if (child / FRAME_ANNOTATIONS).is_file())


@dataclass
class Co3dCategory:
    """One category's annotations.

    Attributes:
        root: the data set root (annotation paths are relative to it).
        name: category name (its folder).
        frames: raw frame annotations per sequence name, sorted by ``frame_number``.
        sequences: raw sequence annotation per sequence name.
    """

    root: Path
    name: str
    frames: dict[str, list[dict]]
    sequences: dict[str, dict]


def load_category(root: Path, category: str) -> Co3dCategory:
    """Read a category's two annotation files (raises :class:`Co3dError` naming what is missing)."""
    root = Path(root)
    if not root.is_dir():
        raise Co3dError(f"no such CO3D root: {root}")
    folder = root / category
    if not folder.is_dir():
        raise Co3dError(f"{root} has no category folder {category!r}; categories there: "
                        f"{', '.join(list_categories(root)) or 'none'}")
    frames: dict[str, list[dict]] = {}
    for entry in read_jgz(folder / FRAME_ANNOTATIONS):
        if not isinstance(entry, dict) or "sequence_name" not in entry or "frame_number" not in entry:
            raise Co3dError(f"{folder / FRAME_ANNOTATIONS}: an entry lacks sequence_name or frame_number")
        frames.setdefault(str(entry["sequence_name"]), []).append(entry)
    for entries in frames.values():
        entries.sort(key=lambda e: int(e["frame_number"]))
    sequences = {}
    for entry in read_jgz(folder / SEQUENCE_ANNOTATIONS):
        if not isinstance(entry, dict) or "sequence_name" not in entry:
            raise Co3dError(f"{folder / SEQUENCE_ANNOTATIONS}: an entry lacks sequence_name")
        sequences[str(entry["sequence_name"])] = entry
    return Co3dCategory(root=root, name=category, frames=frames, sequences=sequences)


def list_sequences(category: Co3dCategory) -> list[str]:
    """Sequences with both a sequence annotation and frame annotations, sorted."""
    return sorted(set(category.sequences) & set(category.frames))


@dataclass
class Co3dFrame:
    """One annotated frame, cameras already converted (OpenCV, pixels).

    Attributes:
        number, timestamp: ``frame_number`` and ``frame_timestamp`` (seconds).
        image: path of the image; size: (H, W) as annotated.
        intrinsics: ``float64 [3,3]`` pixels; cam_from_world: ``float64 [4,4]`` OpenCV.
        intrinsics_format: the annotation's NDC format.
        mask / depth / depth_mask: paths, or None when the annotation has none.
        scale_adjustment: depth multiplier (1.0 without depth).
    """

    number: int
    timestamp: float
    image: Path
    size: tuple[int, int]
    intrinsics: np.ndarray
    cam_from_world: np.ndarray
    intrinsics_format: str
    mask: Path | None
    depth: Path | None
    depth_mask: Path | None
    scale_adjustment: float

    @property
    def name(self) -> str:
        return self.image.name


def _inside(root: Path, relative, what: str) -> Path:
    """``root / relative``, refusing absolute paths and ``..`` (annotations point inside the root)."""
    if not isinstance(relative, str) or not relative:
        raise Co3dError(f"{what}: missing path")
    path = Path(relative)
    if path.is_absolute() or ".." in path.parts:
        raise Co3dError(f"{what}: path {relative!r} leaves the data set root")
    return root / path


def parse_frame(root: Path, entry: dict) -> Co3dFrame:
    """Convert one frame annotation (see the module docstring for the conventions)."""
    label = f"frame {entry.get('frame_number')} of sequence {entry.get('sequence_name')}"
    try:
        image = entry["image"]
        height, width = (int(v) for v in image["size"])
        viewpoint = entry.get("viewpoint")
        if not viewpoint:
            raise Co3dError(f"{label} has no viewpoint (camera) annotation")
        intrinsics_format = str(viewpoint.get("intrinsics_format", "ndc_norm_image_bounds"))
        rotation = np.asarray(viewpoint["R"], dtype=np.float64)
        translation = np.asarray(viewpoint["T"], dtype=np.float64)
        if rotation.shape != (3, 3) or translation.shape != (3,):
            raise Co3dError(f"{label}: viewpoint R must be 3x3 and T 3 numbers")
        if not (np.isfinite(rotation).all() and np.isfinite(translation).all()):
            raise Co3dError(f"{label}: viewpoint R or T is not finite")
        intrinsics = pixel_intrinsics(viewpoint["focal_length"], viewpoint["principal_point"],
                                      intrinsics_format, height, width)
        depth = entry.get("depth") or None
        mask = entry.get("mask") or None
        return Co3dFrame(
            number=int(entry["frame_number"]), timestamp=float(entry.get("frame_timestamp") or 0.0),
            image=_inside(root, image.get("path"), f"{label} image"), size=(height, width),
            intrinsics=intrinsics, cam_from_world=opencv_cam_from_world(rotation, translation),
            intrinsics_format=intrinsics_format,
            mask=_inside(root, mask["path"], f"{label} mask") if mask and mask.get("path") else None,
            depth=_inside(root, depth["path"], f"{label} depth") if depth and depth.get("path") else None,
            depth_mask=(_inside(root, depth["mask_path"], f"{label} depth mask")
                        if depth and depth.get("mask_path") else None),
            scale_adjustment=float(depth.get("scale_adjustment", 1.0)) if depth else 1.0)
    except (KeyError, TypeError, ValueError) as error:
        raise Co3dError(f"{label}: malformed annotation ({type(error).__name__}: {error})") from None


def sequence_frames(category: Co3dCategory, sequence: str) -> list[Co3dFrame]:
    """The sequence's frames in ``frame_number`` order, with their files checked.

    Raises :class:`Co3dError` when the sequence is not in both annotation files, a frame's image is
    missing, the ``images/`` folder holds images no annotation describes (cameras and images must
    match one to one), or the frames do not share one image size.
    """
    if sequence not in category.sequences or sequence not in category.frames:
        known = list_sequences(category)
        where = "sequence_annotations.jgz" if sequence not in category.sequences else "frame_annotations.jgz"
        raise Co3dError(f"sequence {sequence!r} is not in {category.name}/{where}; known: "
                        f"{', '.join(known[:8]) or 'none'}{' …' if len(known) > 8 else ''}")
    frames = [parse_frame(category.root, entry) for entry in category.frames[sequence]]
    numbers = [f.number for f in frames]
    if len(set(numbers)) != len(numbers):
        raise Co3dError(f"{category.name}/{sequence}: frame numbers repeat in frame_annotations.jgz")
    for frame in frames:
        for path, what in ((frame.image, "image"), (frame.mask, "mask"), (frame.depth, "depth"),
                           (frame.depth_mask, "depth mask")):
            if path is not None and not path.is_file():
                raise Co3dError(f"{category.name}/{sequence}: the {what} of frame {frame.number} is missing "
                                f"({path})")
    folders = {f.image.parent for f in frames}
    on_disk = {p for folder in folders for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    extra = sorted(on_disk - {f.image for f in frames})
    if extra:
        raise Co3dError(f"{category.name}/{sequence}: cameras for {len(frames)} frames but {len(on_disk)} "
                        f"images on disk ({extra[0].name} has no annotation)")
    sizes = {f.size for f in frames}
    if len(sizes) != 1:
        raise Co3dError(f"{category.name}/{sequence}: frames have different sizes {sorted(sizes)}")
    return frames


def read_frame(frame: Co3dFrame) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``image uint8 [H,W,3]``, ``mask bool [H,W]`` (or None), ``depth float32 [H,W]`` (or None).

    A depth map at another resolution is resized to the image's with nearest neighbours.
    """
    image = read_image(frame.image)
    if image.shape[:2] != frame.size:
        raise Co3dError(f"{frame.image} is {image.shape[1]}x{image.shape[0]} but its annotation says "
                        f"{frame.size[1]}x{frame.size[0]} (width x height)")
    mask = read_mask(frame.mask) if frame.mask is not None else None
    if mask is not None and mask.shape != frame.size:
        raise Co3dError(f"{frame.mask} is {mask.shape[1]}x{mask.shape[0]}, its image {frame.size[1]}x{frame.size[0]}")
    depth = None
    if frame.depth is not None:
        trusted = read_depth_mask(frame.depth_mask) if frame.depth_mask is not None else None
        depth = read_depth(frame.depth, frame.scale_adjustment)
        if trusted is not None:
            if trusted.shape != depth.shape:
                raise Co3dError(f"{frame.depth_mask} and {frame.depth} differ in size")
            depth[~trusted] = 0.0
        if depth.shape != frame.size:
            depth = cv2.resize(depth, (frame.size[1], frame.size[0]), interpolation=cv2.INTER_NEAREST)
    return image, mask, depth


def sequence_point_cloud(category: Co3dCategory, sequence: str) -> tuple[np.ndarray | None, np.ndarray | None, dict]:
    """The sequence's ``pointcloud.ply`` (points ``[M,3]``, colours ``[M,3]`` or None) and its annotation."""
    annotation = category.sequences[sequence].get("point_cloud") or {}
    if not annotation.get("path"):
        return None, None, {}
    path = _inside(category.root, annotation["path"], f"{category.name}/{sequence} point cloud")
    if not path.is_file():
        raise Co3dError(f"{category.name}/{sequence}: the point cloud is missing ({path})")
    points, colors = read_point_cloud(path)
    return points, colors, annotation


def parse_sequence_spec(text: str) -> tuple[str, str]:
    """``CATEGORY/SEQUENCE`` -> (category, sequence)."""
    parts = [p for p in str(text).strip().split("/") if p]
    if len(parts) != 2 or any(p in (".", "..") for p in parts):
        raise Co3dError(f"--sequence takes CATEGORY/SEQUENCE (e.g. apple/110_13051_23361), got {text!r}")
    return parts[0], parts[1]


def read_sequence(root: Path, category: str, sequence: str, name: str | None = None) -> Scene:
    """One CO3D sequence as a Scene, everything read and checked in memory (nothing written).

    The Scene holds every annotated frame in ``frame_number`` order (original file names and
    resolution), OpenCV ``cam_from_world`` and pixel intrinsics, object masks, depths (0 where
    invalid) when every frame has one, and ``pointcloud.ply`` as ``gt_points``; its provenance
    states the units and the ground truth's gaps.
    """
    annotations = load_category(Path(root), category)
    frames = sequence_frames(annotations, sequence)
    images, masks, depths = [], [], []
    for frame in frames:
        image, mask, depth = read_frame(frame)
        images.append(image)
        masks.append(mask)
        depths.append(depth)
    points, colors, cloud = sequence_point_cloud(annotations, sequence)
    seq = annotations.sequences[sequence]
    has_masks = all(m is not None for m in masks)
    has_depths = all(d is not None for d in depths)
    return Scene(
        name=name or f"co3d-{category}-{sequence}",
        images=images, image_names=[f.name for f in frames],
        intrinsics=np.stack([f.intrinsics for f in frames]),
        cam_from_world=np.stack([f.cam_from_world for f in frames]),
        masks=np.stack(masks) if has_masks else None,
        depths=np.stack(depths) if has_depths else None,
        gt_points=points, gt_colors=colors,
        provenance={
            "source": "CO3Dv2", "root": str(root), "category": category, "sequence": sequence,
            "frame_numbers": [f.number for f in frames], "frame_timestamps": [f.timestamp for f in frames],
            "intrinsics_format": sorted({f.intrinsics_format for f in frames}),
            "units": UNITS,
            "ground_truth": GT_POINTS_NOTE if points is not None else "none: the sequence has no point cloud",
            "point_cloud_quality_score": cloud.get("quality_score"),
            "viewpoint_quality_score": seq.get("viewpoint_quality_score"),
            "masks": f"masks/*.png / 255 > {MASK_THRESHOLD}" if has_masks else "none",
            "depths": ("depths/*.png float16 bits x scale_adjustment, 0 outside depth_masks"
                       if has_depths else "none"),
            "cameras": "PyTorch3D R,T and NDC intrinsics converted to OpenCV cam_from_world and pixels",
        })


def import_sequence(root: Path, category: str, sequence: str, out: Path, name: str | None = None) -> Scene:
    """Read a sequence (:func:`read_sequence`) and write it as the scene folder ``out`` (all or nothing)."""
    out = check_out_folder(out)
    scene = read_sequence(root, category, sequence, name=name)
    write_scene_folder(scene, out)
    return scene


# ----------------------------------------------------------------------------- command line
def register_import_args(parser) -> None:
    """Flags of ``python -m core datasets import co3d``."""
    parser.add_argument("--root", required=True, help="CO3Dv2 root (holds one folder per category)")
    parser.add_argument("--sequence", required=True, metavar="CATEGORY/SEQUENCE",
                        help="e.g. apple/110_13051_23361")
    parser.add_argument("--out", required=True, help="scene folder to write (must not exist or be empty)")
    parser.add_argument("--name", help="scene name (default: co3d-CATEGORY-SEQUENCE)")


def cmd_import(args) -> int:
    """``python -m core datasets import co3d``: one sequence -> a scene folder; JSON summary on stdout."""
    from core.data.scene import to_json

    category, sequence = parse_sequence_spec(args.sequence)
    scene = import_sequence(Path(args.root), category, sequence, Path(args.out), name=args.name)
    h, w = scene.image_size
    print(to_json({"scene": str(scene.path), "name": scene.name, "views": scene.num_views,
                   "height": h, "width": w, "gt_points": 0 if scene.gt_points is None else len(scene.gt_points),
                   "masks": scene.masks is not None, "depths": scene.depths is not None,
                   "units": UNITS}))
    sys.stdout.flush()
    return 0
