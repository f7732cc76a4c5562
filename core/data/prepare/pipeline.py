"""The prepare pipeline: views -> COLMAP sparse -> dense stereo -> object crop -> a Scene folder.

:func:`prepare` writes the folder described in :mod:`core.data.prepare`; :func:`prepare_from_scene_views`
prepares views of a scene that has an exact ground truth and scores the result against it (the
``sfm`` benchmark). All geometry stays in COLMAP's world frame (metric scale unknown).
"""
from __future__ import annotations

import logging
import shutil
import uuid
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

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
from core.store.swap import swap_into_place

log = logging.getLogger(__name__)

#: the CPU stereo works inside the sparse points' object crop box grown by this factor per axis
DENSE_REGION_GROWTH = 1.3


@dataclass
class PrepareOptions(SfmOptions):
    """Options of :func:`prepare`: the SfM group (:class:`core.data.sfm.SfmOptions`, included)
    plus dense stereo and image handling."""

    dense: bool = option(True, "dense stereo after the sparse reconstruction (the ground truth's "
                               "dense cloud); off: stop after the sparse model")
    dense_setting: mvs.DenseSetting = option("balanced", "CPU dense stereo: fast (one 256-pixel sweep), balanced "
                                                         "(sweep + refinement at 512 pixels) or best (full "
                                                         "resolution, 6 sources); README has the quality/time table")
    mvs_max_size: int = option(0, "longest side of the CPU stereo's depth maps (pixels); 0 = the dense "
                                  "setting's", min=0, max=2048, step=32)
    mvs_depths: int = option(0, "depth hypotheses per pixel of the CPU plane sweep; 0 = the dense setting's",
                             min=0, max=512, step=8, advanced=True)
    resize: bool = option(False, "resize images of other sizes to the most common size (else refuse "
                                 "mixed sizes)")

    @property
    def sfm(self) -> SfmOptions:
        """The SfM group of these options."""
        return SfmOptions(**{f.name: getattr(self, f.name) for f in fields(SfmOptions)})

    def mvs_options(self, image_size: tuple[int, int]) -> mvs.MvsOptions:
        """The CPU stereo's options for images of ``image_size`` (H, W): the dense setting, with
        ``mvs_max_size`` / ``mvs_depths`` overriding its sizes when non-zero."""
        return mvs.options_for_setting(self.dense_setting, image_size, self.mvs_max_size, self.mvs_depths)


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


STAGING_PREFIX = ".tmp-prepare-"


def _is_earlier_preparation(out: Path) -> bool:
    return (out / "scene.json").exists() or (out / "sparse").exists() or (out / "prepare.json").exists()


