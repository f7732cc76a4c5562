"""The method registry: one line per method, options as dataclasses read by the UI and the CLI.

A method lives in its own module that defines ``METHOD = Method(...)``; add its module path to
``METHOD_MODULES`` below and it appears on its family's page, in the CLI (``python -m core run``)
and in the Metrics leaderboard. Modules are imported lazily so that the app opens without
importing torch.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

Family = Literal["sfm", "pipeline", "discriminative", "generative", "imported"]

# name -> module defining METHOD. One line per method.
METHOD_MODULES: dict[str, str] = {
    "colmap": "core.models.colmap.method",
    "vggt": "core.models.vggt.method",
    "dust3r": "core.models.dust3r.method",
    "fast3r": "core.models.fast3r.method",
    "combined": "core.models.combined.method",
    "lmnet": "core.models.lmnet.method",
    "lrm": "core.models.lrm.method",
    "pointe": "core.models.pointe.method",
}


def option(default: Any, help: str = "", choices: tuple | None = None,
           min: float | None = None, max: float | None = None, step: float | None = None,
           advanced: bool = False) -> Any:
    """A dataclass field carrying what the UI and CLI need to show it."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "step": step,
            "advanced": advanced}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def option_specs(options_type: type) -> list[dict]:
    """[{name, type, default, help, choices, min, max, step, advanced}] for a dataclass type."""
    specs = []
    for f in dataclasses.fields(options_type):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        specs.append({"name": f.name, "type": f.type, "default": default, **f.metadata})
    return specs


def options_from_dict(options_type: type, values: dict | None) -> Any:
    """Build an options dataclass from a dict, refusing unknown names."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(options_type)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return options_type(**values)


@dataclass(frozen=True)
class Availability:
    """Whether a method can run here, and if not, what is missing and the command that fixes it."""

    ok: bool
    missing: str = ""
    fix_command: str = ""

    def message(self) -> str:
        if self.ok:
            return "ready"
        if not self.fix_command or self.fix_command in self.missing:
            return self.missing
        return f"{self.missing} Run: {self.fix_command}"


def checkpoint_availability(checkpoint, explicit_path: str = "") -> Availability:
    """Ready when ``checkpoint`` resolves locally (see core.models.weights); else what to fetch."""
    from core.models import weights

    try:
        weights.resolve(checkpoint, explicit_path or None)
    except weights.MissingWeights as error:
        return Availability(False, str(error), checkpoint.fetch_command)
    return Availability(True)


@dataclass(frozen=True)
class Method:
    """A reconstruction method.

    Attributes:
        name: registry key and cache folder name.
        label: display name.
        family: ``sfm`` | ``pipeline`` | ``discriminative`` | ``generative``.
        version: bump when outputs change (part of the cache key).
        options_type: dataclass of the method's options (defaults = recommended).
        run: ``run(scene, view_ids, options, progress) -> Reconstruction``.
        availability: ``availability(options) -> Availability``.
        min_views / max_views: accepted number of input views (None = unbounded).
        description: one paragraph for the page.
    """

    name: str
    label: str
    family: Family
    version: str
    options_type: type
    run: Callable
    availability: Callable
    min_views: int = 1
    max_views: int | None = None
    description: str = ""

    def default_options(self) -> Any:
        return self.options_type()

    def check_views(self, view_ids: list[int]) -> None:
        n = len(view_ids)
        if n < self.min_views:
            raise ValueError(f"{self.label} needs at least {self.min_views} view(s); got {n}")
        if self.max_views is not None and n > self.max_views:
            raise ValueError(f"{self.label} takes at most {self.max_views} view(s); got {n}")


_loaded: dict[str, Method] = {}


def get(name: str) -> Method:
    """The Method registered as ``name`` (imports its module on first use)."""
    if name not in METHOD_MODULES:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(sorted(METHOD_MODULES))}")
    if name not in _loaded:
        _loaded[name] = importlib.import_module(METHOD_MODULES[name]).METHOD
    return _loaded[name]


def names(family: str | None = None) -> list[str]:
    """Registered method names, optionally of one family (imports their modules)."""
    out = list(METHOD_MODULES)
    if family is not None:
        out = [n for n in out if get(n).family == family]
    return out
