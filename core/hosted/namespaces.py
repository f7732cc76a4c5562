"""Each user's scenes and uploads: ``<root>/<namespace>/<name>``, private unless shared.

Prepared scenes live under ``cache_root()/scenes/<namespace>/<scene>`` and upload batches under
``cache_root()/uploads/<namespace>/<batch>``. A scene is listed to others only when its owner
shared it (``<namespace>/shares.json``: ``{"scene name": true}``, kept outside the scene folder so
that a new preparation of the scene keeps its sharing). Nobody writes into another user's
namespace; reading needs ownership, a share, or the admin role; deleting needs ownership or the
admin role. Every refusal is an :class:`~core.hosted.roles.AccessDenied` that names the scene,
never a server path.
"""
from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from core.data.scene import atomic_write_bytes
from core.hosted.roles import AccessDenied, User, allowed, require
from core.store.cache import cache_root, safe_name

SHARES_FILE = "shares.json"


@dataclass(frozen=True)
class SceneRef:
    """A scene as the UI names it: owner namespace + scene name (+ whether it is shared)."""

    namespace: str
    name: str
    path: Path
    shared: bool

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"


def scenes_root() -> Path:
    return cache_root() / "scenes"


def uploads_root() -> Path:
    return cache_root() / "uploads"


def scene_dir(user: User, name: str) -> Path:
    """Where ``user``'s scene ``name`` lives (the only place their preparations write)."""
    require(user, "upload")
    return scenes_root() / user.namespace / _scene_name(name)


def _scene_name(name: str) -> str:
    clean = safe_name(name, default="")
    if not clean:
        raise AccessDenied(f"choose a scene name of letters, digits, '.', '_' or '-'; got {name!r}")
    return clean


def _shares(namespace: str) -> dict:
    path = scenes_root() / namespace / SHARES_FILE
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def share(user: User, name: str, shared: bool = True) -> None:
    """Share (or stop sharing) ``user``'s own scene ``name`` with every other user."""
    folder = scene_dir(user, name)
    if not (folder / "scene.json").is_file():
        raise AccessDenied(f"you have no scene {name!r}")
    shares = _shares(user.namespace)
    shares[folder.name] = bool(shared)
    atomic_write_bytes(scenes_root() / user.namespace / SHARES_FILE, json.dumps(shares, indent=2).encode())


def visible_scenes(user: User) -> list[SceneRef]:
    """The scenes ``user`` may open: their own, every shared one, and all of them for an admin."""
    root = scenes_root()
    out = []
    if not root.is_dir():
        return out
    for ns_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        shares = _shares(ns_dir.name)
        for folder in sorted(p for p in ns_dir.iterdir() if (p / "scene.json").is_file()):
            shared = bool(shares.get(folder.name))
            if ns_dir.name == user.namespace or shared or allowed(user, "delete"):
                out.append(SceneRef(ns_dir.name, folder.name, folder, shared))
    return out


def open_scene(user: User, namespace: str, name: str) -> Path:
    """The folder of scene ``namespace/name`` when ``user`` may read it; else AccessDenied
    (the same message whether it is private or absent, so that nothing leaks)."""
    require(user, "browse")
    for ref in visible_scenes(user):
        if ref.namespace == namespace and ref.name == name:
            return ref.path
    raise AccessDenied(f"no scene {namespace}/{name} that you can open")


def delete_scene(user: User, namespace: str, name: str) -> None:
    """Delete scene ``namespace/name``: its owner or an admin only."""
    if namespace != user.namespace:
        require(user, "delete")
    folder = open_scene(user, namespace, name)
    doomed = folder.parent / f".tmp-delete-{uuid.uuid4().hex[:8]}"
    folder.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    shares = _shares(namespace)
    if shares.pop(name, None) is not None:
        atomic_write_bytes(scenes_root() / namespace / SHARES_FILE, json.dumps(shares, indent=2).encode())


def upload_root(user: User) -> Path:
    """``user``'s upload folder (batches under generated names, see
    :func:`core.data.prepare.uploads.store_uploads`)."""
    require(user, "upload")
    return uploads_root() / user.namespace


def open_upload(user: User, namespace: str, batch: str) -> Path:
    """The folder of upload batch ``namespace/batch``: its owner or an admin only."""
    if namespace != user.namespace:
        require(user, "delete")
    folder = uploads_root() / namespace / safe_name(batch)
    if not (folder / "batch.json").is_file():
        raise AccessDenied(f"no upload batch {batch!r} that you can open")
    return folder
