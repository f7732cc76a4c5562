"""The prepare pipeline: views -> COLMAP sparse -> dense stereo -> object crop -> a Scene folder.

:func:`prepare` writes the folder described in :mod:`core.data.prepare`; :func:`prepare_from_scene_views`
prepares views of a scene that has an exact ground truth and scores the result against it (the
``sfm`` benchmark). All geometry stays in COLMAP's world frame (metric scale unknown).
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from core.data import mvs, sfm
from core.data.importers import ply_bytes
from core.data.prepare import MIN_VIEWS, DatasetError
from core.data.prepare.crop import CropBox, propose_crop, write_crop
from core.data.scene import Reconstruction, Scene, atomic_write_bytes, npz_bytes, to_json
from core.data.sfm import SfmError, SfmOptions, SfmResult
from core.options import option
from core.progress import Progress, silent
from core.store.cache import cache_root, safe_name

log = logging.getLogger(__name__)


@dataclass
class PrepareOptions(SfmOptions):
    """Options of :func:`prepare`: the SfM group (:class:`core.data.sfm.SfmOptions`, included)
    plus dense stereo and image handling."""

    dense: bool = option(True, "dense stereo after the sparse reconstruction (the ground truth's "
                               "dense cloud); off: stop after the sparse model")
    mvs_max_size: int = option(256, "longest side of the CPU stereo's depth maps (pixels)",
                               min=64, max=2048, step=32)
    mvs_depths: int = option(96, "depth hypotheses per pixel of the CPU plane sweep", min=8, max=512,
                             step=8, advanced=True)
    resize: bool = option(False, "resize images of other sizes to the most common size (else refuse "
                                 "mixed sizes)")

    @property
    def sfm(self) -> SfmOptions:
        """The SfM group of these options."""
        return SfmOptions(**{f.name: getattr(self, f.name) for f in fields(SfmOptions)})

    def mvs_scale(self, image_size: tuple[int, int]) -> float:
        """Depth-map scale for images of ``image_size`` (H, W): longest side at most ``mvs_max_size``."""
        return min(1.0, self.mvs_max_size / max(image_size))


@dataclass
class PrepareResult:
    """What :func:`prepare` wrote: the scene folder, its report and the parts the page shows."""

    folder: Path
    scene: Scene
    report: dict
    sfm: SfmResult
    dense_points: np.ndarray | None
    dense_colors: np.ndarray | None
    crop: CropBox | None
    log: list[str]


def scenes_root() -> Path:
    """Where prepared scenes go by default: ``cache_root()/scenes``."""
    return cache_root() / "scenes"


def default_scene_dir(name: str) -> Path:
    """``scenes_root()/<sanitised name>``."""
    return scenes_root() / safe_name(name)


def _clear_earlier_preparation(out: Path) -> None:
    if (out / "scene.json").exists() or (out / "sparse").exists():
        for child in ("images", "images_distorted", "sparse", "dense"):
            shutil.rmtree(out / child, ignore_errors=True)
        for child in ("database.db", "depths.npz", "gt_points.npz", "crop.json", "object.ply", "scene.json",
                      "masks.npz", "prepare.json"):
            (out / child).unlink(missing_ok=True)


def prepare(images: list[np.ndarray], names: list[str], out: Path | str, scene_name: str | None = None,
            options: PrepareOptions | None = None, progress: Progress | None = None, is_video: bool = False,
            provenance: dict | None = None) -> PrepareResult:
    """Images -> COLMAP sparse -> dense (CUDA COLMAP or CPU stereo) -> object crop -> Scene folder ``out``.

    Args:
        images: N ``uint8 HxWx3`` of one size (see :func:`core.data.prepare.frames.load_images`).
        names: N display names (input order is kept everywhere).
        out: the scene folder to write (replaced if it holds an earlier preparation).
        scene_name: name shown in the picker (default: the folder's name).
        is_video: frames are consecutive (sequential matching for long videos).
        provenance: recorded in scene.json (source, frame indices...).
    Raises:
        DatasetError / SfmError / MvsError with a one-line message; ``core.progress.Stopped`` when stopped.
    """
    options = options or PrepareOptions()
    progress = progress or silent()
    out = Path(out)
    if len(images) < MIN_VIEWS:
        raise DatasetError(f"at least {MIN_VIEWS} images are needed; got {len(images)}")
    if len({image.shape for image in images}) != 1:
        raise DatasetError("all images must have one size (see load_images(resize=True))")
    scene_name = safe_name(scene_name or out.name)
    stages: dict[str, float] = {}
    _clear_earlier_preparation(out)
    started = time.perf_counter()
    progress(0.0, f"writing {len(images)} images")
    files = sfm.write_colmap_images(out / "images", images, names)
    stages["write_images"] = time.perf_counter() - started

    sfm_progress = progress.sub(0.02, 0.45 if options.dense else 0.9)
    result = sfm.run_sfm(out / "images", files, out, options.sfm, sfm_progress, is_video=is_video)
    result.image_names = list(names)
    stages.update(result.stage_seconds)
    registered = result.registered
    if registered.sum() < 2:
        raise SfmError(f"only {int(registered.sum())} of {len(images)} views registered; nothing to build on")

    # undistort to pinhole intrinsics when the lens model found distortion
    views = list(images)
    undistorted = False
    for i in range(len(views)):
        fixed = sfm.undistort_image(views[i], result.intrinsics[i], result.distortion[i])
        if fixed is not views[i]:
            views[i], undistorted = fixed, True
    if undistorted:
        shutil.copytree(out / "images", out / "images_distorted", dirs_exist_ok=True)
        sfm.write_colmap_images(out / "images", views, names)

    dense_points = dense_colors = None
    depths = None
    dense_info: dict = {"method": "none"}
    if options.dense:
        progress.check()
        started = time.perf_counter()
        dense_progress = progress.sub(0.45, 0.92)
        if sfm.dense_cuda_available():
            try:
                dense_points, dense_colors = sfm.colmap_dense(result.sparse_path, out / "images_distorted"
                                                              if undistorted else out / "images", out, dense_progress)
                dense_info = {"method": "colmap-patchmatch (CUDA)", "points": int(len(dense_points))}
            except (SfmError, RuntimeError) as error:  # pycolmap reports native failures as RuntimeError
                log.warning("COLMAP dense failed (%s); using the CPU stereo", error)
        if dense_points is None:
            mvs_options = mvs.MvsOptions(scale=options.mvs_scale(views[0].shape[:2]), num_depths=options.mvs_depths)
            dense = mvs.run_mvs(views, result.intrinsics, result.cam_from_world, result.points,
                                mvs_options, dense_progress)
            dense_points, dense_colors = dense.points, dense.colors
            depths = mvs.upsample_depths(dense.depths, views[0].shape[:2])
            dense_info = {"method": "cpu plane-sweep stereo (core.data.mvs)", "points": int(len(dense_points)),
                          "options": asdict(mvs_options), "stage_seconds": dense.stage_seconds}
            atomic_write_bytes(out / "dense" / "fused.npz", npz_bytes(points=dense.points, colors=dense.colors,
                                                                      confidence=dense.confidence,
                                                                      source_view=dense.source_view))
        else:
            atomic_write_bytes(out / "dense" / "fused.npz", npz_bytes(points=dense_points, colors=dense_colors))
        atomic_write_bytes(out / "dense" / "fused.ply", ply_bytes(dense_points, dense_colors))
        stages["dense"] = time.perf_counter() - started
        if len(dense_points) == 0:
            raise SfmError("the dense stereo produced no point (too little texture or overlap)")

    progress(0.93, "proposing the object crop")
    cloud = dense_points if dense_points is not None and len(dense_points) else result.points
    colors = dense_colors if dense_points is not None and len(dense_points) else result.colors
    crop = propose_crop(result.cam_from_world, cloud)
    inside = crop.contains(cloud)
    report = result.report()
    report.update({"dense": dense_info, "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
                   "undistorted": undistorted, "object_points": int(inside.sum()),
                   "crop": crop.to_dict(), "sfm_options": asdict(options.sfm)})
    scene = Scene(name=scene_name, images=views, image_names=list(names), intrinsics=result.intrinsics,
                  cam_from_world=result.cam_from_world, depths=depths,
                  gt_points=cloud[inside].astype(np.float32), gt_colors=colors[inside].astype(np.uint8),
                  provenance={"generator": "core.data.prepare.pipeline.prepare", "ground_truth": "COLMAP sparse + "
                              + dense_info["method"] + ", object crop", "units": "COLMAP (arbitrary scale)",
                              "world": "COLMAP's frame", **(provenance or {}),
                              "report": {k: v for k, v in report.items() if k != "crop"}})
    progress(0.95, "writing the scene folder")
    scene.save(out)
    write_crop(out, crop, scene.gt_points, scene.gt_colors)
    atomic_write_bytes(out / "prepare.json", to_json({**report, "log": result.log}).encode())
    progress(1.0, f"scene {scene_name}: {report['registered']}/{report['total']} views, "
                  f"{report['object_points']:,} object points")
    return PrepareResult(out, scene, report, result, dense_points, dense_colors, crop, result.log)


def prepare_from_scene_views(scene: Scene, views: list[int], out: Path, dense: bool = True,
                             sfm_options: SfmOptions | None = None, progress: Progress | None = None,
                             mvs_max_size: int = 256) -> dict:
    """Prepare ``views`` of an existing scene into ``out`` and score it against the scene's exact ground truth.

    Returns the report plus ``pose_errors`` (:func:`core.data.sfm.pose_errors`) and, with ``dense``,
    ``dense_scores`` (core.eval.metrics, normalised units: F-score at 0.02, accuracy, completeness).
    """
    from core.eval import metrics

    sub = scene.subset(views)
    options = PrepareOptions(**asdict(sfm_options or SfmOptions()), dense=dense, mvs_max_size=mvs_max_size)
    result = prepare(sub.images, sub.image_names, out, scene_name=f"{scene.name}-{len(views)}", options=options,
                     progress=progress)
    summary = dict(result.report)
    if scene.has_ground_truth:
        gt = scene.gt_points.astype(np.float64)
        radius = float(np.linalg.norm(gt - (gt.min(0) + gt.max(0)) / 2, axis=1).max())
        summary["pose_errors"] = sfm.pose_errors(result.sfm.cam_from_world, sub.cam_from_world, radius)
        if dense and result.scene.has_ground_truth:
            recon = Reconstruction(method="colmap", points=result.scene.gt_points, colors=result.scene.gt_colors,
                                   cam_from_world=result.sfm.cam_from_world, intrinsics=result.sfm.intrinsics,
                                   view_ids=list(views))
            scores = metrics.evaluate(scene, recon).scores
            summary["dense_scores"] = {"fscore@0.02": scores["fscore"]["0.02"], "accuracy": scores["accuracy"],
                                       "completeness": scores["completeness"], "units": scores["units"]}
    return summary
