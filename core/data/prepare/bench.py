"""``python -m core bench sfm`` and ``python -m core bench dense``: the prepare pipeline, timed and scored.

- ``bench sfm``: the pipeline on views of the sample (seconds per stage, pose errors, dense scores);
- ``bench sfm --against-plain``: ``python -m core prepare --no-dense`` against plain pycolmap with its
  default options (extract_features, match_exhaustive, incremental_mapping) on the same image files,
  back to back, each in its own Python process (start-up and imports included), on a rendered
  30-view 640x480 toy scene and on ``sample_data/toy`` views 0-29;
- ``bench dense``: the CPU stereo of each dense setting on one SfM result, scored against the exact
  ground truth.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from core.data import mvs
from core.data.prepare.pipeline import PrepareOptions, cpu_dense, prepare, prepare_from_scene_views, score_dense
from core.data.scene import Scene
from core.data.sfm import SfmOptions, pose_errors
from core.store.cache import REPO_ROOT

#: plain pycolmap with its default options, run with ``python -c`` so that it imports nothing of ours;
#: argv: image folder, work folder; stdout: one JSON line of stage seconds
PLAIN_COLMAP = r"""
import json, sys, time
started = time.perf_counter()
import pycolmap
from pathlib import Path
stages = {"import": time.perf_counter() - started}
images, work = Path(sys.argv[1]), Path(sys.argv[2])
work.mkdir(parents=True, exist_ok=True)
database = work / "database.db"
t = time.perf_counter(); pycolmap.extract_features(database, images); stages["extraction"] = time.perf_counter() - t
t = time.perf_counter(); pycolmap.match_exhaustive(database); stages["matching"] = time.perf_counter() - t
(work / "sparse").mkdir(exist_ok=True)
t = time.perf_counter(); models = pycolmap.incremental_mapping(database, images, work / "sparse")
stages["mapping"] = time.perf_counter() - t
best = max(models, key=lambda i: models[i].num_reg_images()) if models else None
print(json.dumps({"stage_seconds": stages, "model": str(work / "sparse" / str(best)) if best is not None else None}))
"""


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def bench(argv: list[str]) -> list[dict]:
    """Seconds per stage (extraction, matching, mapping, dense) for 20 and 42 views of the sample.

    ``python -m core bench sfm [--views 20 42] [--no-dense] [--threads N] [--max-features N]
    [--dense-setting S]``: each row also holds the pose errors against the exact cameras and the dense
    object cloud's scores (:func:`core.data.prepare.pipeline.score_dense`), and the machine's load average.

    ``python -m core bench sfm --against-plain [--views 30] [--scenes rendered toy] [--repeat N]``:
    see :func:`against_plain`.
    """
    parser = argparse.ArgumentParser(prog="python -m core bench sfm")
    parser.add_argument("--views", type=int, nargs="*", default=None)
    parser.add_argument("--no-dense", action="store_true")
    parser.add_argument("--threads", type=int, default=-1)
    parser.add_argument("--max-features", type=int, default=SfmOptions.max_features)
    parser.add_argument("--dense-setting", choices=mvs.DENSE_SETTINGS, default="balanced")
    parser.add_argument("--scene", default=str(REPO_ROOT / "sample_data" / "toy"))
    parser.add_argument("--against-plain", action="store_true",
                        help="prepare --no-dense against plain pycolmap's default pipeline, back to back")
    parser.add_argument("--scenes", nargs="*", choices=("rendered", "toy"), default=["rendered", "toy"],
                        help="with --against-plain: the rendered 640x480 scene and/or sample_data/toy")
    parser.add_argument("--size", type=int, nargs=2, default=[640, 480], metavar=("WIDTH", "HEIGHT"),
                        help="with --against-plain: image size of the rendered scene")
    parser.add_argument("--repeat", type=int, default=1, help="with --against-plain: runs of each (alternating)")
    args = parser.parse_args(argv)
    if args.against_plain:
        return against_plain(args.views[0] if args.views else 30, args.scenes, tuple(args.size), args.repeat)
    scene = Scene.load(args.scene)
    rows = []
    for count in args.views or [20, 42]:
        views = np.linspace(0, scene.num_views - 1, count).round().astype(int).tolist()
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            summary = prepare_from_scene_views(scene, views, Path(tmp), dense=not args.no_dense,
                                               sfm_options=SfmOptions(num_threads=args.threads,
                                                                      max_features=args.max_features),
                                               dense_setting=args.dense_setting)
            total = time.perf_counter() - started
        rows.append({"bench": "sfm", "views": count, "seconds_total": round(total, 2),
                     "max_features": args.max_features, "load_average_1min": _load(),
                     "stage_seconds": summary["stage_seconds"], "registered": summary["registered"],
                     "mean_reprojection_error_px": summary["mean_reprojection_error_px"],
                     "pose_errors": summary.get("pose_errors"), "dense": summary.get("dense_scores")})
    return rows


# --------------------------------------------------------------------------- against plain pycolmap
def _input_scene(kind: str, views: int, size: tuple[int, int], folder: Path) -> Scene:
    """Write the benchmark's input images as JPEG files (quality 95) into ``folder``; returns the scene
    with the exact cameras. ``rendered``: a toy scene rendered with ``views`` orbit views at ``size``
    (W, H); ``toy``: the sample's views 0..views-1 (its own JPEG files, copied)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    if kind == "toy":
        sample = REPO_ROOT / "sample_data" / "toy"
        scene = Scene.load(sample).subset(list(range(views)))
        files = json.loads((sample / "scene.json").read_text())["image_files"][:views]
        for name in files:
            shutil.copyfile(sample / "images" / name, folder / name)
        return scene
    from core.data.synthetic import ToySceneSpec, render_toy_scene

    scene = render_toy_scene(ToySceneSpec(num_views=views, width=size[0], height=size[1]))
    for i, image in enumerate(scene.images):
        Image.fromarray(image).save(folder / f"view_{i:03d}.jpg", quality=95)
    return scene


