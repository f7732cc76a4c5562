"""Sparse reconstruction with COLMAP (pycolmap 4.2): images -> cameras, poses, sparse points.

Stages (each reported through :class:`core.progress.Progress` with elapsed time):
SIFT extraction -> matching (exhaustive for small sets, sequential for video frames) ->
incremental mapping -> conversion to ReconBench conventions.

Conventions of the result (:class:`SfmResult`), for the N input images in input order:
- ``intrinsics [N,3,3]`` float64 in pixels with integer coordinates at pixel centres
  (COLMAP puts pixel centres at +0.5, so ``cx_ours = cx_colmap - 0.5``);
- ``cam_from_world [N,4,4]`` float64 world -> camera (OpenCV, like COLMAP), rows of NaN for
  views that did not register;
- ``points [M,3]`` float32 in COLMAP's world frame (arbitrary similarity of the true one),
  ``colors [M,3]`` uint8, ``track_lengths [M]`` int;
- ``distortion [N,4]`` OpenCV coefficients ``(k1, k2, p1, p2)`` of each view's camera (zeros
  for pinhole models), so the images can be undistorted to the pinhole ``intrinsics``.

The COLMAP model is kept as written by COLMAP under ``<workdir>/sparse/0``; the COLMAP log
is collected in ``SfmResult.log``.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import sys
import time
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from core.data.scene import atomic_write_bytes
from core.errors import UserError
from core.options import option, parse
from core.progress import Progress, silent
from core.store.cache import safe_name

log = logging.getLogger(__name__)

CameraModel = Literal["SIMPLE_RADIAL", "SIMPLE_PINHOLE", "PINHOLE", "RADIAL", "OPENCV"]
Matcher = Literal["auto", "exhaustive", "sequential"]
CAMERA_MODELS: tuple[str, ...] = typing.get_args(CameraModel)
MATCHERS: tuple[str, ...] = typing.get_args(Matcher)
EXHAUSTIVE_LIMIT = 60  # "auto" matches exhaustively up to this many images


class SfmError(UserError):
    """COLMAP could not reconstruct the images (too few matches, nothing registered...)."""


@dataclass
class SfmCoreOptions:
    """The SfM choices every reconstruction makes: camera model, features and seed.

    The ``colmap`` method includes exactly this group (its stored runs' keys hash these four
    names), so an option added here changes every COLMAP run key: add it to :class:`SfmOptions`.
    """

    camera_model: CameraModel = option("SIMPLE_RADIAL", "COLMAP camera model (SIMPLE_RADIAL is COLMAP's "
                                                        "default)")
    shared_camera: bool = option(True, "one camera for all views (same device and zoom), else one per view")
    max_features: int = option(4096, "SIFT features per image (4,096: as accurate as COLMAP's 8,192 on 30-view object scenes, with cheaper matching)", min=256, max=16384, step=256)
    seed: int = option(0, "COLMAP's random seed (reproducible runs)", advanced=True)


@dataclass
class SfmOptions(SfmCoreOptions):
    """Options of :func:`run_sfm` (defaults tuned for ~20-60 views of an object on 2 CPU cores):
    the core group plus matching, image size and threads, which matter for large image sets
    and videos.

    ``matcher``: ``exhaustive`` (all pairs), ``sequential`` (video: each frame with its
    ``sequential_overlap`` successors, loop detection off), or ``auto`` (exhaustive up to 60
    images or when not a video, else sequential).
    """

    matcher: Matcher = option("auto", "auto: exhaustive up to 60 images or when not a video, else "
                                      "sequential (each frame with its successors)")
    max_image_size: int = option(1600, "images are downscaled for feature extraction to at most this "
                                       "side (pixels)", min=64, step=64, advanced=True)
    first_octave: int = option(-1, "SIFT's first octave: -1 (COLMAP's default) also detects on the image "
                                    "upsampled 2x (small features, ~2.5x the extraction time), 0 starts at "
                                    "full size", min=-1, max=1, advanced=True)
    sequential_overlap: int = option(10, "neighbours per frame for sequential matching", min=1,
                                     advanced=True)
    num_threads: int = option(-1, "COLMAP threads (-1 = all cores)", min=-1, advanced=True)

    def validate(self) -> None:
        """Raise :class:`core.errors.OptionError` for a value outside the declared types,
        choices and ranges (for instances built directly, not through :func:`core.options.parse`)."""
        parse(type(self), self)


@dataclass
class SfmResult:
    """COLMAP's sparse model in ReconBench conventions (module docstring)."""

    image_names: list[str]
    intrinsics: np.ndarray
    cam_from_world: np.ndarray
    distortion: np.ndarray
    points: np.ndarray
    colors: np.ndarray
    track_lengths: np.ndarray
    point_errors: np.ndarray
    sparse_path: Path | None
    stage_seconds: dict = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    matcher: str = ""

    @property
    def registered(self) -> np.ndarray:
        """``bool [N]`` views with a pose."""
        return np.isfinite(self.cam_from_world).all(axis=(1, 2))

    @property
    def unregistered_names(self) -> list[str]:
        return [n for n, ok in zip(self.image_names, self.registered) if not ok]

    def report(self) -> dict:
        """Registered views out of total, mean reprojection error (px), points, mean track length."""
        return {
            "registered": int(self.registered.sum()),
            "total": len(self.image_names),
            "unregistered": self.unregistered_names,
            "mean_reprojection_error_px": float(self.point_errors.mean()) if len(self.point_errors) else float("nan"),
            "points": int(len(self.points)),
            "mean_track_length": float(self.track_lengths.mean()) if len(self.track_lengths) else 0.0,
            "matcher": self.matcher,
            "stage_seconds": {k: round(v, 2) for k, v in self.stage_seconds.items()},
        }


