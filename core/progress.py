"""Progress reporting and cooperative stopping for long work, without Streamlit.

Core functions take a ``progress`` argument: call ``progress(fraction, message)`` as work
advances and ``progress.check()`` at safe points; ``check`` raises :class:`Stopped` when the
user asked to stop. Pages adapt it to ``st.progress``; the CLI prints to stderr.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Callable

from core.errors import Cancelled

log = logging.getLogger(__name__)


class Stopped(Cancelled):
    """The user asked the running work to stop; nothing half-done is kept."""


class Progress:
    """Callable progress sink with a stop flag.

    Args:
        callback: ``callback(fraction in [0,1], message)`` or None to discard updates.
    """

    def __init__(self, callback: Callable[[float, str], None] | None = None) -> None:
        self._callback = callback
        self._stop = threading.Event()
        self.started = time.perf_counter()
        self.last_message = ""

    def __call__(self, fraction: float, message: str = "") -> None:
        self.last_message = message
        if self._callback is not None:
            self._callback(min(max(float(fraction), 0.0), 1.0), message)
        self.check()

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def check(self) -> None:
        """Raise :class:`Stopped` if a stop was requested."""
        if self._stop.is_set():
            raise Stopped(self.last_message or "stopped")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def sub(self, start: float, end: float) -> "Progress":
        """A child whose [0,1] maps onto [start,end] of this one and shares its stop flag."""
        parent = self

        def forward(fraction: float, message: str) -> None:
            parent(start + (end - start) * fraction, message)

        child = Progress(forward)
        child._stop = self._stop
        return child


def silent() -> Progress:
    return Progress(None)


def to_stderr() -> Progress:
    """Progress that prints one line per update to stderr (CLI)."""
    def show(fraction: float, message: str) -> None:
        print(f"[{fraction * 100:5.1f}%] {message}", file=sys.stderr, flush=True)
    return Progress(show)
