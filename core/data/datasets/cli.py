"""``python -m core datasets import KIND ...``: a public data set's sequence or scan -> a scene folder.

    python -m core datasets import co3d --root ROOT --sequence CATEGORY/SEQUENCE --out SCENE_DIR
    python -m core datasets import dtu --root ROOT --scan N --out SCENE_DIR

Interface of a KIND module (``core.data.datasets.<kind>``, listed in :data:`IMPORT_KINDS`):

- ``register_import_args(parser)``: adds every flag of ``datasets import <kind>`` to ``parser``
  (its own sub-parser, so kinds may reuse flag names such as ``--root`` and ``--out``);
- ``cmd_import(args) -> int``: reads and checks everything first, then writes the scene folder
  all at once (``core.data.datasets.write_scene_folder``), prints a JSON summary on stdout and
  returns the exit status; bad input raises a :class:`core.errors.UserError` (one line, exit 2,
  nothing written).

A KIND module is imported when the parser is built, so it imports heavy libraries inside its
functions; a KIND whose module is not installed yet is left out of the choices.
"""
from __future__ import annotations

import importlib

IMPORT_KINDS = {
    "co3d": ("core.data.datasets.co3d", "CO3Dv2 sequence (official layout) -> scene"),
    "dtu": ("core.data.datasets.dtu", "DTU MVS scan (rectified images, Calibration, STL points, ObsMask) -> scene"),
}


def _kind_module(module_name: str):
    """The KIND module, or None when it does not exist (yet)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            return None
        raise


def register(subparsers) -> None:
    """Add ``datasets`` (with its ``import`` group) to the CLI (``core.__main__`` calls this)."""
    datasets = subparsers.add_parser("datasets", help="public benchmark data sets (CO3Dv2, DTU)")
    actions = datasets.add_subparsers(dest="datasets_action", required=True)
    importer = actions.add_parser("import", help="one sequence or scan of a data set -> a scene folder")
    kinds = importer.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, (module_name, help_text) in IMPORT_KINDS.items():
        module = _kind_module(module_name)
        if module is None:
            continue
        parser = kinds.add_parser(kind, help=help_text)
        module.register_import_args(parser)
        parser.set_defaults(func=module.cmd_import)
