"""The typed option surface: declarations -> specs, validation, CLI flags, page widgets' input."""
from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

import pytest

from core import options as surface
from core.errors import OptionError, UserError
from core.options import DeviceOptions, option


@dataclass
class Example(DeviceOptions):
    mode: Literal["fast", "best"] = option("fast", "speed against quality")
    steps: int = option(64, "sampler steps", min=1, max=1024, step=1)
    scale: float = option(3.0, "guidance", min=0.0)
    mask: bool = option(False, "use the masks")
    prompt: str = option("a toy", "text")
    taus: tuple[float, ...] = option((0.01, 0.02), "thresholds", min=0.0, max=1.0, advanced=True)


def test_specs_follow_the_declarations_own_fields_first():
    specs = surface.specs(Example)
    assert [s.name for s in specs] == ["mode", "steps", "scale", "mask", "prompt", "taus", "device"]
    by_name = {s.name: s for s in specs}
    assert by_name["mode"].kind == "choice" and by_name["mode"].choices == ("fast", "best")
    assert by_name["device"].choices == ("auto", "cpu", "cuda")
    assert (by_name["steps"].kind, by_name["steps"].min, by_name["steps"].max) == ("int", 1, 1024)
    assert by_name["taus"].kind == "floats" and by_name["taus"].advanced
    assert "choices: fast, best" in by_name["mode"].describe()


def test_parse_coerces_cli_text_and_keeps_python_values():
    parsed = surface.parse(Example, {"mode": "best", "steps": "8", "scale": "0.5", "mask": "yes",
                                     "prompt": "a cup", "taus": "0.1, 0.2", "device": "cpu"})
    assert parsed == Example(mode="best", steps=8, scale=0.5, mask=True, prompt="a cup", taus=(0.1, 0.2),
                             device="cpu")
    assert surface.parse(Example, parsed) == parsed
    assert surface.parse(Example, None) == Example()
    assert surface.parse(Example, {"steps": 8.0}).steps == 8


@pytest.mark.parametrize("values, message", [
    ({"colour": 1}, r"unknown option\(s\) colour; known: device, mask, mode, prompt, scale, steps, taus"),
    ({"mode": "slow"}, r"unknown mode 'slow' \(choices: fast, best\)"),
    ({"steps": 0}, r"steps must be in \[1, 1024\]; got 0"),
    ({"steps": "2.5"}, "steps must be an integer"),
    ({"steps": 2.5}, "steps must be an integer"),
    ({"steps": True}, "steps must be a number"),
    ({"scale": "nan"}, "scale must be finite"),
    ({"scale": -1}, r"scale must be in \[0, inf\]"),
    ({"mask": "maybe"}, "mask must be true or false"),
    ({"prompt": 3}, "prompt must be text"),
    ({"taus": "0.1, x"}, "taus must be numbers"),
    ({"taus": "2"}, r"taus values must be in \[0, 1\]"),
    ({"device": "tpu"}, r"unknown device 'tpu' \(choices: auto, cpu, cuda\)"),
])
def test_parse_refuses_bad_values_with_the_valid_ones(values, message):
    with pytest.raises(OptionError, match=message):
        surface.parse(Example, values)
    assert issubclass(OptionError, UserError)


def test_assignments_and_flags_give_the_same_options():
    parser = argparse.ArgumentParser()
    parser.add_argument("--option", action="append")
    surface.add_arguments(parser, Example)
    args = parser.parse_args(["--option", "steps=4", "--mode", "best", "--mask", "--taus", "0.3,0.4"])
    from_flags = surface.from_namespace(Example, args, args.option)
    assert from_flags == Example(mode="best", steps=4, mask=True, taus=(0.3, 0.4))
    assert surface.parse_assignments(Example, ["steps=4", "mode=best", "mask=true", "taus=0.3 0.4"]) == from_flags
    # a flag wins over --option for the same name
    args = parser.parse_args(["--option", "steps=4", "--steps", "5"])
    assert surface.from_namespace(Example, args, args.option).steps == 5
    with pytest.raises(OptionError, match="is not key=value"):
        surface.parse_assignments(Example, ["steps"])


def test_summary_lists_what_differs_from_the_defaults():
    assert surface.summary(Example()) == "defaults"
    assert surface.summary(Example(steps=2, mode="best")) == "mode=best, steps=2"


def test_method_help_lists_every_option_and_bad_choice_exits_2():
    from tests.conftest import ROOT, SAMPLE

    shown = subprocess.run([sys.executable, "-m", "core", "run", "vggt", "--help"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0
    from core.models.vggt.method import VGGTOptions

    for spec in surface.specs(VGGTOptions):
        assert "--" + spec.name.replace("_", "-") in shown.stdout
    assert "{pretrained,random-tiny,random-full}" in shown.stdout
    refused = subprocess.run([sys.executable, "-m", "core", "run", "vggt", "--scene", str(SAMPLE),
                              "--option", "weights=tiny"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: unknown weights 'tiny' (choices: pretrained, random-tiny, random-full)"]
