"""Hosted mode: several users on one server (a team dashboard, a class).

``RECONBENCH_MODE=hosted`` turns it on (default ``local``: one user, no sign-in, as before).
:mod:`~core.hosted.roles` (who may do what, from a TOML roles file), :mod:`~core.hosted.namespaces`
(each user's scenes and uploads under ``<user>/<scene>``, shared or private) and
:mod:`~core.hosted.quotas` (queued jobs and stored bytes per user) are plain functions of a
:class:`~core.hosted.roles.User`; the pages reach them through ``core.app.access`` and never
decide access themselves.
"""
from __future__ import annotations

import os

MODE_ENV = "RECONBENCH_MODE"


def is_hosted() -> bool:
    """True when ``RECONBENCH_MODE`` is ``hosted`` (read at each call)."""
    return os.environ.get(MODE_ENV, "local").strip().lower() == "hosted"
