"""The method registry and the method contract.

A method is a subclass of :class:`Method` that declares what it is (name, family, version,
options type, checkpoints with their licences, accepted view counts) and implements two
things only:

- ``load(options, device) -> model``: build or load the model the options ask for;
- ``predict(model, scene, view_ids, options, progress, device) -> Reconstruction``: the
  reconstruction itself (points, cameras, depth... in the method's frame).

Everything else is the runner's (:mod:`core.models.runner`): validating options and views,
checking availability, resolving the device, caching loaded models, measuring time and peak
memory, counting parameters and recording provenance (including the typed weights kind).

A method lives in its own package module that defines ``METHOD = SomeMethod()``; add the
module path to ``METHOD_MODULES`` below and it appears on its family's page, in the CLI
(``python -m core run NAME --help`` lists its options) and in the leaderboard. Modules are
imported lazily so that the app opens without importing torch.
"""
from __future__ import annotations

import abc
import dataclasses
import importlib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from core import options as opts
from core.errors import UserError

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
    "shape": "core.models.shape.method",
    "pi3": "core.models.pi3.method",
    "pi3x": "core.models.pi3.pi3x_method",
    "da3-small": "core.models.da3.small",
    "da3-base": "core.models.da3.base",
}


class UnknownMethod(UserError):
    """A method name that is not registered."""


class CannotRun(UserError):
    """The method cannot run here with these options (missing checkpoint, no CUDA, ...)."""


@dataclass(frozen=True)
class Availability:
    """Whether a method can run here, and if not, what is missing and the command that fixes it."""

    ok: bool
    missing: str = ""
    fix_command: str = ""
    details: tuple[str, ...] = ()      # one line per missing file or model, for a page's list

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
        if explicit_path:
            return Availability(False, str(error), checkpoint.fetch_command, (str(error),))
        where = checkpoint.repo_id or checkpoint.url or "its publisher"
        size = f", {checkpoint.size_mb:,.0f} MB" if checkpoint.size_mb else ""
        line = f"{checkpoint.description or checkpoint.key}: {checkpoint.filename} ({where}{size})"
        return Availability(False, str(error), checkpoint.fetch_command, (line,))
    return Availability(True)


def all_available(*results: Availability) -> Availability:
    """Ready when all are; else every missing piece (``details``: one line each) with one fetch
    command naming every key (``python -m core weights fetch A B``)."""
    missing = [result for result in results if not result.ok]
    if not missing:
        return Availability(True)
    if len(missing) == 1:
        only = missing[0]
        return dataclasses.replace(only, details=only.details or (only.missing,))
    prefix = "python -m core weights fetch "
    keys = [key for result in missing if result.fix_command.startswith(prefix)
            for key in result.fix_command[len(prefix):].split()]
    fix = prefix + " ".join(dict.fromkeys(keys)) if keys else ""
    return Availability(False, " ".join(result.missing for result in missing), fix,
                        tuple(line for result in missing for line in (result.details or (result.missing,))))