def _accuracy(model, files: list[str], scene: Scene) -> dict:
    """Registered views and pose errors of a pycolmap model of ``files`` (scene view order)."""
    import pycolmap

    from core.data.sfm import reconstruction_to_result

    result = reconstruction_to_result(pycolmap.Reconstruction(str(model)), files)
    registered = {"registered": int(result.registered.sum()), "total": len(files)}
    if registered["registered"] < 3:
        return registered
    gt = scene.gt_points.astype(np.float64)
    radius = float(np.linalg.norm(gt - (gt.min(0) + gt.max(0)) / 2, axis=1).max())
    errors = pose_errors(result.cam_from_world, scene.cam_from_world, radius)
    return {**registered,
            "median_rotation_error_deg": round(errors["median_rotation_error_deg"], 4),
            "median_centre_error_rel": round(errors["median_centre_error_rel"], 5),
            "max_rotation_error_deg": round(errors["max_rotation_error_deg"], 4)}


def _run(command: list[str]) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed: {done.stderr.strip().splitlines()[-1:]}")
    try:  # prepare prints one (indented) JSON document
        return seconds, json.loads(done.stdout)
    except json.JSONDecodeError:  # anything printed before the plain script's last line
        return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def against_plain(views: int = 30, scenes: list[str] = ("rendered", "toy"), size: tuple[int, int] = (640, 480),
                  repeat: int = 1) -> list[dict]:
    """``prepare --inline --no-dense`` against plain pycolmap on the same JPEG files, one row per run.

    ``--inline`` computes in the launched process, as plain does; without it the command submits a
    job to the local Ray instance and the pipeline runs in a Ray worker (the same code, plus the
    submission and a worker's imports).

    Each side runs as its own ``python`` process, timed from launch to exit (``seconds_total``); its
    stage seconds are what it reports (ReconBench: start-up and imports, image decode, PNG writing, SIFT
    extraction, matching, mapping, undistortion, crop, scene writing; plain: pycolmap's import and its
    three calls), and ``unreported`` is the rest (interpreter start and teardown, anything between
    stages). ``evaluation`` (pose errors against the exact cameras, done afterwards in this process) is
    reported but not part of either total. Runs alternate ReconBench / plain (the first run of each
    scene starts with ReconBench, the next with plain, ...). ``ratio`` = ReconBench / plain seconds
    of the same repeat.
    """
    rows = []
    for kind in scenes:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            scene = _input_scene(kind, views, size, tmp / "input")
            files = sorted(p.name for p in (tmp / "input").iterdir())
            for run in range(repeat):
                order = ("reconbench", "plain") if run % 2 == 0 else ("plain", "reconbench")
                measured = {}
                for side in order:
                    work = tmp / f"{side}-{run}"
                    load_before = _load()
                    if side == "reconbench":
                        # --inline: the SfM pipeline itself, in the launched process like plain's
                        # (as a job it would run in a Ray worker; see the docstring)
                        seconds, report = _run([sys.executable, "-m", "core", "prepare", "--inline", "--images",
                                                str(tmp / "input"), "--no-dense", "--out", str(work)])
                        model = work / "sparse" / "0"
                    else:
                        seconds, report = _run([sys.executable, "-c", PLAIN_COLMAP, str(tmp / "input"), str(work)])
                        model = report["model"]
                    stages = report["stage_seconds"]
                    started = time.perf_counter()
                    # prepare hands COLMAP the decoded views as <stem>.png; plain reads the JPEG files
                    names = [Path(f).stem + ".png" for f in files] if side == "reconbench" else files
                    accuracy = _accuracy(model, names, scene) if model else {"registered": 0}
                    evaluation = time.perf_counter() - started
                    measured[side] = {"seconds_total": round(seconds, 2), "stage_seconds": stages,
                                      "unreported": round(seconds - sum(stages.values()), 2),
                                      "evaluation": round(evaluation, 2), **accuracy,
                                      "load_average_before": load_before, "load_average_after": _load()}
                    shutil.rmtree(work, ignore_errors=True)
                rows.append({"bench": "sfm-against-plain", "scene": kind, "views": views,
                             "image_size": list(scene.image_size[::-1]), "repeat": run, "order": list(order),
                             "ratio": round(measured["reconbench"]["seconds_total"]
                                            / measured["plain"]["seconds_total"], 3), **measured})
    return rows


