"""``python -m core prepare``: photos, a video or a bundled sample -> a scene folder (stdout: the report as JSON).

The images are decoded and checked here (limits, sizes, the destination folder); then the
preparation is submitted as a job on Ray and followed (``--wait``, the default: progress on
stderr, the report on stdout), or submitted only (``--detach``: ``{"job", "attached", "key"}``),
or computed in this process (``--inline`` or ``RECONBENCH_EXECUTOR=inline``). Bad input raises a
:class:`core.errors.UserError` (``DatasetError``, ``SfmError``, ``MvsError``, ``SceneError``,
``LimitError``) before anything is queued, which ``core.__main__`` prints as one ``error:`` line
with exit status 2.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil

from core.data.prepare import DatasetError
from core.data.prepare.frames import (DEFAULT_FRAMES, list_image_files, load_image_files, sample_video_frames,
                                      scene_image_files)
from core.data.prepare.pipeline import PrepareOptions, default_scene_dir, prepare
from core.data.scene import Scene, to_json
from core.options import add_arguments, from_namespace
from core.jobs.cli import add_job_flags, inline, submit_and_follow


def cmd_prepare(args) -> int:
    """``python -m core prepare``: see :func:`register`."""
    from core.cli import CliError
    from core.progress import Stopped, to_stderr

    started = time.perf_counter()
    # interpreter start-up and imports up to here (psutil's start time has clock-tick resolution)
    startup = max(0.0, time.time() - psutil.Process().create_time())
    options = from_namespace(PrepareOptions, args)
    progress = to_stderr()
    is_video = False
    provenance: dict = {}
    files = None       # the files the images decode from as they are (a job sends their bytes)
    if args.sample is not None:
        from core.store.cache import REPO_ROOT, safe_name

        if not args.sample or safe_name(args.sample) != args.sample:
            raise DatasetError(f"--sample takes the name of a bundled sample (e.g. toy); got {args.sample!r}")
        source = Scene.load(REPO_ROOT / "sample_data" / args.sample)
        images, names, files = source.images, source.image_names, scene_image_files(source.path)
        provenance["source"] = f"sample_data/{args.sample}"
    elif args.images is not None:
        folder = Path(args.images)
        images, names, notes, files = load_image_files([folder / f for f in list_image_files(folder)],
                                                       resize=options.resize)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        provenance["source"] = str(folder)
    else:
        path = Path(args.video)
        if not path.is_file():
            raise DatasetError(f"no such video: {path}")
        images, indices, info = sample_video_frames(path, args.frames)
        names = [f"frame_{i:06d}.png" for i in indices]
        is_video = True
        provenance.update({"source": str(path), "frame_indices": indices, **info})
    decode = time.perf_counter() - started
    out = Path(args.out) if args.out else default_scene_dir(args.name or "scene")
    if not inline(args):
        from core.jobs.client import prepare_spec

        spec = prepare_spec(images, names, out, scene_name=args.name or out.name, options=options,
                            is_video=is_video, provenance=provenance, owner=args.owner, files=files)
        done = submit_and_follow(spec, args)
        if done is None:      # --detach: the job's id is printed
            return 0
        report = {k: v for k, v in done.items() if k not in ("run_dir", "worker", "scene")}
        folder = done["scene"]
    else:
        try:
            result = prepare(images, names, out, scene_name=args.name or out.name, options=options,
                             progress=progress, is_video=is_video, provenance=provenance)
        except Stopped:
            raise CliError("stopped") from None
        report = {k: v for k, v in result.report.items() if k != "crop"}
        folder = str(result.folder)
    report["stage_seconds"] = {"startup": round(startup, 2), "decode": round(decode, 2), **report["stage_seconds"]}
    print(to_json({"scene": folder, **report}))
    return 0


def register(subparsers) -> None:
    """Add ``prepare`` to the CLI (``core.__main__`` calls this)."""
    p = subparsers.add_parser("prepare", help="photos or a video -> a scene folder with a COLMAP ground truth")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder of JPEG/PNG images")
    source.add_argument("--video", help="video file (mp4/mov)")
    source.add_argument("--sample", help="a bundled sample scene's views, e.g. toy")
    p.add_argument("--out", help="scene folder to write (default: cache/scenes/<name>)")
    p.add_argument("--name", help="scene name (default: the output folder's name)")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="frames sampled uniformly from the video")
    p.add_argument("--no-dense", dest="opt__dense", action="store_const", const="false",
                   help="same as --dense false: stop after the sparse reconstruction")
    p.add_argument("--per-view-camera", dest="opt__shared_camera", action="store_const", const="false",
                   help="same as --shared-camera false: one camera per image")
    p.add_argument("--threads", dest="opt__num_threads", metavar="INT", help="same as --num-threads")
    add_arguments(p, PrepareOptions, "preparation options (SfM, dense stereo, images)")
    add_job_flags(p)
    p.set_defaults(func=cmd_prepare)