class Method(abc.ABC):
    """A reconstruction method (see the module docstring for the contract).

    Class attributes:
        name: registry key and cache folder name.
        label: display name.
        family: ``sfm`` | ``pipeline`` | ``discriminative`` | ``generative``.
        version: bump when outputs change (part of the cache key).
        options_type: options dataclass (built with :func:`core.options.option`; defaults are
            the recommended settings).
        checkpoints: ``{weights choice: (Checkpoint, ...)}`` the choice needs; each
            Checkpoint states its licence.
        min_views / max_views: accepted number of input views (None = unbounded).
        description: one paragraph for the page.
        label_options: names of the options whose values tell this method's stored runs apart
            in lists and the leaderboard (variant, checkpoint, prompt); see :func:`run_label`.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    family: ClassVar[Family]
    version: ClassVar[str]
    options_type: ClassVar[type]
    min_views: ClassVar[int] = 1
    max_views: ClassVar[int | None] = None
    description: ClassVar[str] = ""
    label_options: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ declarations
    def default_options(self) -> Any:
        return self.options_type()

    def weights_kind(self, options) -> opts.WeightsKind | None:
        """The typed kind of the weights these options use (None: the method has no weights).

        Default: the ``weights`` option's value when it names a kind, else ``pretrained``.
        """
        value = getattr(options, "weights", None)
        if value is None:
            return None
        return value if value in typing.get_args(opts.WeightsKind) else "pretrained"

    def checkpoints(self, options) -> tuple:
        """The :class:`core.models.weights.Checkpoint` objects these options load (none for
        random weights)."""
        return ()

    def explicit_path(self, options) -> str:
        """An explicit checkpoint file named by the options (``checkpoint_path``), or ''."""
        return getattr(options, "checkpoint_path", "") or ""

    def availability(self, options) -> Availability:
        """Ready, or what is missing and the command that fetches it (default: every
        checkpoint of :meth:`checkpoints` resolves locally)."""
        checkpoints = self.checkpoints(options)
        path = self.explicit_path(options)
        return all_available(*(checkpoint_availability(c, path if i == 0 else "")
                               for i, c in enumerate(checkpoints)))

    def check_options(self, options) -> None:
        """Cross-field checks beyond each option's declared type and range (raise OptionError)."""

    def model_key(self, options) -> tuple:
        """What identifies the loaded model for the runner's cache: by default the values of
        the options that change the model (``weights``, ``checkpoint``, ``variant``, model
        choices and checkpoint paths); a path enters as the file it names (``./a.pt`` and
        ``a.pt`` share one model), no other free text enters the key."""
        names = ("weights", "checkpoint", "variant", "checkpoint_path", "detector", "segmenter",
                 "depth_model", "upsample_checkpoint_path", "clip_checkpoint_path", "image_size")
        key = []
        for name in names:
            if hasattr(options, name):
                value = getattr(options, name)
                if name.endswith("_path") and value:
                    value = str(Path(value).expanduser().resolve())
                key.append((name, value))
        return tuple(key)

    def parameter_count(self, model) -> int:
        """Parameters of the loaded model (0 when it has none)."""
        parameters = getattr(model, "parameters", None)
        if parameters is None:
            return 0
        return int(sum(p.numel() for p in parameters()))

    def cost_bytes(self, model) -> int:
        """Memory the loaded model holds (for the model cache's eviction)."""
        parameters = getattr(model, "parameters", None)
        if parameters is None:
            return 0
        return int(sum(p.numel() * p.element_size() for p in parameters()))

    def resources(self, options, gpus_in_cluster: float = 0.0) -> dict:
        """What one run with ``options`` asks Ray for: ``{"num_cpus", "num_gpus", "memory"}``
        (memory in bytes, None = not declared), so a cluster queues what does not fit.

        Default: one CPU; one GPU when the device option is ``cuda``, or ``auto`` on a cluster
        that has GPUs (Ray hides the GPUs from a task that asked for none). A method whose
        model is large overrides this with its memory."""
        device = getattr(options, "device", None)
        wants_gpu = device == "cuda" or (device == "auto" and gpus_in_cluster > 0)
        return {"num_cpus": 1, "num_gpus": 1 if wants_gpu else 0, "memory": None}

    def flops(self, options, n_views: int, height: int, width: int) -> float | None:
        """Analytic FLOPs of one forward pass with ``options`` on ``n_views`` pictures of
        ``height x width`` pixels (the input pictures' size, before the method's own
        preprocessing, which the method applies itself) -- the model the options load, with the
        heads they run. None (the default): the method has no FLOP model. The view-count scaling
        study fits ``a·FLOPs(n) + b`` to time and memory with it."""
        return None

    def alignment_work(self, options, n_views: int, height: int, width: int) -> tuple[float, float]:
        """``(iterations, units)`` of an iterative stage after the network (``(0, 0)``: none), which
        the cost estimate (:mod:`core.studies.cost`) prices as a fixed cost per iteration plus a
        cost per unit, from stored runs' ``extra["alignment_seconds"]``. DUSt3R: its global
        alignment's iterations, and iterations x edges x network pixels per view."""
        return 0.0, 0.0

    # ------------------------------------------------------------------ the two steps
    @abc.abstractmethod
    def load(self, options, device: str) -> Any:
        """Build or load the model the options ask for, on ``device`` (``cpu`` / ``cuda``)."""

    @abc.abstractmethod
    def predict(self, model, scene, view_ids: list[int], options, progress, device: str):
        """Reconstruct ``scene``'s views ``view_ids`` -> :class:`core.data.scene.Reconstruction`.

        ``options`` are validated, ``view_ids`` checked, ``device`` resolved; the runner fills
        in timing, memory, parameter count and provenance afterwards.
        """

    # ------------------------------------------------------------------ helpers
    def parse_options(self, values=None):
        """Validated options of this method (see :func:`core.options.parse`)."""
        parsed = opts.parse(self.options_type, values)
        self.check_options(parsed)
        return parsed

    def check_views(self, view_ids: list[int], num_views: int | None = None) -> list[int]:
        """``view_ids`` as ints, refusing out-of-range, duplicate or too few/many views
        (:func:`check_view_ids`, then this method's own bounds)."""
        ids = check_view_ids(view_ids, num_views)
        if len(ids) < self.min_views:
            raise UserError(f"{self.label} needs at least {self.min_views} view(s); got {len(ids)}")
        if self.max_views is not None and len(ids) > self.max_views:
            raise UserError(f"{self.label} takes at most {self.max_views} view(s); got {len(ids)}")
        return ids

    def licences(self, options) -> list[str]:
        """Licence of each checkpoint the options load."""
        return [f"{c.key}: {c.licence}" for c in self.checkpoints(options)]


