"""The ``colmap`` method: COLMAP sparse reconstruction (pycolmap, CPU) + dense stereo on a view subset.

Dense stereo is COLMAP's PatchMatch when pycolmap was built with CUDA, else the CPU plane-sweep
stereo of :mod:`core.data.mvs`. The Reconstruction is in COLMAP's world frame (arbitrary similarity);
``cam_from_world`` has NaN rows for views COLMAP could not register; ``intrinsics`` are in pixels
of the scene's original images (pixel centres at integer coordinates); ``depth_maps`` are the
stereo's depth maps (at ``mvs_max_size``), ``confidence`` the ZNCC of each fused point and
``source_view`` an index into ``view_ids``. COLMAP has no learned weights: :meth:`load` returns
no model, the parameter count is 0 and the weights kind None.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.data.scene import Reconstruction, Scene
from core.data.sfm import SfmCoreOptions
from core.models.registry import Availability, Method
from core.options import option
from core.progress import Progress

log = logging.getLogger(__name__)

VERSION = "1"


@dataclass
class ColmapOptions(SfmCoreOptions):
    """The SfM core group (camera model, shared camera, SIFT features, seed) plus the dense step."""

    dense: bool = option(True, "dense stereo after the sparse reconstruction (else the sparse points)")
    mvs_max_size: int = option(256, "longest side of the CPU stereo's depth maps (pixels)", min=64, max=2048,
                               step=32, advanced=True)


class ColmapMethod(Method):
    """COLMAP structure from motion on the chosen views, then dense stereo (module docstring)."""

    name = "colmap"
    label = "COLMAP (SfM + stereo)"
    family = "sfm"
    version = VERSION
    options_type = ColmapOptions
    min_views = 3
    description = ("Classical structure from motion: SIFT features, exhaustive matching and incremental "
                   "mapping with bundle adjustment (COLMAP via pycolmap), then dense stereo (COLMAP "
                   "PatchMatch on CUDA, else a CPU plane-sweep stereo with geometric consistency). No "
                   "learned weights.")

    def availability(self, options: ColmapOptions) -> Availability:
        try:
            import pycolmap  # noqa: F401
        except ImportError:
            return Availability(False, "pycolmap is not installed.", "pip install pycolmap")
        return Availability(True)

    def load(self, options: ColmapOptions, device: str) -> None:
        """COLMAP has no model to load."""
        return None

    def predict(self, model: None, scene: Scene, view_ids: list[int], options: ColmapOptions,
                progress: Progress, device: str) -> Reconstruction:
        """Sparse (+ dense) COLMAP reconstruction of ``view_ids`` of ``scene`` (module docstring).

        Raises :class:`core.data.sfm.SfmError` (a UserError) when COLMAP builds no model.
        """
        from core.data import mvs, sfm

        sfm_options = sfm.SfmOptions(camera_model=options.camera_model, shared_camera=options.shared_camera,
                                     max_features=options.max_features, seed=options.seed)
        names = [scene.image_names[v] for v in view_ids]
        notes = []
        with tempfile.TemporaryDirectory(prefix="colmap-") as tmp:
            work = Path(tmp)
            images = [scene.images[v] for v in view_ids]
            files = sfm.write_colmap_images(work / "images", images, names)
            result = sfm.run_sfm(work / "images", files, work, sfm_options,
                                 progress.sub(0.0, 0.5 if options.dense else 1.0))
            registered = result.registered
            if registered.sum() < len(view_ids):
                notes.append(f"{int((~registered).sum())} of {len(view_ids)} views did not register: "
                             + ", ".join(n for n, ok in zip(names, registered) if not ok))
            points, colors = result.points, result.colors
            confidence = source = depth_maps = None
            if options.dense:
                dense_done = False
                if sfm.dense_cuda_available():
                    try:
                        points, colors = sfm.colmap_dense(result.sparse_path, work / "images", work,
                                                          progress.sub(0.5, 1.0))
                        dense_done = True
                        notes.append("dense: COLMAP PatchMatch (CUDA) on undistorted images")
                    except sfm.SfmError as error:
                        log.warning("COLMAP dense failed (%s); using the CPU stereo", error)
                if not dense_done:
                    views = [sfm.undistort_image(im, k, d)
                             for im, k, d in zip(images, result.intrinsics, result.distortion)]
                    scale = min(1.0, options.mvs_max_size / max(views[0].shape[:2]))
                    dense = mvs.run_mvs(views, result.intrinsics, result.cam_from_world, result.points,
                                        mvs.MvsOptions(scale=scale), progress.sub(0.5, 1.0))
                    points, colors = dense.points, dense.colors
                    confidence, source, depth_maps = dense.confidence, dense.source_view, dense.depths
                    notes.append(f"dense: CPU plane-sweep stereo at scale {scale:.3g} (core.data.mvs)")
            else:
                notes.append("sparse points only")
        return Reconstruction(
            method=self.name, points=points, colors=colors, confidence=confidence, source_view=source,
            view_ids=list(view_ids), cam_from_world=result.cam_from_world, intrinsics=result.intrinsics,
            depth_maps=depth_maps, notes=notes,
            extra={"sfm_report": result.report(), "distortion": result.distortion.tolist()})


METHOD = ColmapMethod()
