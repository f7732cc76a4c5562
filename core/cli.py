"""Shared pieces of the command line (``python -m core``), importable by modules that add commands."""
from __future__ import annotations

import argparse
from typing import Callable

from core.errors import UserError


class CliError(UserError):
    """A user error found by the command line itself: printed as one line, exit status 2."""


def load_scene(path: str):
    from core.data.scene import Scene, SceneError

    try:
        return Scene.load(path)
    except (SceneError, FileNotFoundError, NotADirectoryError) as error:
        raise CliError(str(error)) from None




def add_option_flags_lazily(parser: argparse.ArgumentParser, load_options_type: Callable[[], type],
                            title: str) -> None:
    """Give ``parser`` (a sub-command's) one flag per option of ``load_options_type()``, added only
    when that sub-command is parsed or its help is shown, so that building the whole CLI does not
    import the models an options type lives beside."""
    from core.options import add_arguments

    base = type(parser)

    class LazyFlags(base):
        def _add_flags(self) -> None:
            if not getattr(self, "_option_flags_added", False):
                self._option_flags_added = True
                add_arguments(self, load_options_type(), title)

        def parse_known_args(self, args=None, namespace=None):
            self._add_flags()
            return super().parse_known_args(args, namespace)

        def format_help(self):
            self._add_flags()
            return super().format_help()

    parser.__class__ = LazyFlags