def check_view_ids(view_ids, num_views: int | None = None) -> list[int]:
    """``view_ids`` as ints; raises UserError for non-integers, ids outside ``0..num_views-1``,
    repeated ids, and more ids than :data:`core.limits.VIEWS` allows."""
    from core import limits

    try:
        ids = [int(v) for v in view_ids]
        if any(float(v) != i for v, i in zip(view_ids, ids)):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"view ids must be integers; got {list(view_ids)!r}") from None
    limits.VIEWS.check(len(ids), "view ids")
    if num_views is not None:
        bad = [v for v in ids if not 0 <= v < num_views]
        if bad:
            raise UserError(f"view ids must be in 0..{num_views - 1}; got {bad}")
    duplicates = sorted({v for v in ids if ids.count(v) > 1})
    if duplicates:
        raise UserError(f"view ids must be distinct; {duplicates} repeated")
    return ids


_loaded: dict[str, Method] = {}


def get(name: str) -> Method:
    """The Method registered as ``name`` (imports its module on first use)."""
    if name not in METHOD_MODULES:
        raise UnknownMethod(f"unknown method {name!r}; registered: {', '.join(sorted(METHOD_MODULES))}")
    if name not in _loaded:
        _loaded[name] = importlib.import_module(METHOD_MODULES[name]).METHOD
    return _loaded[name]


def names(family: str | None = None) -> list[str]:
    """Registered method names, optionally of one family (imports their modules)."""
    out = list(METHOD_MODULES)
    if family is not None:
        out = [n for n in out if get(n).family == family]
    return out


def run_label(method: str, meta: dict) -> str:
    """The display label of a stored run, e.g. ``"3D-LMNet · dgcnn · trained-here"``.

    Args:
        method: the run's method name (registry key, ``imported``, or an unregistered name).
        meta: its ``meta.json`` (``options``, ``weights_kind``).
    Returns:
        The method's label, the values of its ``label_options`` that are set, then the weights
        kind; an imported run reads ``"Imported · <file name>"``; an unregistered method its name.
    """
    options = meta.get("options") or {}
    if method == "imported":
        return f"Imported · {options.get('file') or 'file'}"
    if method in METHOD_MODULES:
        found = get(method)
        parts = [found.label] + [str(options[name]) for name in found.label_options
                                 if options.get(name) not in (None, "")]
    else:
        parts = [method]
    if meta.get("weights_kind"):
        parts.append(str(meta["weights_kind"]))
    return " · ".join(parts)


def default_weights(method: Method) -> str | None:
    """The best weights choice that is actually available here: the first non-random choice
    (``pretrained``, ``shipped``, ``trained-here``, in the options' declared order) whose
    checkpoints resolve, else ``random-tiny``; None when the method has no ``weights`` option."""
    spec = next((s for s in opts.specs(method.options_type) if s.name == "weights"), None)
    if spec is None:
        return None
    for choice in spec.choices:
        if choice in opts.RANDOM_WEIGHTS:
            continue
        try:
            if method.availability(method.parse_options({"weights": choice})).ok:
                return choice
        except UserError:
            continue
    return "random-tiny" if "random-tiny" in spec.choices else spec.default


def options_dict(options) -> dict:
    """Plain dict of an options instance (stored and hashed)."""
    return dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options or {})
