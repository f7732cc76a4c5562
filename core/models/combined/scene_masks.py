"""Storing the pipeline's object masks in a scene, so VGGT and others can filter by them.

Scenes the app created live under ``cache_root()/scenes`` and are updated in place (a new
``masks.npz`` through :meth:`Scene.save`). Any other scene (the bundled sample) is never
modified: the masks go into a derived copy ``<name>-masks`` under ``cache_root()/scenes``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.store.cache import cache_root
from core.data.scene import Scene, SceneError

log = logging.getLogger(__name__)


def scenes_root() -> Path:
    return cache_root() / "scenes"


def is_app_scene(scene: Scene) -> bool:
    """True when ``scene`` was loaded from a folder under ``cache_root()/scenes`` (editable)."""
    if scene.path is None:
        return False
    try:
        Path(scene.path).resolve().relative_to(scenes_root().resolve())
        return True
    except ValueError:
        return False


def merged_masks(scene: Scene, masks: dict[int, np.ndarray]) -> np.ndarray:
    """``bool [N,H,W]``: the scene's masks (or all-True where it has none) with ``masks`` replacing views."""
    n = scene.num_views
    h, w = scene.image_size
    out = scene.masks.copy() if scene.masks is not None else np.ones((n, h, w), dtype=bool)
    for view, mask in masks.items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (h, w):
            raise SceneError(f"mask of view {view} is {mask.shape}, the scene's views are {(h, w)}")
        out[int(view)] = mask
    return out


def save_masks(scene: Scene, masks: dict[int, np.ndarray], derived_name: str | None = None) -> Scene:
    """Write ``masks`` ({view id: bool [H,W]}) into ``scene`` or a derived copy; return the saved scene.

    Views without a mask keep the scene's mask, or an all-True one (no filtering) when the scene
    had none; ``provenance["object_masks"]`` records which views hold pipeline masks.
    """
    if not masks:
        raise SceneError("no masks to save")
    record = dict(scene.provenance.get("object_masks") or {})
    views = sorted(set(record.get("views", [])) | {int(v) for v in masks})
    provenance = {**scene.provenance, "object_masks": {"source": "combined pipeline", "views": views}}
    depth_scale = None
    if scene.path is not None and (Path(scene.path) / "scene.json").is_file():
        depth_scale = json.loads((Path(scene.path) / "scene.json").read_text()).get("depth_scale")
    if is_app_scene(scene):
        target, name = Path(scene.path), scene.name
    else:
        name = derived_name or f"{scene.name}-masks"
        target = scenes_root() / name
        provenance["derived_from"] = scene.name
    updated = replace(scene, name=name, masks=merged_masks(scene, masks), provenance=provenance, path=None)
    updated.save(target, image_format="png", depth_scale=depth_scale)
    log.info("saved object masks of views %s into %s", sorted(masks), target)
    return Scene.load(target)
