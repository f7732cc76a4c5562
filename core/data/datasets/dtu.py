"""DTU MVS (Aanæs et al., 2016): one scan of the official release -> a ReconBench scene folder.

``python -m core datasets import dtu --root ROOT --scan N --out SCENE_DIR`` reads the layout of
the public "MVS Data" release (``N`` is the scan number, ``vvv`` the 1-based camera position)::

    Rectified/scan{N}/rect_{vvv}_{light}_r5000.png   rectified images, 1600x1200; light 0..6
                                                     (3 by default, as MVSNet uses)
    Calibration/cal18/pos_{vvv}.txt                  3x4 projection matrix of position vvv
                                                     (pixels of the full-size Rectified images)
    Points/stl/stl{N:03d}_total.ply                  the structured-light reference points (mm)
    ObsMask/ObsMask{N}_10.mat                        ObsMask (uint8 3-D), BB (2x3, mm), Res (1x1, mm)
    ObsMask/Plane{N}.mat                             P (4-vector): the table plane, object side P·[x,1] > 0

Frames and units: the world is the frame of the STL points, in millimetres; the scene's
``cam_from_world`` [N,4,4] maps it to OpenCV camera coordinates (in mm) and ``intrinsics``
[N,3,3] are in pixels of the rectified images, pixel centres at integer coordinates (the
projection matrices are used as they are, as every DTU pipeline does). The cameras come from
``Calibration``: the MVSNet-style ``Cameras/`` files of the public release belong to 640x512
(and 160x128) resized crops, not to the full-size images.

Every image needs the projection matrix of its position; ``Calibration/cal18`` may hold more
positions than the scan has images (the release calibrates 64 positions and most scans use 49),
and those are left out. A position's image without its matrix is an error.

The evaluation data (observation mask, its box and resolution, the table plane) are copied
into the scene folder as ``dtu_eval.npz`` (:class:`DtuEvalData`) so that
:mod:`core.eval.protocols.dtu` needs nothing but the scene folder.

Bad input raises :class:`DtuError` (a :class:`core.errors.UserError`) with one line naming what
is wrong, and nothing is written: ``--out`` must be missing or empty, and everything is read
and checked before the scene folder is written (into a hidden sibling renamed to ``--out``).
"""
from __future__ import annotations

import argparse
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data.datasets import DatasetFormatError, check_out_folder, write_scene_folder
from core.data.scene import Scene, SceneError, atomic_write_bytes, npz_bytes, read_image, to_json

DEFAULT_LIGHT = 3
EVAL_FILE = "dtu_eval.npz"
IMAGE_PATTERN = "rect_{view:03d}_{light}_r5000.png"
CALIBRATION_DIR = Path("Calibration") / "cal18"


class DtuError(DatasetFormatError):
    """A DTU root, scan or file that cannot be imported; the message says which file and why."""


# --------------------------------------------------------------------------- layout
def image_dir(root: Path, scan: int) -> Path:
    return Path(root) / "Rectified" / f"scan{scan}"


def camera_file(root: Path, view: int) -> Path:
    """``Calibration/cal18/pos_{view:03d}.txt`` (``view`` is the 1-based position number)."""
    return Path(root) / CALIBRATION_DIR / f"pos_{view:03d}.txt"


def stl_file(root: Path, scan: int) -> Path:
    return Path(root) / "Points" / "stl" / f"stl{scan:03d}_total.ply"


def obs_mask_file(root: Path, scan: int) -> Path:
    return Path(root) / "ObsMask" / f"ObsMask{scan}_10.mat"


def plane_file(root: Path, scan: int) -> Path:
    return Path(root) / "ObsMask" / f"Plane{scan}.mat"