# --------------------------------------------------------------------------- dense settings
def bench_dense(argv: list[str]) -> list[dict]:
    """``python -m core bench dense [--views 42] [--settings fast balanced best] [--scene DIR]``.

    One SfM run (``prepare --no-dense`` on ``--views`` views of the scene spread over its orbit),
    then the CPU stereo of each dense setting on its undistorted views
    (:func:`core.data.prepare.pipeline.cpu_dense`, the pipeline's own step), its cloud cropped like
    :func:`~core.data.prepare.pipeline.prepare` does and scored against the exact ground truth
    (:func:`~core.data.prepare.pipeline.score_dense`). One row per setting: wall and process CPU
    seconds of the stereo, F-score / precision / recall at 0.005 / 0.01 / 0.02, accuracy and
    completeness (normalised units), and the load average.
    """
    from core.data.prepare.crop import propose_crop

    parser = argparse.ArgumentParser(prog="python -m core bench dense")
    parser.add_argument("--views", type=int, default=42)
    parser.add_argument("--settings", nargs="*", choices=mvs.DENSE_SETTINGS, default=list(mvs.DENSE_SETTINGS))
    parser.add_argument("--scene", default=str(REPO_ROOT / "sample_data" / "toy"))
    args = parser.parse_args(argv)
    scene = Scene.load(args.scene)
    views = np.linspace(0, scene.num_views - 1, args.views).round().astype(int).tolist()
    sub = scene.subset(views)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sparse_started = time.perf_counter()
        prepared = prepare(sub.images, sub.image_names, Path(tmp), options=PrepareOptions(dense=False))
        sparse_seconds = time.perf_counter() - sparse_started
    for setting in args.settings:
        options = PrepareOptions(dense_setting=setting)
        load_before = _load()
        wall, cpu = time.perf_counter(), time.process_time()
        dense, _, mvs_options = cpu_dense(prepared.scene.images, prepared.sfm, options)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        crop = propose_crop(prepared.sfm.cam_from_world, dense.points)
        scores = score_dense(scene, views, dense.points[crop.contains(dense.points)], prepared.sfm)
        rows.append({"bench": "dense", "setting": setting, "views": args.views, "seconds": round(wall, 2),
                     "cpu_seconds": round(cpu, 2), "sparse_seconds": round(sparse_seconds, 2),
                     "depth_map_size": list(dense.depths.shape[1:]), "sweep_scale": round(mvs_options.scale, 3),
                     "fine_scale": round(mvs_options.fine_scale, 3),
                     **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in scores.items()},
                     "load_average_before": load_before, "load_average_after": _load()})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # each setting as soon as it is measured
    return rows
