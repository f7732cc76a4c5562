"""``python -m core cache damaged|repair|clean``: the run store's damaged folders and staging leftovers.

    python -m core cache damaged [--scene NAME] [--deep]   one JSON line per damaged run folder
    python -m core cache repair  [--scene NAME] [--deep]   remove them (a later request recomputes them)
    python -m core cache clean   [--max-age SECONDS]       remove staging leftovers (.tmp-*) older than that
    python -m core cache adopt   --scene SCENE_DIR [--dry-run]   give the scene's runs stored before
                                 ground-truth fingerprints today's keys (core.store.migrate)
"""
from __future__ import annotations

import json


def cmd_cache(args) -> int:
    """See the module docstring."""
    from core.cli import CliError
    from core.store.cache import RunStore

    store = RunStore(args.cache) if args.cache else RunStore()
    if args.action == "adopt":
        from core.cli import load_scene
        from core.store.migrate import adopt_legacy_runs

        if not args.scene:
            raise CliError("adopt needs --scene SCENE_DIR (the scene folder whose ground truth the runs used)")
        for item in adopt_legacy_runs(store, load_scene(args.scene), dry_run=args.dry_run):
            print(json.dumps({"method": item.method, "old_key": item.old_key, "new_key": item.new_key,
                              "adopted": item.new_key is not None and not args.dry_run, "reason": item.reason}))
        return 0
    if args.action == "clean":
        if args.max_age < 0:
            raise CliError(f"--max-age must be zero or positive; got {args.max_age:g}")
        for path in store.clean_staging(args.max_age):
            print(json.dumps({"removed": str(path.relative_to(store.root))}))
        return 0
    items = store.repair(args.scene, args.deep) if args.action == "repair" else store.damaged(args.scene, args.deep)
    for item in items:
        print(json.dumps({"scene": item.scene, "method": item.method, "key": item.key, "reason": item.reason,
                          "removed": args.action == "repair"}))
    return 0


def register(subparsers) -> None:
    """Add ``cache`` to the CLI (``core.__main__`` calls this)."""
    p = subparsers.add_parser("cache", help="damaged run folders (list / repair) and staging leftovers (clean)")
    p.add_argument("action", choices=("damaged", "repair", "clean", "adopt"))
    p.add_argument("--scene", help="only this scene's runs (default: all); adopt: the scene folder")
    p.add_argument("--dry-run", action="store_true", help="adopt: report only")
    p.add_argument("--deep", action="store_true", help="also read every reconstruction's arrays (slow)")
    p.add_argument("--max-age", type=float, default=3600.0,
                   help="clean: staging leftovers older than this many seconds (default 3600)")
    p.set_defaults(func=cmd_cache)
