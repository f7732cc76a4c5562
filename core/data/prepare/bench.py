"""``python -m core bench sfm``: the prepare pipeline on views of the sample, timed and scored."""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from core.data.prepare.pipeline import prepare_from_scene_views
from core.data.scene import Scene
from core.data.sfm import SfmOptions
from core.store.cache import REPO_ROOT


def bench(argv: list[str]) -> list[dict]:
    """Seconds per stage (extraction, matching, mapping, dense) for 20 and 42 views of the sample.

    ``python -m core bench sfm [--views 20 42] [--no-dense] [--threads N] [--max-features N]``
    Each row also holds the pose errors against the exact cameras and the dense object cloud's
    F-score at 0.02 / accuracy / completeness (normalised units), and the machine's load average.
    """
    parser = argparse.ArgumentParser(prog="python -m core bench sfm")
    parser.add_argument("--views", type=int, nargs="*", default=[20, 42])
    parser.add_argument("--no-dense", action="store_true")
    parser.add_argument("--threads", type=int, default=-1)
    parser.add_argument("--max-features", type=int, default=SfmOptions.max_features)
    parser.add_argument("--scene", default=str(REPO_ROOT / "sample_data" / "toy"))
    args = parser.parse_args(argv)
    scene = Scene.load(args.scene)
    rows = []
    for count in args.views:
        views = np.linspace(0, scene.num_views - 1, count).round().astype(int).tolist()
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            summary = prepare_from_scene_views(scene, views, Path(tmp), dense=not args.no_dense,
                                               sfm_options=SfmOptions(num_threads=args.threads,
                                                                      max_features=args.max_features))
            total = time.perf_counter() - started
        rows.append({"bench": "sfm", "views": count, "seconds_total": round(total, 2),
                     "max_features": args.max_features, "load_average_1min": round(os.getloadavg()[0], 2),
                     "stage_seconds": summary["stage_seconds"], "registered": summary["registered"],
                     "mean_reprojection_error_px": summary["mean_reprojection_error_px"],
                     "pose_errors": summary.get("pose_errors"), "dense": summary.get("dense_scores")})
    return rows
