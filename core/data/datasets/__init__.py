"""Public benchmark data sets read in their official layouts (CO3Dv2: :mod:`.co3d`; DTU: ``.dtu``).

Each reader turns one sequence or scan into a :class:`core.data.scene.Scene` (OpenCV cameras,
pixel intrinsics, the data set's own ground truth with its units and gaps stated in the scene's
provenance). Nothing is downloaded: the user places the data set under the datasets folder.

The datasets folder is configured on the server, never typed by a web user:
``$RECONBENCH_DATASETS`` when set, else ``<repo>/datasets``; the Dataset page lists its subfolders.
"""
from __future__ import annotations

import os
from pathlib import Path

from core.errors import UserError

DATASETS_ENV = "RECONBENCH_DATASETS"


class DatasetFormatError(UserError):
    """A data set folder lacks an expected file, or a file does not hold what its format says."""


def datasets_root() -> Path:
    """The folder that holds the data sets: ``$RECONBENCH_DATASETS`` or ``<repo>/datasets``."""
    value = os.environ.get(DATASETS_ENV)
    if value:
        return Path(value).expanduser()
    from core.store.cache import REPO_ROOT

    return REPO_ROOT / "datasets"


def write_scene_folder(scene, out: Path | str) -> Path:
    """Save ``scene`` as the new scene folder ``out``, all at once or not at all.

    ``out`` must not exist or be an empty folder (an import never overwrites a scene). The scene is
    saved into a hidden sibling folder that is renamed to ``out`` when complete, so a failure leaves
    nothing behind. Returns ``out``.
    """
    import shutil
    import tempfile

    out = check_out_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".importing"))
    try:
        scene.save(staging)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    scene.path = out
    return out


def check_out_folder(out: Path | str) -> Path:
    """Refuse an ``out`` that :func:`write_scene_folder` would refuse, before any reading starts."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetFormatError(f"{out} already exists and is not empty; choose another --out")
    return out
