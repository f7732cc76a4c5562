"""Shared pieces of the command line (``python -m core``), importable by modules that add commands."""
from __future__ import annotations

import json

from core.errors import UserError


class CliError(UserError):
    """A user error found by the command line itself: printed as one line, exit status 2."""


def parse_option_values(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise CliError(f"--option takes key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def load_scene(path: str):
    from core.data.scene import Scene, SceneError

    try:
        return Scene.load(path)
    except (SceneError, FileNotFoundError, NotADirectoryError) as error:
        raise CliError(str(error)) from None


