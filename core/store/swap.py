"""Replacing a whole folder by renames, and recovering a replacement that a crash interrupted.

A finished folder (a prepared scene, a run folder returned by a worker) replaces an existing one
in two renames on one file system: the old folder is renamed aside to ``.tmp-old-<name>-<8 hex>``
in the same parent, then the new one is renamed in, then the aside is removed. A process killed
between the two renames leaves the target missing and its previous content in the aside.

:func:`recover_swaps` puts such an aside back when its target is missing, and removes it when
the target is complete (the new folder got in); whoever cleans staging leftovers calls it (the
job manager after a failed job, :meth:`core.store.cache.RunStore.clean_staging` at start-up).
It acts at any age: the window between the two renames of a live swap is two system calls, and
racing it loses nothing (the live swap's second rename then fails on the restored folder and its
job fails with the old folder in place).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ASIDE_PREFIX = ".tmp-old-"
#: ``.tmp-old-<target name>-<8 hex>``: no other staging name starts so (run and prepare-job
#: staging folders are ``.tmp-<hex key>-...``, a preparation's own ``.tmp-prepare-...``)
_ASIDE = re.compile(r"^\.tmp-old-(?P<name>.+)-[0-9a-f]{8}$")
#: a folder holding one of these files is complete (a scene, a run)
COMPLETE_MARKERS = ("scene.json", "meta.json")


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` is a complete scene or run folder (``scene.json`` or ``meta.json``)."""
    return folder.is_dir() and any((folder / marker).is_file() for marker in COMPLETE_MARKERS)


def swap_into_place(staging: Path, final: Path) -> None:
    """Put the finished folder ``staging`` at ``final`` (same parent folder): an existing ``final``
    is renamed aside (``.tmp-old-<name>-<hex>``), ``staging`` renamed in, the aside removed; a
    failed second rename puts the old folder back and raises. A crash between the renames is
    undone by :func:`recover_swaps`."""
    aside = None
    if final.exists():
        aside = final.parent / f"{ASIDE_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
        os.rename(final, aside)
    try:
        os.rename(staging, final)
    except OSError:
        if aside is not None and not final.exists():
            os.rename(aside, final)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover_swaps` did with one aside folder: ``restored`` (renamed back to
    ``target``), ``removed`` (``target`` is complete) or ``kept`` (``target`` exists but is not a
    complete folder: nothing is touched, the aside stays for a person to look at)."""

    aside: Path
    target: Path
    action: str


def aside_target(path: Path) -> Path | None:
    """The folder an aside ``path`` was moved from, or None when ``path`` is not an aside."""
    match = _ASIDE.match(path.name)
    return path.parent / match["name"] if match else None


def recover_swaps(parent: Path | str, recursive: bool = False) -> list[Recovery]:
    """Undo or finish the interrupted swaps under ``parent`` (its direct children, or every folder
    below it when ``recursive``): an aside whose target is missing is renamed back, an aside whose
    target is complete is removed, any other is kept. Returns what was done, one per aside."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    candidates = parent.rglob(f"{ASIDE_PREFIX}*") if recursive else parent.glob(f"{ASIDE_PREFIX}*")
    done = []
    for aside in sorted(candidates):
        target = aside_target(aside)
        if target is None or not aside.is_dir() or aside.is_symlink():
            continue
        try:
            if not target.exists():
                os.rename(aside, target)
                action = "restored"
            elif is_complete(target):
                shutil.rmtree(aside, ignore_errors=True)
                action = "removed"
            else:
                action = "kept"
        except OSError:  # moved by a concurrent recovery
            continue
        log.log(logging.WARNING if action != "removed" else logging.INFO,
                "interrupted swap: %s %s (target %s)", action, aside, target)
        done.append(Recovery(aside, target, action))
    return done