def check_destination(out: Path | str) -> None:
    """Raise :class:`DatasetError` unless ``out`` is absent, an empty folder or an earlier
    preparation (what :func:`prepare` may replace); nothing is touched."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _is_earlier_preparation(out))):
        raise DatasetError(f"{out.name} exists and is not a scene folder; choose another output folder")


def prepare(images: list[np.ndarray], names: list[str], out: Path | str, scene_name: str | None = None,
            options: PrepareOptions | None = None, progress: Progress | None = None, is_video: bool = False,
            provenance: dict | None = None, staging_prefix: str = STAGING_PREFIX,
            before_swap: Callable[[], None] | None = None) -> PrepareResult:
    """Images -> COLMAP sparse -> dense (CUDA COLMAP or CPU stereo) -> object crop -> Scene folder ``out``.

    The work happens in a staging folder beside ``out`` (``.tmp-prepare-*``); only a finished
    preparation replaces ``out``, by renames (:func:`core.store.swap.swap_into_place`; a crash
    between them is undone by :func:`core.store.swap.recover_swaps`). A failed or stopped
    preparation leaves an existing scene at ``out`` byte-identical and removes its staging folder.
    ``out`` must be absent, empty or an earlier preparation: any other folder is refused (nothing
    of it is touched).

    Args:
        images: N ``uint8 HxWx3`` of one size (see :func:`core.data.prepare.frames.load_images`).
        names: N display names (input order is kept everywhere).
        out: the scene folder to write (replaced if it holds an earlier preparation).
        scene_name: name shown in the picker (default: the folder's name).
        is_video: frames are consecutive (sequential matching for long videos).
        provenance: recorded in scene.json (source, frame indices...).
        staging_prefix: name prefix of the staging folder (a job passes ``.tmp-<job key>-`` so that
            the job manager finds and removes it when the job's worker dies).
        before_swap: called once the staging folder is complete, right before it replaces ``out``;
            it may raise ``Stopped`` (a job asking its manager for the commit: a cancelled job
            writes nothing).
    Raises:
        DatasetError / SfmError / MvsError with a one-line message; ``core.progress.Stopped`` when stopped.
    """
    out = Path(out)
    check_destination(out)
    if len(images) < MIN_VIEWS:
        raise DatasetError(f"at least {MIN_VIEWS} images are needed; got {len(images)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f"{staging_prefix}{out.name}-{uuid.uuid4().hex[:8]}"
    try:
        result = _prepare_into(images, names, staging, safe_name(scene_name or out.name), options, progress,
                               is_video, provenance)
        if before_swap is not None:
            before_swap()
        swap_into_place(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    result.folder = out
    result.scene.path = out
    if result.sfm.sparse_path is not None:
        result.sfm.sparse_path = out / Path(result.sfm.sparse_path).relative_to(staging)
    return result


def _prepare_into(images: list[np.ndarray], names: list[str], out: Path, scene_name: str,
                  options: PrepareOptions | None, progress: Progress | None, is_video: bool,
                  provenance: dict | None) -> PrepareResult:
    """The preparation itself, written into the fresh folder ``out`` (:func:`prepare`'s staging
    folder); arguments and errors as :func:`prepare`, ``scene_name`` already sanitised."""
    options = options or PrepareOptions()
    progress = progress or silent()
    out = Path(out)
    if len(images) < MIN_VIEWS:
        raise DatasetError(f"at least {MIN_VIEWS} images are needed; got {len(images)}")
    if len({image.shape for image in images}) != 1:
        raise DatasetError("all images must have one size (see load_images(resize=True))")
    stages: dict[str, float] = {}
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
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:  # OpenCV's remap releases the GIL
        views = list(pool.map(sfm.undistort_image, images, result.intrinsics, result.distortion))
    undistorted = any(fixed is not image for fixed, image in zip(views, images))
    if undistorted:  # COLMAP's input files move aside (a rename, no copy); the undistorted views replace them
        shutil.rmtree(out / "images_distorted", ignore_errors=True)
        (out / "images").rename(out / "images_distorted")
        sfm.write_colmap_images(out / "images", views, names)
    stages["undistort"] = time.perf_counter() - started

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
            dense, region, mvs_options = cpu_dense(views, result, options, dense_progress)
            dense_points, dense_colors = dense.points, dense.colors
            depths = mvs.upsample_depths(dense.depths, views[0].shape[:2])
            dense_info = {"method": "cpu plane-sweep stereo (core.data.mvs)", "points": int(len(dense_points)),
                          "setting": options.dense_setting, "options": asdict(mvs_options),
                          "region": region.to_dict(), "stage_seconds": dense.stage_seconds}
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
    started = time.perf_counter()
    cloud = dense_points if dense_points is not None and len(dense_points) else result.points
    colors = dense_colors if dense_points is not None and len(dense_points) else result.colors
    crop = propose_crop(result.cam_from_world, cloud)
    inside = crop.contains(cloud)
    stages["crop"] = time.perf_counter() - started
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
    started = time.perf_counter()
    scene.save(out, image_files=files)  # the views are already there, as COLMAP's (or undistorted) PNGs
    write_crop(out, crop, scene.gt_points, scene.gt_colors)
    stages["write_scene"] = time.perf_counter() - started
    report["stage_seconds"] = {k: round(v, 2) for k, v in stages.items()}  # now with write_scene
    atomic_write_bytes(out / "prepare.json", to_json({**report, "log": result.log}).encode())
    progress(1.0, f"scene {scene_name}: {report['registered']}/{report['total']} views, "
                  f"{report['object_points']:,} object points")
    return PrepareResult(out, scene, report, result, dense_points, dense_colors, crop, result.log)


def cpu_dense(views: list[np.ndarray], result: SfmResult, options: PrepareOptions, progress: Progress | None = None
              ) -> tuple[mvs.MvsResult, CropBox, mvs.MvsOptions]:
    """The CPU stereo of :func:`prepare` on the undistorted ``views``: (its result, the region it matched
    in, its options).

    The object first: the stereo matches only inside the object crop box proposed from the sparse
    points, grown by ``DENSE_REGION_GROWTH`` so that the crop proposed later from the dense cloud (and
    edits of it on the Dataset page) stay inside.
    """
    mvs_options = options.mvs_options(views[0].shape[:2])
    region = propose_crop(result.cam_from_world, result.points).adjusted(scale=np.full(3, DENSE_REGION_GROWTH))
    dense = mvs.run_mvs(views, result.intrinsics, result.cam_from_world, result.points, mvs_options, progress,
                        region=region)
    return dense, region, mvs_options


def prepare_from_scene_views(scene: Scene, views: list[int], out: Path, dense: bool = True,
                             sfm_options: SfmOptions | None = None, progress: Progress | None = None,
                             dense_setting: str = "balanced") -> dict:
    """Prepare ``views`` of an existing scene into ``out`` and score it against the scene's exact ground truth.

    Returns the report plus ``pose_errors`` (:func:`core.data.sfm.pose_errors`) and, with ``dense``,
    ``dense_scores`` (:func:`score_dense`).
    """
    sub = scene.subset(views)
    options = PrepareOptions(**asdict(sfm_options or SfmOptions()), dense=dense, dense_setting=dense_setting)
    result = prepare(sub.images, sub.image_names, out, scene_name=f"{scene.name}-{len(views)}", options=options,
                     progress=progress)
    summary = dict(result.report)
    if scene.has_ground_truth:
        gt = scene.gt_points.astype(np.float64)
        radius = float(np.linalg.norm(gt - (gt.min(0) + gt.max(0)) / 2, axis=1).max())
        summary["pose_errors"] = sfm.pose_errors(result.sfm.cam_from_world, sub.cam_from_world, radius)
        if dense and result.scene.has_ground_truth:
            summary["dense_scores"] = score_dense(scene, views, result.scene.gt_points, result.sfm)
    return summary


def score_dense(scene: Scene, views: list[int], points: np.ndarray, result: SfmResult) -> dict:
    """A prepared object cloud (``points [M,3]`` in COLMAP's frame, of ``views`` of ``scene``) scored
    against ``scene``'s exact ground truth (:func:`core.eval.metrics.evaluate`: aligned by the cameras +
    ICP; normalised units, the ground truth in the unit sphere): F-score, precision and recall at
    0.005 / 0.01 / 0.02, accuracy and completeness (mean distances)."""
    from core.eval import metrics

    recon = Reconstruction(method="colmap", points=points, cam_from_world=result.cam_from_world,
                           intrinsics=result.intrinsics, view_ids=list(views))
    scores = metrics.evaluate(scene, recon).scores
    taus = ("0.005", "0.01", "0.02")
    return {**{f"fscore@{t}": scores["fscore"][t] for t in taus},
            **{f"precision@{t}": scores["precision"][t] for t in taus},
            **{f"recall@{t}": scores["recall"][t] for t in taus},
            "accuracy": scores["accuracy"], "completeness": scores["completeness"], "points": int(len(points)),
            "units": scores["units"]}