class _LogCollector:
    """Collects lines for the folded-away COLMAP log (the pages show it in an expander)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        line = f"[{time.perf_counter() - self.started:7.1f} s] {message}"
        self.lines.append(line)
        log.info(message)


@contextlib.contextmanager
def capture_native_stderr(path: Path):
    """Send what native code (COLMAP's glog) writes to file descriptor 2 into ``path``.

    Python's ``sys.stderr`` keeps writing to the original stream meanwhile (CLI progress stays visible).
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):  # no real fd 2 (embedded interpreters): capture nothing
        yield
        return
    python_stderr = sys.stderr
    replacement = None
    try:
        replacement = io.TextIOWrapper(os.fdopen(os.dup(saved), "wb", buffering=0), write_through=True)
        sys.stderr = replacement
    except OSError:
        replacement = None
    with open(path, "ab") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sys.stderr = python_stderr
            if replacement is not None:
                replacement.close()


def colmap_to_opencv_intrinsics(camera) -> tuple[np.ndarray, np.ndarray]:
    """(K 3x3 in pixel-centre convention, OpenCV distortion (k1, k2, p1, p2)) of a pycolmap Camera."""
    model = camera.model.name
    p = np.asarray(camera.params, dtype=np.float64)
    dist = np.zeros(4)
    if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        fx = fy = p[0]
        cx, cy = p[1], p[2]
        if model == "SIMPLE_RADIAL":
            dist[0] = p[3]
        elif model == "RADIAL":
            dist[:2] = p[3:5]
    elif model in ("PINHOLE", "OPENCV"):
        fx, fy, cx, cy = p[:4]
        if model == "OPENCV":
            dist[:] = p[4:8]
    else:
        raise SfmError(f"camera model {model} is not supported")
    k = np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]])
    return k, dist


def _camera_mode(options: SfmOptions):
    import pycolmap

    return pycolmap.CameraMode.SINGLE if options.shared_camera else pycolmap.CameraMode.PER_IMAGE


def write_colmap_images(folder: Path | str, images: list[np.ndarray], names: list[str]) -> list[str]:
    """Write the views ``uint8 HxWx3`` as PNG files COLMAP reads, in input order; returns their file names.

    File names are ``<stem>.png`` with the stem of each (display) name sanitised
    (:func:`core.store.cache.safe_name`) and made unique, so the same ``names`` always give the same
    files (writing again replaces them, e.g. with undistorted views).
    """
    from PIL import Image

    folder = Path(folder)
    files, used = [], set()
    for i, name in enumerate(names):
        stem = Path(safe_name(name, default=f"view_{i:03d}")).stem or f"view_{i:03d}"
        candidate, k = f"{stem}.png", 1
        while candidate.lower() in used:
            candidate = f"{stem}_{k}.png"
            k += 1
        used.add(candidate.lower())
        files.append(candidate)

    def write(image: np.ndarray, file_name: str) -> None:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", compress_level=1)  # lossless; speed first
        atomic_write_bytes(folder / file_name, buffer.getvalue())

    # Pillow's zlib encoder releases the GIL: one thread per core encodes views side by side
    with ThreadPoolExecutor(max_workers=max(1, min(len(files), os.cpu_count() or 1))) as pool:
        list(pool.map(write, images, files))
    return files


