"""Per-user quotas in hosted mode: queued jobs and stored bytes (scenes + uploads).

Values come from the roles file's ``[quotas]`` table (``queued_jobs``, ``stored_bytes``; defaults
below). Admins have no quota. Each check raises :class:`QuotaExceeded` (a ``UserError``) before
anything is queued or written.
"""
from __future__ import annotations

from pathlib import Path

from core.errors import UserError
from core.hosted import namespaces
from core.hosted.roles import RolesConfig, User, allowed

DEFAULT_QUEUED_JOBS = 4
DEFAULT_STORED_BYTES = 2 * 1024**3


class QuotaExceeded(UserError):
    """A user's request would go over their quota."""


def _folder_bytes(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:  # removed while counting
            continue
    return total


def stored_bytes(user: User) -> int:
    """Bytes of ``user``'s scenes and uploads."""
    return (_folder_bytes(namespaces.scenes_root() / user.namespace)
            + _folder_bytes(namespaces.uploads_root() / user.namespace))


def check_storage(user: User, config: RolesConfig, incoming_bytes: int) -> None:
    """Refuse ``incoming_bytes`` more for ``user`` when it would pass ``stored_bytes``."""
    if allowed(user, "delete"):
        return
    limit = int(config.quotas.get("stored_bytes", DEFAULT_STORED_BYTES))
    used = stored_bytes(user)
    if used + incoming_bytes > limit:
        raise QuotaExceeded(f"storage quota: {used / 2**20:,.1f} MB used + {incoming_bytes / 2**20:,.1f} MB "
                            f"is over your {limit / 2**20:,.0f} MB (delete scenes or ask an admin)")


def check_queue(user: User, config: RolesConfig, queued_jobs: int) -> None:
    """Refuse one more job when ``user`` already has ``queued_jobs`` queued or running."""
    if allowed(user, "delete"):
        return
    limit = int(config.quotas.get("queued_jobs", DEFAULT_QUEUED_JOBS))
    if queued_jobs + 1 > limit:
        raise QuotaExceeded(f"job quota: you have {queued_jobs} job(s) queued or running, the limit is {limit}; "
                            "wait for one to finish or cancel one")
