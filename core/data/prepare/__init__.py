"""Dataset preparation: photos or a phone video -> a Scene folder with a COLMAP ground truth.

Inputs (the Dataset page and ``python -m core prepare`` share this code):

- a folder or an upload of images (JPEG/PNG; EXIF orientation honoured; mixed sizes refused
  unless ``resize`` is asked, then every image is centre-cropped to the most common aspect
  ratio and resized to the most common size);
- a video (mp4/mov, decoded with imageio-ffmpeg) from which ``frames`` frames are sampled
  uniformly;
- the views of an existing scene (the bundled sample).

Modules, in the order the work flows:

- :mod:`.uploads`: uploaded files stored under ``cache_root()/uploads/<batch>/`` (sanitised names,
  size limits) before any work starts, never deleted when a later step fails;
- :mod:`.frames`: decoding and checking images, sampling video frames, the preview strip;
- :mod:`.pipeline`: :func:`~.pipeline.prepare` (SfM -> dense stereo -> object crop -> scene folder);
- :mod:`.crop`: the object's crop box, proposed from the cameras and the points, and applied;
- :mod:`.cli`: the ``prepare`` sub-command; :mod:`.bench`: ``python -m core bench sfm`` (``--against-plain``)
  and ``python -m core bench dense``.

The pipeline writes ``<out>/`` (a folder :meth:`core.data.scene.Scene.load` reads)::

    scene.json, cameras.npz    image names in input order; intrinsics [N,3,3] (pixel centres at
                               integer coordinates), cam_from_world [N,4,4] (NaN = unregistered)
    images/                    the decoded, oriented (and, with lens distortion, undistorted) views
    images_distorted/          COLMAP's input images, only when they had to be undistorted
    database.db, sparse/0/     COLMAP's database and sparse model, as COLMAP wrote them
    depths.npz                 per-view depth maps of the dense stereo (0 = invalid), full size
    dense/fused.npz, .ply      the fused dense cloud (points, colours, confidence, source view)
    crop.json                  the object crop box
    gt_points.npz, object.ply  the dense points inside the crop box: the scene's ground truth
    prepare.json               the report (registration, errors, point counts, stage timings)

All geometry stays in COLMAP's world frame (metric scale unknown).
"""
from __future__ import annotations

from core.errors import UserError

#: fewer views than this give COLMAP nothing to reconstruct
MIN_VIEWS = 3


class DatasetError(UserError):
    """Unusable input (too few, identical, corrupt or mismatched images; undecodable video...)."""