def choose_matcher(options: SfmOptions, num_images: int, is_video: bool) -> str:
    """The matcher ``auto`` resolves to: sequential for videos longer than 60 frames, else exhaustive."""
    if options.matcher != "auto":
        return options.matcher
    return "sequential" if is_video and num_images > EXHAUSTIVE_LIMIT else "exhaustive"


def run_sfm(image_dir: Path | str, image_names: list[str], workdir: Path | str,
            options: SfmOptions | None = None, progress: Progress | None = None,
            is_video: bool = False) -> SfmResult:
    """Run COLMAP's sparse pipeline on ``image_names`` (files in ``image_dir``), in input order.

    Args:
        image_dir: folder of the images (COLMAP reads them from disk).
        image_names: file names inside ``image_dir``; their order is the output order.
        workdir: scratch folder; ``database.db`` and ``sparse/0`` (COLMAP's model) are written there
            (an existing database is replaced).
        options: :class:`SfmOptions`.
        progress: progress sink; ``check()`` is called between stages.
        is_video: frames are consecutive (``auto`` may choose sequential matching).
    Returns:
        :class:`SfmResult` for the largest model.
    Raises:
        SfmError when fewer than 2 images or no model could be built.
    """
    import pycolmap

    options = options or SfmOptions()
    options.validate()
    progress = progress or silent()
    image_dir, workdir = Path(image_dir), Path(workdir)
    if len(image_names) < 2:
        raise SfmError(f"COLMAP needs at least 2 images; got {len(image_names)}")
    workdir.mkdir(parents=True, exist_ok=True)
    database = workdir / "database.db"
    database.unlink(missing_ok=True)
    sparse_root = workdir / "sparse"
    if sparse_root.exists():
        shutil.rmtree(sparse_root)
    sparse_root.mkdir(parents=True)
    note = _LogCollector()
    stages: dict[str, float] = {}
    pycolmap.set_random_seed(options.seed)
    colmap_log = workdir / "colmap.log"
    colmap_log.unlink(missing_ok=True)
    try:
        with capture_native_stderr(colmap_log):
            models, matcher = _run_colmap(pycolmap, database, image_dir, image_names, sparse_root, options, progress,
                                          note, stages, is_video)
    finally:
        if colmap_log.is_file():
            lines = colmap_log.read_text(errors="replace").splitlines()
            note.lines.extend(lines[-3000:])
    if not models:
        raise SfmError("COLMAP could not build a model: too few matches between the images "
                       "(they may not overlap, be too similar, or lack texture)")
    best_index = max(models, key=lambda i: models[i].num_reg_images())
    recon = models[best_index]
    note(f"mapping in {stages['mapping']:.1f} s: {len(models)} model(s), largest has "
         f"{recon.num_reg_images()} images and {recon.num_points3D()} points")
    # keep only the chosen model as sparse/0
    chosen = sparse_root / str(best_index)
    if best_index != 0:
        final = sparse_root / "0"
        if final.exists():
            shutil.rmtree(final)
        chosen.rename(final)
    for extra in sparse_root.iterdir():
        if extra.name != "0":
            shutil.rmtree(extra, ignore_errors=True)
    (sparse_root / "0").mkdir(exist_ok=True)
    recon.write(sparse_root / "0")

    result = reconstruction_to_result(recon, image_names, sparse_root / "0")
    result.stage_seconds = stages
    result.log = note.lines
    result.options = asdict(options)
    result.matcher = matcher
    progress(1.0, f"registered {int(result.registered.sum())}/{len(image_names)} views, {len(result.points)} points")
    return result


