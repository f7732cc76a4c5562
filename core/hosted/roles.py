"""Roles: viewer (browse), runner (also submit jobs, within quotas), admin (also delete, see every job).

The roles file (TOML; ``$RECONBENCH_ROLES``, default ``.streamlit/roles.toml``)::

    profile = "team"              # or "class": anonymous visitors browse without signing in
    default_role = "viewer"       # signed-in users the file does not name ("" = refused)
    [users]                       # e-mail -> role
    "teacher@school.edu" = "runner"
    "lead@lab.org" = "admin"
    [groups]                      # a group claim of the OIDC token -> role (the highest wins)
    "reconbench-admins" = "admin"
    [quotas]                      # per user (core.hosted.quotas)
    queued_jobs = 4
    stored_bytes = 2_000_000_000

Local mode (no ``RECONBENCH_MODE=hosted``) has one user, ``local``, with every right.
"""
from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from core.errors import UserError

Role = Literal["viewer", "runner", "admin"]
ROLES: tuple[str, ...] = ("viewer", "runner", "admin")
ROLES_ENV = "RECONBENCH_ROLES"
PROFILES = ("team", "class")

# what each role may do; a role may do everything the roles before it may
ACTIONS: dict[str, Role] = {"browse": "viewer", "submit": "runner", "upload": "runner",
                            "delete": "admin", "see_all_jobs": "admin"}


class AccessDenied(UserError):
    """The signed-in user's role does not allow the action (or nobody is signed in)."""


class RolesFileError(UserError):
    """The roles file is unreadable or names an unknown role or profile."""


@dataclass(frozen=True)
class RolesConfig:
    """The parsed roles file (see the module docstring)."""

    profile: str = "team"
    default_role: str = "viewer"
    users: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)
    quotas: dict = field(default_factory=dict)

    @property
    def anonymous_viewers(self) -> bool:
        """The class profile lets visitors browse without signing in."""
        return self.profile == "class"


@dataclass(frozen=True)
class User:
    """Who is asking: ``id`` (stable, from the e-mail or ``anonymous``/``local``), role, and
    ``namespace`` (the folder name of their scenes and uploads)."""

    id: str
    role: Role
    email: str | None = None
    signed_in: bool = False

    @property
    def namespace(self) -> str:
        return namespace_of(self.id)


LOCAL_USER = User("local", "admin", signed_in=False)
_SLUG = re.compile(r"[^a-z0-9]+")


def namespace_of(user_id: str) -> str:
    """A folder name for ``user_id``: a readable slug plus 8 hex digits of its hash, so that two
    ids never share a namespace however they slug (non-Latin names, case, punctuation)."""
    slug = _SLUG.sub("-", user_id.lower()).strip("-")[:40] or "user"
    return f"{slug}-{hashlib.sha256(user_id.encode()).hexdigest()[:8]}"


def roles_path() -> Path:
    from core.store.cache import REPO_ROOT

    value = os.environ.get(ROLES_ENV)
    return Path(value).expanduser() if value else REPO_ROOT / ".streamlit" / "roles.toml"


def parse_roles(text: str, source: str = "roles file") -> RolesConfig:
    """A :class:`RolesConfig` from TOML text; raises :class:`RolesFileError` naming the problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RolesFileError(f"{source}: not valid TOML ({error})") from None
    profile = data.get("profile", "team")
    if profile not in PROFILES:
        raise RolesFileError(f"{source}: profile must be one of {', '.join(PROFILES)}; got {profile!r}")
    default = data.get("default_role", "viewer")
    if default not in ("",) + ROLES:
        raise RolesFileError(f"{source}: default_role must be one of {', '.join(ROLES)} or \"\"; got {default!r}")
    tables = {}
    for table in ("users", "groups"):
        entries = data.get(table, {})
        if not isinstance(entries, dict):
            raise RolesFileError(f"{source}: [{table}] must be a table of name = role")
        for name, role in entries.items():
            if role not in ROLES:
                raise RolesFileError(f"{source}: [{table}] {name!r} has unknown role {role!r} "
                                     f"(roles: {', '.join(ROLES)})")
        tables[table] = {str(k).lower() if table == "users" else str(k): v for k, v in entries.items()}
    quotas = data.get("quotas", {})
    if not isinstance(quotas, dict) or any(not isinstance(v, int) or v < 0 for v in quotas.values()):
        raise RolesFileError(f"{source}: [quotas] values must be non-negative integers")
    return RolesConfig(profile, default, tables["users"], tables["groups"], dict(quotas))


def load_roles(path: Path | None = None) -> RolesConfig:
    """The roles file at ``path`` (default :func:`roles_path`); a missing file is the default
    config (team profile, every signed-in user a viewer)."""
    path = path or roles_path()
    if not path.is_file():
        return RolesConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RolesFileError(f"roles file {path.name} is unreadable ({error})") from None
    return parse_roles(text, f"roles file {path.name}")


def resolve_user(info: dict | None, config: RolesConfig) -> User | None:
    """The :class:`User` for the identity claims ``info`` (``st.user`` as a dict: ``is_logged_in``,
    ``email``, optional ``groups``); None when nobody may enter (not signed in and not the class
    profile, or signed in without a role)."""
    info = info or {}
    if not info.get("is_logged_in"):
        return User("anonymous", "viewer") if config.anonymous_viewers else None
    email = str(info.get("email") or info.get("sub") or "").strip().lower()
    if not email:
        return None
    candidates = [config.users.get(email)]
    groups = info.get("groups") or []
    if isinstance(groups, str):
        groups = [groups]
    candidates += [config.groups.get(str(g)) for g in groups]
    found = [ROLES.index(r) for r in candidates if r]
    if found:
        role = ROLES[max(found)]
    elif config.default_role:
        role = config.default_role
    else:
        return None
    return User(email, role, email=email, signed_in=True)


def allowed(user: User | None, action: str) -> bool:
    """Whether ``user`` may do ``action`` (one of :data:`ACTIONS`)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
    return user is not None and ROLES.index(user.role) >= ROLES.index(ACTIONS[action])


def require(user: User | None, action: str) -> None:
    """Raise :class:`AccessDenied` with a one-line reason unless ``user`` may do ``action``."""
    if allowed(user, action):
        return
    if user is None:
        raise AccessDenied("sign in first")
    needed = ACTIONS[action]
    raise AccessDenied(f"{action.replace('_', ' ')} needs the {needed} role; you are signed in as "
                       f"{user.role} (ask an admin to change the roles file)")