# --------------------------------------------------------------------------- cameras
def decompose_projection(projection: np.ndarray, name: str = "projection matrix") -> tuple[np.ndarray, np.ndarray]:
    """Split a 3x4 projection matrix ``P ~ K [R | t]`` into pixel intrinsics and ``cam_from_world``.

    ``P`` is defined up to a non-zero scale, whose sign decides which side of the camera is in
    front. The decomposition first flips ``P`` so that ``det(P[:, :3]) > 0`` (then points in front
    of the camera get a positive depth), takes the RQ decomposition ``P[:, :3] = K R``
    (``scipy.linalg.rq``), moves the signs so that K's diagonal is positive (``K D``, ``D R`` with
    ``D = diag(±1)``, which keeps the product and leaves ``det R = +1``), divides by ``K[2,2]``
    and solves ``t = K⁻¹ P[:, 3]`` with the same scale.

    Args:
        projection: ``[3,4]`` world -> homogeneous pixels (column, row, 1), any non-zero scale.
        name: what to call the matrix in an error (e.g. its file name).
    Returns:
        ``K [3,3]`` float64 (positive focal lengths, ``K[2,2] = 1``, skew kept) and
        ``cam_from_world [4,4]`` float64 (a rotation with ``det = +1`` and a translation, OpenCV).
    Raises:
        DtuError: ``P`` is not 3x4, not finite, or its left 3x3 block is (numerically) singular.
    """
    from scipy.linalg import rq

    p = np.asarray(projection, dtype=np.float64)
    if p.shape != (3, 4):
        raise DtuError(f"{name}: a projection matrix is 3x4, got shape {list(p.shape)}")
    if not np.isfinite(p).all():
        raise DtuError(f"{name}: the projection matrix has NaN or infinite entries")
    m = p[:, :3]
    singular = np.linalg.svd(m, compute_uv=False)
    if singular[0] == 0 or singular[2] <= 1e-12 * singular[0]:
        rank = int(np.sum(singular > 1e-12 * singular[0])) if singular[0] > 0 else 0
        raise DtuError(f"{name}: the projection matrix does not decompose into K[R|t] "
                       f"(its left 3x3 block has rank {rank}, not 3)")
    if np.linalg.det(m) < 0:
        p = -p
        m = p[:, :3]
    k, r = rq(m)
    signs = np.sign(np.diag(k))
    k = k * signs[None, :]
    r = signs[:, None] * r
    scale = k[2, 2]
    k = k / scale
    t = np.linalg.solve(k, p[:, 3] / scale)
    pose = np.eye(4)
    pose[:3, :3] = r
    pose[:3, 3] = t
    return k, pose


def read_projection(path: Path) -> np.ndarray:
    """``[3,4]`` float64 from a ``pos_vvv.txt`` (three lines of four numbers)."""
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as error:
        raise DtuError(f"cannot read {path.name}: {error}") from None
    if values.size != 12:
        raise DtuError(f"{path.name}: expected a 3x4 projection matrix (12 numbers), found {values.size}")
    return values.reshape(3, 4)


# --------------------------------------------------------------------------- evaluation data
@dataclass
class DtuEvalData:
    """What the official evaluation needs besides the STL points (stored as ``dtu_eval.npz``).

    Attributes:
        scan: the scan number.
        obs_mask: ``uint8 [X,Y,Z]`` observation mask, 1 where the structured-light scanner saw;
            voxel ``i`` of an axis covers the coordinate ``BB0 + i·Res`` (mm), to the nearest.
        bb: ``float64 [2,3]`` the mask's box, row 0 the lower corner ``BB0``, row 1 the upper
            ``BB1`` (mm, world frame).
        res: voxel size (mm), the 1x1 ``Res`` of the ``.mat``.
        plane: ``float64 [4]`` the table plane ``P``; the object side is ``P·[x, 1] > 0``.
    """

    scan: int
    obs_mask: np.ndarray
    bb: np.ndarray
    res: float
    plane: np.ndarray

    def to_bytes(self) -> bytes:
        return npz_bytes(scan=np.int64(self.scan), obs_mask=self.obs_mask.astype(np.uint8),
                         bb=self.bb.astype(np.float64), res=np.float64(self.res),
                         plane=self.plane.astype(np.float64))

    @classmethod
    def load(cls, folder: Path | str) -> "DtuEvalData":
        """Read ``<folder>/dtu_eval.npz``; DtuError when the scene was not imported from DTU."""
        path = Path(folder) / EVAL_FILE
        if not path.is_file():
            raise DtuError(f"{folder} has no {EVAL_FILE}: the DTU protocol needs a scene imported "
                           "with `python -m core datasets import dtu`")
        try:
            with np.load(path) as data:
                return cls(scan=int(data["scan"]), obs_mask=data["obs_mask"].astype(np.uint8),
                           bb=data["bb"].astype(np.float64), res=float(data["res"]),
                           plane=data["plane"].astype(np.float64))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise DtuError(f"cannot read {path}: {error}") from None


