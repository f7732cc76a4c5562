"""``python -m core export RUN [RUN ...] --format colmap|ply|glb|nerfstudio|html --out DIR [--force]``.

RUN is ``scene/method/key`` or a key prefix that names exactly one stored run (``python -m core runs
--scene S`` prints the keys). Only ``html`` takes several runs. The run's scene is looked up by name
in the store's ``scenes/`` folder, the bundled ``sample_data/`` and ``$RECONBENCH_CACHE/scenes``, or
given with ``--scene DIR``. The export is written into a temporary folder and renamed to DIR at
the end: a bad RUN, format or DIR exits 2 with one ``error:`` line and writes nothing; a non-empty
DIR is replaced only with ``--force``. Prints ``{"format", "out", "runs", "files"}`` as JSON.
"""
from __future__ import annotations

import json
from pathlib import Path

from core.cli import CliError


def resolve_run(store, text: str):
    """The :class:`core.store.cache.RunRecord` named by ``scene/method/key`` or a unique key prefix."""
    text = text.strip()
    parts = text.split("/")
    if len(parts) == 3 and all(parts):
        scene, method, key = parts
        matches = [r for r in store.runs(scene) if r.method == method and r.key == key]
        if not matches:
            raise CliError(f"no stored run {text} under {store.root}; `python -m core runs --scene {scene}` lists them")
        return matches[0]
    if not text or "/" in text:
        raise CliError(f"name a run as scene/method/key or a key prefix, not {text!r}")
    matches = [r for r in store.runs() if r.key.startswith(text)]
    if not matches:
        raise CliError(f"no stored run has a key starting with {text!r} under {store.root}")
    if len(matches) > 1:
        names = ", ".join(f"{r.scene}/{r.method}/{r.key}" for r in matches[:5])
        raise CliError(f"key prefix {text!r} names {len(matches)} runs ({names}{', ...' if len(matches) > 5 else ''}); "
                       "give more characters")
    return matches[0]


def find_scene(store, name: str, explicit: str | None):
    """The Scene of a stored run: ``explicit`` (a folder) or the scene folder named ``name``."""
    from core.cli import load_scene
    from core.data.scene import find_scenes
    from core.store.cache import REPO_ROOT, cache_root, safe_name

    if explicit:
        return load_scene(explicit)
    roots = [store.root / "scenes", REPO_ROOT / "sample_data", cache_root() / "scenes"]
    scenes = find_scenes(*roots)
    folder = scenes.get(name) or next((p for n, p in scenes.items() if safe_name(n) == name), None)
    if folder is None:
        raise CliError(f"the scene {name!r} of this run is not found under {', '.join(map(str, roots))}; "
                       "give its folder with --scene")
    return load_scene(str(folder))


def cmd_export(args) -> int:
    from core.export import ExportError, StoredRun, export_to, get_format
    from core.store.cache import RunStore

    try:
        fmt = get_format(args.format)
    except ExportError as error:
        raise CliError(str(error)) from None
    if len(args.run) > 1 and not fmt.several_runs:
        raise CliError(f"the {fmt.name} export takes one run, got {len(args.run)} (only html takes several)")
    store = RunStore(args.cache) if args.cache else RunStore()
    records = [resolve_run(store, text) for text in args.run]
    scenes = {}
    runs = []
    for record in records:
        if record.scene not in scenes:
            scenes[record.scene] = find_scene(store, record.scene, args.scene)
        runs.append(StoredRun.from_record(record, scenes[record.scene]))
    out = export_to(fmt.name, runs, Path(args.out), force=args.force)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    print(json.dumps({"format": fmt.name, "out": str(out), "runs": [r.label for r in runs],
                      "files": files if len(files) <= 20 else files[:20] + [f"... {len(files) - 20} more"]}))
    return 0


def register(sub) -> None:
    from core.export import FORMATS

    p = sub.add_parser("export", help="export stored runs: COLMAP model, PLY, GLB, nerfstudio or an HTML report",
                       description=__doc__.split("\n\n")[1] if "\n\n" in __doc__ else None)
    p.add_argument("run", nargs="+", metavar="RUN", help="scene/method/key or a unique key prefix (html: several)")
    p.add_argument("--format", required=True, metavar="FORMAT",
                   help="; ".join(f"{f.name}: {f.description}" for f in FORMATS.values()))
    p.add_argument("--out", required=True, metavar="DIR", help="folder to create (must be empty or absent)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--scene", metavar="DIR", help="the runs' scene folder (default: found by the scene's name)")
    p.set_defaults(func=cmd_export)
