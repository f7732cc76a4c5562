"""ReconBench's exception hierarchy: one base, and one branch for what the user can fix.

``ReconBenchError`` is the base of every exception ReconBench raises on purpose.
``UserError`` is the branch for bad input, missing weights, unknown or invalid options and
malformed files: the CLI prints it as one ``error:`` line and exits 2, a page shows it in
one error box. Anything else (a ``TypeError``, an ``IndexError``, a ``RuntimeError`` from a
library) is a bug and surfaces as one: boundaries catch ``UserError`` only.

Each module keeps its own subclass (``SceneError``, ``EvaluationError``, ...) so a message
says where it came from, but every one of them derives from this module's classes.
"""
from __future__ import annotations


class ReconBenchError(Exception):
    """Base of every exception ReconBench raises deliberately."""


class UserError(ReconBenchError):
    """Something the user can fix: bad input, a missing checkpoint, an invalid option.

    ``str(error)`` is one line meant for the user; boundaries show it as it is.
    """


class OptionError(UserError):
    """An unknown option name or a value outside its declared type, choices or range."""


class Cancelled(ReconBenchError):
    """The user stopped a computation; nothing was stored."""