def _run_colmap(pycolmap, database, image_dir, image_names, sparse_root, options, progress, note, stages,
                is_video):
    """Extraction, matching and mapping; returns (models, matcher name)."""

    # 1. SIFT extraction
    progress(0.0, f"SIFT extraction on {len(image_names)} images")
    started = time.perf_counter()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = options.camera_model
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = options.max_image_size
    extraction.num_threads = options.num_threads
    extraction.sift.max_num_features = options.max_features
    extraction.sift.first_octave = options.first_octave
    pycolmap.extract_features(database, image_dir, image_names=list(image_names),
                              camera_mode=_camera_mode(options), reader_options=reader,
                              extraction_options=extraction, device=pycolmap.Device.cpu)
    stages["extraction"] = time.perf_counter() - started
    note(f"extracted SIFT features ({options.max_features} max per image) in {stages['extraction']:.1f} s")
    progress.check()

    # 2. matching
    matcher = choose_matcher(options, len(image_names), is_video)
    progress(0.3, f"{matcher} matching")
    started = time.perf_counter()
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = options.num_threads
    if matcher == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = options.sequential_overlap
        pycolmap.match_sequential(database, matching_options=matching, pairing_options=pairing,
                                  device=pycolmap.Device.cpu)
    else:
        pycolmap.match_exhaustive(database, matching_options=matching, device=pycolmap.Device.cpu)
    stages["matching"] = time.perf_counter() - started
    with pycolmap.Database.open(database) as db:
        pairs = db.num_verified_image_pairs() if hasattr(db, "num_verified_image_pairs") else None
    note(f"{matcher} matching in {stages['matching']:.1f} s" + (f", {pairs} verified pairs" if pairs is not None else ""))
    progress.check()

    # 3. incremental mapping
    progress(0.6, "incremental mapping")
    started = time.perf_counter()
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = options.num_threads
    mapping.random_seed = options.seed
    mapping.mapper.random_seed = options.seed
    mapping.triangulation.random_seed = options.seed
    mapping.min_model_size = 2 if len(image_names) < 10 else 3
    if len(image_names) < 20:  # few views: accept a weaker initial pair (COLMAP's default asks 100 inliers)
        mapping.mapper.init_min_num_inliers = 50
    registered_count = [0]

    def next_image() -> None:
        registered_count[0] += 1
        progress(0.6 + 0.35 * min(registered_count[0] / len(image_names), 1.0),
                 f"incremental mapping: {registered_count[0] + 1}/{len(image_names)} views")

    models = pycolmap.incremental_mapping(database, image_dir, sparse_root, options=mapping,
                                          next_image_callback=next_image)
    stages["mapping"] = time.perf_counter() - started
    return models, matcher


def reconstruction_to_result(recon, image_names: list[str], sparse_path: Path | None = None) -> SfmResult:
    """Convert a pycolmap Reconstruction to :class:`SfmResult` for ``image_names`` (input order).

    Views absent from the model get NaN poses and the intrinsics of the model's first camera.
    """
    n = len(image_names)
    by_name = {image.name: image for image in recon.images.values()}
    intrinsics = np.full((n, 3, 3), np.nan)
    distortion = np.zeros((n, 4))
    poses = np.full((n, 4, 4), np.nan)
    fallback = None
    for i, name in enumerate(image_names):
        image = by_name.get(name)
        if image is None:
            continue
        k, dist = colmap_to_opencv_intrinsics(recon.cameras[image.camera_id])
        intrinsics[i], distortion[i] = k, dist
        fallback = fallback if fallback is not None else (k, dist)
        if image.has_pose:
            pose = np.eye(4)
            pose[:3, :4] = image.cam_from_world().matrix()
            poses[i] = pose
    if fallback is None and len(recon.cameras):
        fallback = colmap_to_opencv_intrinsics(next(iter(recon.cameras.values())))
    for i in range(n):
        if not np.isfinite(intrinsics[i]).all() and fallback is not None:
            intrinsics[i], distortion[i] = fallback
    ids = list(recon.points3D.keys())
    points = np.array([recon.points3D[j].xyz for j in ids], dtype=np.float32).reshape(-1, 3)
    colors = np.array([recon.points3D[j].color for j in ids], dtype=np.uint8).reshape(-1, 3)
    tracks = np.array([recon.points3D[j].track.length() for j in ids], dtype=np.int64)
    errors = np.array([recon.points3D[j].error for j in ids], dtype=np.float64)
    return SfmResult(image_names=list(image_names), intrinsics=intrinsics, cam_from_world=poses,
                     distortion=distortion, points=points, colors=colors, track_lengths=tracks,
                     point_errors=errors, sparse_path=sparse_path)


