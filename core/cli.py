"""Shared pieces of the command line (``python -m core``), importable by modules that add commands."""
from __future__ import annotations

from core.errors import UserError


class CliError(UserError):
    """A user error found by the command line itself: printed as one line, exit status 2."""


def load_scene(path: str):
    from core.data.scene import Scene, SceneError

    try:
        return Scene.load(path)
    except (SceneError, FileNotFoundError, NotADirectoryError) as error:
        raise CliError(str(error)) from None


