"""The ``colmap`` method: COLMAP sparse reconstruction (pycolmap, CPU) + dense stereo on a view subset.

Dense stereo is COLMAP's PatchMatch when pycolmap was built with CUDA, else the CPU plane-sweep
stereo of :mod:`core.data.mvs`. The Reconstruction is in COLMAP's world frame (arbitrary similarity);
``cam_from_world`` has NaN rows for views COLMAP could not register; ``intrinsics`` are in pixels
of the scene's original images (pixel centres at integer coordinates); ``depth_maps`` are the
stereo's depth maps (at ``mvs_max_size``), ``confidence`` the ZNCC of each fused point and
``source_view`` an index into ``view_ids``.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path


from core.models.registry import Availability, Method, option
from core.profiling import measure
from core.progress import silent
from core.data.scene import Reconstruction, Scene

log = logging.getLogger(__name__)

VERSION = "1"


@dataclass
class ColmapOptions:
    camera_model: str = option("SIMPLE_RADIAL", "COLMAP camera model",
                               choices=("SIMPLE_RADIAL", "SIMPLE_PINHOLE", "PINHOLE", "RADIAL", "OPENCV"))
    shared_camera: bool = option(True, "one camera for all views (same device and zoom)")
    max_features: int = option(2048, "SIFT features per image", min=256, max=16384, step=256)
    dense: bool = option(True, "dense stereo after the sparse reconstruction (else the sparse points)")
    mvs_max_size: int = option(256, "longest side of the CPU stereo's depth maps (pixels)", min=64, max=2048,
                               step=32, advanced=True)
    seed: int = option(0, "COLMAP random seed", advanced=True)


def availability(options: ColmapOptions) -> Availability:
    try:
        import pycolmap  # noqa: F401
    except ImportError:
        return Availability(False, "pycolmap is not installed.", "pip install pycolmap")
    return Availability(True)


def run(scene: Scene, view_ids: list[int], options: ColmapOptions, progress=None) -> Reconstruction:
    """Sparse (+ dense) COLMAP reconstruction of ``view_ids`` of ``scene`` (module docstring)."""
    from core.data import mvs
    from core.data import sfm
    from core.data.dataset import _file_names, _write_png

    progress = progress or silent()
    options = options if isinstance(options, ColmapOptions) else ColmapOptions(**dict(options or {}))
    if len(view_ids) < 3:
        raise ValueError(f"COLMAP needs at least 3 views; got {len(view_ids)}")
    sfm_options = sfm.SfmOptions(camera_model=options.camera_model, shared_camera=options.shared_camera,
                                 max_features=options.max_features, seed=options.seed)
    notes = []
    with measure() as measured, tempfile.TemporaryDirectory(prefix="colmap-") as tmp:
        work = Path(tmp)
        images = [scene.images[v] for v in view_ids]
        files = _file_names([scene.image_names[v] for v in view_ids])
        for image, name in zip(images, files):
            _write_png(work / "images" / name, image)
        try:
            result = sfm.run_sfm(work / "images", files, work, sfm_options,
                                 progress.sub(0.0, 0.5 if options.dense else 1.0))
        except sfm.SfmError as error:
            raise ValueError(str(error)) from None
        registered = result.registered
        if registered.sum() < len(view_ids):
            notes.append(f"{int((~registered).sum())} of {len(view_ids)} views did not register: "
                         + ", ".join(n for n, ok in zip([scene.image_names[v] for v in view_ids], registered) if not ok))
        points, colors = result.points, result.colors
        confidence = source = depth_maps = None
        device = "cpu"
        if options.dense:
            views = [sfm.undistort_image(im, k, d) for im, k, d in zip(images, result.intrinsics, result.distortion)]
            dense_done = False
            if sfm.dense_cuda_available():
                try:
                    points, colors = sfm.colmap_dense(result.sparse_path, work / "images", work,
                                                      progress.sub(0.5, 1.0))
                    dense_done, device = True, "cuda"
                    notes.append("dense: COLMAP PatchMatch (CUDA) on undistorted images")
                except sfm.SfmError as error:
                    log.warning("COLMAP dense failed (%s); using the CPU stereo", error)
            if not dense_done:
                scale = min(1.0, options.mvs_max_size / max(views[0].shape[:2]))
                dense = mvs.run_mvs(views, result.intrinsics, result.cam_from_world, result.points,
                                    mvs.MvsOptions(scale=scale), progress.sub(0.5, 1.0))
                points, colors = dense.points, dense.colors
                confidence, source, depth_maps = dense.confidence, dense.source_view, dense.depths
                notes.append(f"dense: CPU plane-sweep stereo at scale {scale:.3g} (core.data.mvs)")
        else:
            notes.append("sparse points only")
    report = result.report()
    return Reconstruction(
        method="colmap", version=VERSION, points=points, colors=colors, confidence=confidence,
        source_view=source, view_ids=list(view_ids), cam_from_world=result.cam_from_world,
        intrinsics=result.intrinsics, depth_maps=depth_maps, options=dataclasses.asdict(options),
        seconds=measured.seconds, peak_memory_bytes=measured.peak_memory_bytes, parameter_count=0,
        device=device, notes=notes,
        extra={"sfm_report": report, "distortion": result.distortion.tolist()})


METHOD = Method(
    name="colmap", label="COLMAP (SfM + stereo)", family="sfm", version=VERSION, options_type=ColmapOptions,
    run=run, availability=availability, min_views=3, max_views=None,
    description="Classical structure from motion: SIFT features, exhaustive matching and incremental mapping "
                "with bundle adjustment (COLMAP via pycolmap), then dense stereo (COLMAP PatchMatch on CUDA, "
                "else a CPU plane-sweep stereo with geometric consistency). No learned weights.")
