"""One typed option surface for methods, preparation, evaluation and studies.

An options type is a dataclass whose fields are declared with :func:`option`:

    @dataclass
    class MyOptions(DeviceOptions):
        mode: Literal["fast", "best"] = option("fast", "speed against quality")
        steps: int = option(64, "sampler steps", min=1, max=1024)

The field's annotation is its type (``Literal[...]`` for choices, ``int``, ``float``, ``bool``,
``str``); :func:`option` adds the one-line help, an optional range and whether the option is
"advanced". Shared groups (:class:`DeviceOptions`, :class:`PointFilterOptions`,
:class:`ObjectMaskOptions`) are declared once here and included by inheritance.

The same declarations drive everything that shows or reads options:
:func:`specs` (the page widgets in ``core.app.widgets``), :func:`add_arguments` /
:func:`from_namespace` (one CLI flag per option, with its help and choices), and
:func:`parse` (``--option key=value`` strings, dicts from pages or stored runs, or instances),
which validates names, types, choices and ranges in one place and raises
:class:`core.errors.OptionError` with a message that lists what is valid.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from core.errors import OptionError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def option(default: Any, help: str = "", *, min: float | None = None, max: float | None = None,
           step: float | None = None, advanced: bool = False) -> Any:
    """A dataclass field with the metadata the UI, the CLI and validation read.

    Args:
        default: the recommended value (lists and dicts are copied per instance).
        help: one line shown as the widget's help and the CLI flag's help.
        min, max: inclusive range of a number.
        step: the widget's increment.
        advanced: shown in the "advanced" expander / marked so in ``--help``.
    """
    meta = {"help": help, "min": min, "max": max, "step": step, "advanced": advanced}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionSpec:
    """What one option is: its name, type, default, choices or range, and help."""

    name: str
    kind: str                      # "choice" | "bool" | "int" | "float" | "str" | "floats"
    default: Any
    help: str = ""
    choices: tuple = ()
    min: float | None = None
    max: float | None = None
    step: float | None = None
    advanced: bool = False

    def describe(self) -> str:
        """One line: help, then the valid values."""
        if self.kind == "choice":
            valid = "choices: " + ", ".join(str(c) for c in self.choices)
        elif self.kind in ("int", "float") and (self.min is not None or self.max is not None):
            low = "-inf" if self.min is None else f"{self.min:g}"
            high = "inf" if self.max is None else f"{self.max:g}"
            valid = f"{self.kind} in [{low}, {high}]"
        else:
            valid = self.kind
        return f"{self.help} ({valid}; default {self.default!r})" if self.help else f"({valid}; default {self.default!r})"


def _kind_and_choices(annotation) -> tuple[str, tuple]:
    if typing.get_origin(annotation) is Literal:
        return "choice", tuple(typing.get_args(annotation))
    if typing.get_origin(annotation) is tuple and typing.get_args(annotation) == (float, ...):
        return "floats", ()
    for kind, python_type in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if annotation is python_type:
            return kind, ()
    raise TypeError(f"option type {annotation!r} is not supported "
                    "(use Literal, bool, int, float, str, tuple[float, ...])")


def specs(options_type: type) -> list[OptionSpec]:
    """The :class:`OptionSpec` of every field of ``options_type``, in declaration order."""
    hints = typing.get_type_hints(options_type)
    own = set(vars(options_type).get("__annotations__", {}))
    fields = dataclasses.fields(options_type)
    # The type's own options first, then the shared groups it includes.
    fields = [f for f in fields if f.name in own] + [f for f in fields if f.name not in own]
    out = []
    for f in fields:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind, choices = _kind_and_choices(hints[f.name])
        meta = f.metadata
        out.append(OptionSpec(f.name, kind, default, meta.get("help", ""), choices, meta.get("min"),
                              meta.get("max"), meta.get("step"), bool(meta.get("advanced", False))))
    return out


def _coerce(spec: OptionSpec, value: Any) -> Any:
    """``value`` (a Python value or CLI text) as the option's type, or OptionError."""
    name = spec.name
    if spec.kind == "choice":
        for choice in spec.choices:
            if value == choice or (isinstance(value, str) and str(choice) == value.strip()):
                return choice
        raise OptionError(f"unknown {name} {value!r} (choices: {', '.join(str(c) for c in spec.choices)})")
    if spec.kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise OptionError(f"{name} must be true or false; got {value!r}")
    if spec.kind == "floats":
        items = value.replace(",", " ").split() if isinstance(value, str) else value
        try:
            numbers = tuple(float(v) for v in items)
        except (TypeError, ValueError):
            raise OptionError(f"{name} must be numbers separated by commas; got {value!r}") from None
        if not numbers or not all(math.isfinite(v) for v in numbers):
            raise OptionError(f"{name} must be one or more finite numbers; got {value!r}")
        bad = [v for v in numbers if (spec.min is not None and v < spec.min) or
               (spec.max is not None and v > spec.max)]
        if bad:
            raise OptionError(f"{name} values must be in [{spec.min:g}, {spec.max:g}]; got {bad}")
        return numbers
    if spec.kind == "str":
        if not isinstance(value, str):
            raise OptionError(f"{name} must be text; got {value!r}")
        return value
    if isinstance(value, bool):
        raise OptionError(f"{name} must be a number; got {value!r}")
    try:
        if spec.kind == "int":
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                number: Any = int(value)
            else:
                number = int(str(value).strip()) if isinstance(value, str) else int(value)
        else:
            number = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"{name} must be {'an integer' if spec.kind == 'int' else 'a number'}; "
                          f"got {value!r}") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise OptionError(f"{name} must be finite; got {value!r}")
    if (spec.min is not None and number < spec.min) or (spec.max is not None and number > spec.max):
        low = "-inf" if spec.min is None else f"{spec.min:g}"
        high = "inf" if spec.max is None else f"{spec.max:g}"
        raise OptionError(f"{name} must be in [{low}, {high}]; got {value!r}")
    return number


