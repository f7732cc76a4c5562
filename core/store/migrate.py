"""Adopting runs stored before ground-truth fingerprints (keys without the ground truth).

Such runs stay readable as they are (ground-truth version ``unknown``), but a request never
answers from them, since today's keys cover the ground truth. :func:`adopt_legacy_runs` moves them
to today's keys for one scene, on the user's word that they were made against that scene's current
ground truth (``python -m core cache adopt --scene SCENE_DIR``). A run is adopted only when its old
key is exactly the key of its recorded method, version, options and views on this scene's
current input images, which proves it was computed from these very pictures; others are left alone
and reported.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from core.data.fingerprint import ground_truth_fingerprint
from core.data.scene import atomic_write_bytes, to_json
from core.store.cache import RunStore, run_key


@dataclass(frozen=True)
class Adoption:
    """One legacy run: its old and (when adopted) new key, or why it was left alone."""

    method: str
    old_key: str
    new_key: str | None
    reason: str = ""


def _legacy_key_parts(scene, meta: dict):
    """``(method, version, options, views, images)`` that produced a legacy key, or None."""
    views = [int(v) for v in meta.get("view_ids") or []]
    if any(not 0 <= v < scene.num_views for v in views):
        return None
    if meta.get("method") == "imported":
        options = meta.get("options") or {}
        return "imported", meta.get("version", "1"), {"sha256": options.get("sha256"),
                                                      "views": views or None}, [], []
    return meta["method"], meta.get("version", "1"), meta.get("options") or {}, views, \
        [scene.images[v] for v in views]


def adopt_legacy_runs(store: RunStore, scene, dry_run: bool = False) -> list[Adoption]:
    """Move ``scene.name``'s legacy runs to keys that cover ``scene``'s ground truth (see the
    module docstring); ``dry_run`` only reports. Runs that already carry a fingerprint are skipped."""
    fingerprint = ground_truth_fingerprint(scene)
    out = []
    for record in store.runs(scene.name):
        if record.ground_truth is not None:
            continue
        parts = _legacy_key_parts(scene, record.meta)
        candidates = [parts] if parts is not None else []
        if parts is not None and parts[0] == "imported":  # imports stored their views as given ([] or None)
            candidates.append(parts[:2] + ({**parts[2], "views": parts[2]["views"] or []},) + parts[3:])
        match = next((p for p in candidates if run_key(*p) == record.key), None)
        if match is None:
            out.append(Adoption(record.method, record.key, None,
                                "its key is not the key of its recorded inputs on this scene's pictures"))
            continue
        new_key = run_key(*match, ground_truth=fingerprint)
        target = store.run_dir(scene.name, record.method, new_key)
        if target.exists():
            out.append(Adoption(record.method, record.key, None, f"a run with the new key {new_key} exists"))
            continue
        if not dry_run:
            meta = json.loads((record.path / "meta.json").read_text(encoding="utf-8"))
            meta.setdefault("extra", {})["ground_truth"] = fingerprint
            atomic_write_bytes(record.path / "meta.json", to_json(meta).encode())
            os.rename(record.path, target)
        out.append(Adoption(record.method, record.key, new_key))
    return out