def _load_mat(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of a MATLAB ``.mat`` (scipy.io.loadmat); DtuError naming a missing key."""
    from scipy.io import loadmat

    try:
        content = loadmat(str(path))
    except Exception as error:  # scipy raises ValueError, TypeError, NotImplementedError (v7.3)...
        raise DtuError(f"cannot read {path.name} as a MATLAB .mat file: {error}") from None
    missing = [key for key in keys if key not in content]
    if missing:
        found = sorted(k for k in content if not k.startswith("__"))
        raise DtuError(f"{path.name} has no {', '.join(missing)} (found: {', '.join(found) or 'nothing'})")
    return {key: np.asarray(content[key]) for key in keys}


def read_eval_data(root: Path, scan: int) -> DtuEvalData:
    """``ObsMask{N}_10.mat`` and ``Plane{N}.mat`` of a scan, checked."""
    mask_path, plane_path = obs_mask_file(root, scan), plane_file(root, scan)
    mat = _load_mat(mask_path, ("ObsMask", "BB", "Res"))
    obs_mask, bb, res = mat["ObsMask"], mat["BB"], mat["Res"]
    if obs_mask.ndim != 3 or obs_mask.size == 0:
        raise DtuError(f"{mask_path.name}: ObsMask must be a 3-D array, got shape {list(obs_mask.shape)}")
    if not (np.issubdtype(obs_mask.dtype, np.number) or obs_mask.dtype == bool):
        raise DtuError(f"{mask_path.name}: ObsMask must be numeric, got {obs_mask.dtype}")
    if bb.size != 6 or not np.issubdtype(bb.dtype, np.number):
        raise DtuError(f"{mask_path.name}: BB must be a 2x3 matrix, got shape {list(bb.shape)}")
    bb = bb.astype(np.float64).reshape(2, 3)
    if not np.isfinite(bb).all() or not (bb[0] < bb[1]).all():
        raise DtuError(f"{mask_path.name}: BB must hold a finite lower corner below the upper one, got {bb.tolist()}")
    if res.size != 1 or not np.issubdtype(res.dtype, np.number) or not float(res.reshape(-1)[0]) > 0:
        raise DtuError(f"{mask_path.name}: Res must be one positive number, got {res.tolist()}")
    plane = _load_mat(plane_path, ("P",))["P"]
    if plane.size != 4 or not np.issubdtype(plane.dtype, np.number):
        raise DtuError(f"{plane_path.name}: P must be a 4-vector, got shape {list(plane.shape)}")
    plane = plane.astype(np.float64).reshape(4)
    if not np.isfinite(plane).all() or not np.any(plane[:3] != 0):
        raise DtuError(f"{plane_path.name}: P is not a plane: {plane.tolist()}")
    return DtuEvalData(scan=scan, obs_mask=(obs_mask != 0).astype(np.uint8), bb=bb,
                       res=float(res.reshape(-1)[0]), plane=plane)


# --------------------------------------------------------------------------- points
def read_stl_points(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``float32 [M,3]`` points (mm) and optional ``uint8 [M,3]`` colours of an STL ``.ply``."""
    import trimesh

    try:
        geometry = trimesh.load(str(path), file_type="ply", process=False)
    except Exception as error:  # trimesh raises many types on a malformed PLY
        raise DtuError(f"cannot read {path.name} as a PLY: {error}") from None
    points = np.asarray(getattr(geometry, "vertices", np.zeros((0, 3))), dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise DtuError(f"{path.name} holds no points")
    if not np.isfinite(points).all():
        raise DtuError(f"{path.name}: the points contain NaN or infinite coordinates")
    colors = getattr(geometry, "colors", None)
    if colors is None or len(colors) != len(points):
        visual = getattr(geometry, "visual", None)
        colors = getattr(visual, "vertex_colors", None) if visual is not None else None
    if colors is not None and len(colors) == len(points):
        colors = np.asarray(colors)[:, :3].astype(np.uint8)
    else:
        colors = None
    return points.astype(np.float32), colors


# --------------------------------------------------------------------------- import
def list_views(root: Path, scan: int, light: int) -> list[int]:
    """1-based positions of the scan's images at ``light``, sorted; DtuError when there are none."""
    folder = image_dir(root, scan)
    pattern = re.compile(rf"rect_(\d{{3}})_{light}_r5000\.png$")
    views = sorted(int(m.group(1)) for m in (pattern.match(p.name) for p in folder.iterdir()) if m)
    if not views:
        lights = sorted({m.group(1) for m in (re.match(r"rect_\d{3}_(\d+)_r5000\.png$", p.name)
                                               for p in folder.iterdir()) if m})
        found = f"lights found: {', '.join(lights)}" if lights else "no rect_vvv_L_r5000.png at all"
        raise DtuError(f"{folder} has no image rect_vvv_{light}_r5000.png for light {light} ({found})")
    return views


def read_scan(root: Path | str, scan: int, light: int = DEFAULT_LIGHT) -> tuple[Scene, DtuEvalData]:
    """Read and check one DTU scan; nothing is written.

    Returns the Scene (images, Calibration cameras, STL points as ``gt_points`` in mm) and the
    evaluation data. Raises DtuError on anything missing or inconsistent.
    """
    root = Path(root)
    if not root.is_dir():
        raise DtuError(f"--root {root} is not a folder")
    if not 0 <= light <= 6:
        raise DtuError(f"the DTU light index is 0..6, got {light}")
    required = [image_dir(root, scan), root / CALIBRATION_DIR, stl_file(root, scan),
                obs_mask_file(root, scan), plane_file(root, scan)]
    missing = [str(path.relative_to(root)) for path in required if not path.exists()]
    if missing:
        raise DtuError(f"{root} is not a DTU MVS root for scan {scan}: missing {', '.join(missing)}")
    views = list_views(root, scan, light)
    cameras_present = [v for v in views if camera_file(root, v).is_file()]
    if len(cameras_present) != len(views):
        lacking = [f"pos_{v:03d}.txt" for v in views if v not in set(cameras_present)]
        raise DtuError(f"scan {scan} has {len(views)} images at light {light} but {len(cameras_present)} of them "
                       f"have a camera in {CALIBRATION_DIR}: missing {', '.join(lacking[:5])}"
                       + (" ..." if len(lacking) > 5 else ""))
    intrinsics, poses = [], []
    for view in views:
        path = camera_file(root, view)
        k, pose = decompose_projection(read_projection(path), path.name)
        intrinsics.append(k)
        poses.append(pose)
    names = [IMAGE_PATTERN.format(view=v, light=light) for v in views]
    images = []
    for name in names:
        try:
            images.append(read_image(image_dir(root, scan) / name))
        except SceneError as error:
            raise DtuError(str(error)) from None
    sizes = sorted({image.shape[:2] for image in images})
    if len(sizes) != 1:
        raise DtuError(f"scan {scan}'s images differ in size: {', '.join(f'{w}x{h}' for h, w in sizes)}")
    height, width = sizes[0]
    for view, k in zip(views, intrinsics):
        if not (0 <= k[0, 2] <= width and 0 <= k[1, 2] <= height):
            raise DtuError(f"pos_{view:03d}.txt's principal point ({k[0, 2]:.1f}, {k[1, 2]:.1f}) lies outside the "
                           f"{width}x{height} images: the Calibration cameras belong to the full-size (1600x1200) "
                           "Rectified images")
    points, colors = read_stl_points(stl_file(root, scan))
    eval_data = read_eval_data(root, scan)
    provenance = {
        "dataset": "DTU MVS",
        "scan": scan,
        "light": light,
        "views": views,
        "source": str(root),
        "units": "millimetres; the world is the frame of the STL reference points",
        "cameras": f"{CALIBRATION_DIR.as_posix()}/pos_vvv.txt projection matrices, RQ-decomposed into K and "
                   "cam_from_world (pixel centres at integer coordinates); the MVSNet-style Cameras/ files of "
                   "the public release are at other resolutions and are not used",
        "ground_truth": f"Points/stl/stl{scan:03d}_total.ply, the structured-light reference points (mm); "
                        "the scanner did not see everywhere: the DTU protocol scores only inside ObsMask",
        "evaluation": f"{EVAL_FILE}: ObsMask{scan}_10.mat (ObsMask, BB, Res) and Plane{scan}.mat (P)",
    }
    try:
        scene = Scene(name=f"dtu_scan{scan}", images=images, image_names=names,
                      intrinsics=np.stack(intrinsics), cam_from_world=np.stack(poses),
                      gt_points=points, gt_colors=colors, provenance=provenance)
    except SceneError as error:
        raise DtuError(f"scan {scan}: {error}") from None
    return scene, eval_data


@dataclass
class _SceneWithEvalData:
    """What :func:`core.data.datasets.write_scene_folder` saves: the scene plus ``dtu_eval.npz``."""

    scene: Scene
    eval_data: DtuEvalData
    path: Path | None = None

    def save(self, folder: Path) -> Path:
        self.scene.save(folder)
        atomic_write_bytes(Path(folder) / EVAL_FILE, self.eval_data.to_bytes())
        return Path(folder)


def write_scene(scene: Scene, eval_data: DtuEvalData, out: Path | str) -> Path:
    """Write the scene folder with ``dtu_eval.npz``, all at once or not at all
    (:func:`core.data.datasets.write_scene_folder`: ``out`` must be missing or an empty folder)."""
    out = write_scene_folder(_SceneWithEvalData(scene, eval_data), out)
    scene.path = out
    return out


def import_scan(root: Path | str, scan: int, out: Path | str, light: int = DEFAULT_LIGHT) -> Scene:
    """Read, check and write one DTU scan as a scene folder ``out`` (see the module docstring)."""
    check_out_folder(out)
    scene, eval_data = read_scan(root, scan, light)
    write_scene(scene, eval_data, out)
    return scene


# --------------------------------------------------------------------------- CLI
def register_import_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m core datasets import dtu``."""
    parser.add_argument("--root", required=True, help="root of the DTU MVS release (Rectified/, Calibration/, "
                                                      "Points/, ObsMask/)")
    parser.add_argument("--scan", required=True, type=int, help="scan number N (Rectified/scanN)")
    parser.add_argument("--out", required=True, help="scene folder to write")
    parser.add_argument("--light", type=int, default=DEFAULT_LIGHT,
                        help=f"lighting index 0..6 of the rectified images (default {DEFAULT_LIGHT}, as MVSNet)")


def cmd_import(args: argparse.Namespace) -> int:
    """``python -m core datasets import dtu``: prints ``{"scene", "views", "points", "image_size"}`` as JSON."""
    scene = import_scan(args.root, args.scan, args.out, getattr(args, "light", DEFAULT_LIGHT))
    height, width = scene.image_size
    print(to_json({"scene": str(scene.path), "name": scene.name, "scan": args.scan,
                   "views": scene.num_views, "image_size": [width, height],
                   "gt_points": int(len(scene.gt_points)), "units": "mm"}))
    return 0