def undistort_image(image: np.ndarray, intrinsics: np.ndarray, distortion: np.ndarray) -> np.ndarray:
    """Remove lens distortion, keeping the size and the pinhole ``intrinsics`` (pixel-centre convention).

    Returns the image unchanged when the distortion moves no pixel by more than 0.05 px.
    """
    import cv2

    if not np.any(distortion):
        return image
    h, w = image.shape[:2]
    corners = np.array([[[0, 0]], [[w - 1, 0]], [[0, h - 1]], [[w - 1, h - 1]]], dtype=np.float64)
    moved = cv2.undistortPoints(corners, intrinsics, distortion, P=intrinsics)
    if np.abs(moved - corners).max() < 0.05:
        return image
    return cv2.undistort(image, intrinsics, distortion, newCameraMatrix=intrinsics)


def dense_cuda_available() -> bool:
    """Whether this pycolmap can run PatchMatch stereo (needs a CUDA build)."""
    import pycolmap

    return bool(getattr(pycolmap, "has_cuda", False))


def colmap_dense(sparse_path: Path, image_dir: Path, workdir: Path, progress: Progress | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """COLMAP's CUDA dense pipeline: undistortion + PatchMatch + fusion -> (points [M,3], colors [M,3]).

    Raises SfmError without CUDA, and when fusion returns no point (it does so silently when
    PatchMatch did not run).
    """
    import pycolmap

    progress = progress or silent()
    if not dense_cuda_available():
        raise SfmError("COLMAP PatchMatch stereo needs a CUDA build of pycolmap; use the CPU stereo (core.data.mvs)")
    dense = Path(workdir) / "dense"
    progress(0.0, "undistorting images")
    pycolmap.undistort_images(dense, sparse_path, image_dir)
    progress(0.2, "PatchMatch stereo (CUDA)")
    pycolmap.patch_match_stereo(dense)
    progress(0.8, "stereo fusion")
    fused = pycolmap.stereo_fusion(dense / "fused.ply", dense)
    if fused.num_points3D() == 0:
        raise SfmError("COLMAP stereo fusion returned 0 points (PatchMatch produced no depth maps)")
    ids = list(fused.points3D.keys())
    points = np.array([fused.points3D[j].xyz for j in ids], dtype=np.float32)
    colors = np.array([fused.points3D[j].color for j in ids], dtype=np.uint8)
    progress(1.0, f"fused {len(points)} points")
    return points, colors


# --------------------------------------------------------------------------- accuracy vs ground truth
def pose_errors(pred_cam_from_world: np.ndarray, gt_cam_from_world: np.ndarray, gt_radius: float) -> dict:
    """Camera accuracy of registered views against exact poses.

    Rotation error: angle of ``R_gt R_pred^T`` after aligning the frames (Sim(3) Umeyama on camera
    centres), in degrees. Centre error: distance after the same alignment, as a fraction of
    ``gt_radius`` (the object's bounding radius).
    """
    from core import geometry

    ok = np.isfinite(pred_cam_from_world).all(axis=(1, 2))
    if ok.sum() < 3:
        raise SfmError(f"only {int(ok.sum())} views registered; pose errors need at least 3")
    pred_c = geometry.camera_center(pred_cam_from_world[ok])
    gt_c = geometry.camera_center(gt_cam_from_world[ok])
    sim = geometry.umeyama(pred_c, gt_c)
    scale, rotation, _ = geometry.sim3_parts(sim)
    aligned = geometry.transform_points(sim, pred_c)
    centre_err = np.linalg.norm(aligned - gt_c, axis=1) / gt_radius
    # world rotation of pred camera in gt frame: R_pred_cw @ rotation^T
    pred_r = pred_cam_from_world[ok][:, :3, :3] @ rotation.T
    rot_err = geometry.rotation_angle_deg(pred_r, gt_cam_from_world[ok][:, :3, :3])
    return {"median_rotation_error_deg": float(np.median(rot_err)), "max_rotation_error_deg": float(rot_err.max()),
            "median_centre_error_rel": float(np.median(centre_err)), "max_centre_error_rel": float(centre_err.max()),
            "mean_centre_error_rel": float(centre_err.mean()), "views": int(ok.sum())}