def parse(options_type: type, values: Any = None) -> Any:
    """A validated ``options_type`` instance from None, a dict (names -> values or CLI text) or
    an instance. Unknown names, wrong types, unknown choices and out-of-range numbers raise
    :class:`OptionError` naming what is valid."""
    if values is None:
        values = {}
    elif isinstance(values, options_type):
        values = dataclasses.asdict(values)
    elif dataclasses.is_dataclass(values) and not isinstance(values, type):
        raise OptionError(f"expected {options_type.__name__}, got {type(values).__name__}")
    elif not isinstance(values, dict):
        raise OptionError(f"options must be a mapping; got {type(values).__name__}")
    by_name = {spec.name: spec for spec in specs(options_type)}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise OptionError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(by_name))}")
    return options_type(**{name: _coerce(by_name[name], value) for name, value in values.items()})


def _assignments(assignments: list[str] | None) -> dict[str, str]:
    """{name: text} of CLI ``key=value`` strings (later ones win)."""
    values = {}
    for text in assignments or []:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"option {text!r} is not key=value")
        values[key.strip()] = value
    return values


def parse_assignments(options_type: type, assignments: list[str] | None) -> Any:
    """Options from CLI ``key=value`` strings (later ones win)."""
    return parse(options_type, _assignments(assignments))


def is_path_option(name: str) -> bool:
    """Whether the option ``name`` names a file on the server (``checkpoint_path``, ``*_path``):
    pages offer those as a choice of found checkpoints, never as free text, and a hosted server
    refuses them (:func:`refuse_paths_when_hosted`)."""
    return name.endswith("_path")


def refuse_paths_when_hosted(options: Any) -> None:
    """In hosted mode (:func:`core.hosted.is_hosted`), raise :class:`OptionError` when an option
    naming a server file is set: web users choose checkpoints from the weights list only."""
    from core.hosted import is_hosted

    if not is_hosted():
        return
    named = sorted(name for name, value in as_dict(options).items() if is_path_option(name) and value)
    if named:
        raise OptionError(f"{', '.join(named)} cannot be set on a hosted server; the checkpoints found by "
                          "`python -m core weights list` are used")


def as_dict(options: Any) -> dict:
    """Plain dict of an options instance (what is stored and hashed)."""
    return dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options or {})


def add_arguments(parser: argparse.ArgumentParser, options_type: type, title: str | None = None) -> None:
    """One ``--name`` flag per option (dashes for underscores), with help, choices and default.

    Flags default to None so :func:`from_namespace` can tell "not given" from a value; values
    are validated by :func:`parse`, so a bad value gets the same message as everywhere else.
    """
    group = parser.add_argument_group(title or f"{options_type.__name__} (also as --option key=value)")
    for spec in specs(options_type):
        flag = "--" + spec.name.replace("_", "-")
        help_text = spec.describe() + (" [advanced]" if spec.advanced else "")
        metavar = "{" + ",".join(str(c) for c in spec.choices) + "}" if spec.kind == "choice" else spec.kind.upper()
        extra = {"nargs": "?", "const": "true"} if spec.kind == "bool" else {}  # bare --flag = true
        group.add_argument(flag, dest=f"opt__{spec.name}", default=None, metavar=metavar,
                           help=help_text.replace("%", "%%"), **extra)


def from_namespace(options_type: type, args: argparse.Namespace, assignments: list[str] | None = None) -> Any:
    """Options from ``--option key=value`` strings, then the per-option flags (flags win).
    Every assignment is validated, also one a flag then overrides (a wrong value is never
    silently ignored)."""
    values = _assignments(assignments)
    if values:
        parse(options_type, values)
    for spec in specs(options_type):
        value = getattr(args, f"opt__{spec.name}", None)
        if value is not None:
            values[spec.name] = value
    return parse(options_type, values)


def summary(options: Any, only_changed: bool = True) -> str:
    """``name=value, ...`` of the options that differ from their defaults (or all)."""
    parts = []
    for spec in specs(type(options)):
        value = getattr(options, spec.name)
        if not only_changed or value != spec.default:
            parts.append(f"{spec.name}={value}")
    return ", ".join(parts) if parts else "defaults"


# ----------------------------------------------------------------------------- shared groups

Device = Literal["auto", "cpu", "cuda"]
WeightsKind = Literal["pretrained", "random-tiny", "random-full", "trained-here"]
RANDOM_WEIGHTS: tuple[str, ...] = ("random-tiny", "random-full")

WEIGHTS_HELP = ("pretrained: the published checkpoint; random-tiny: the authors' tiny test "
                "configuration with random weights (seconds; meaningless output); random-full: the "
                "full architecture with random weights (real time and memory, meaningless output)")


@dataclass
class DeviceOptions:
    """Where a method runs; the runner resolves ``auto``."""

    device: Device = option("auto", "auto: CUDA when available, else CPU (float32)")


@dataclass
class PointFilterOptions:
    """Keep the most confident points (like the authors' demos)."""

    confidence_percentile: float = option(0.0, "drop points below this confidence percentile",
                                          min=0.0, max=100.0, step=1.0)


@dataclass
class ObjectMaskOptions:
    """Keep only points inside the scene's object masks."""

    use_object_masks: bool = option(False, "keep only points inside the scene's object masks "
                                           "(when the scene has them)")
