"""The ``combined`` method under the method contract: typed options (same names and defaults as the
stored runs hash), the three checkpoints and their licences, one tidy missing-weights message,
the three models as one loaded model, and user errors through the runner."""
from __future__ import annotations

import typing

import pytest

from core import options as opts
from core.errors import OptionError, UserError
from core.models.combined import checkpoints as ckpt
from core.models.combined import depth_fit, projection
from core.models.combined.method import METHOD, Camera, CombinedOptions
from core.models.combined.pipeline import FusionError, StageError

# The option names and defaults before the contract change (run keys hash this dict).
STORED_DEFAULTS = {
    "prompt": "toy", "detector": "grounding-dino-tiny", "box_threshold": 0.35, "text_threshold": 0.25,
    "box_index": -1, "segmenter": "sam-vit-b", "use_point": True, "point_x": -1.0, "point_y": -1.0,
    "depth_model": "depth-anything-v2-small", "depth_reference": "auto", "fit_region": "object mask",
    "camera": "scene", "fov_deg": 60.0, "erode_px": 2, "weights": "pretrained", "checkpoint_path": "",
    "device": "auto"}


def test_options_keep_their_names_and_defaults():
    assert opts.as_dict(CombinedOptions()) == STORED_DEFAULTS
    assert opts.as_dict(METHOD.parse_options(STORED_DEFAULTS)) == STORED_DEFAULTS


def test_option_choices_are_the_tables_of_models_and_sources():
    specs = {s.name: s for s in opts.specs(CombinedOptions)}
    assert specs["detector"].choices == tuple(ckpt.DETECTORS)
    assert specs["segmenter"].choices == tuple(ckpt.SEGMENTERS)
    assert specs["depth_model"].choices == tuple(ckpt.DEPTH_MODELS)
    assert specs["depth_reference"].choices == depth_fit.REFERENCE_CHOICES
    assert typing.get_args(Camera) == projection.CAMERA_CHOICES == specs["camera"].choices
    assert specs["weights"].choices == ("pretrained", "random-tiny")
    with pytest.raises(OptionError, match="unknown weights 'tiny' .choices: pretrained, random-tiny"):
        METHOD.parse_options({"weights": "tiny"})
    with pytest.raises(OptionError, match=r"box_threshold must be in \[0, 1\]"):
        METHOD.parse_options({"box_threshold": 1.5})


def test_pretrained_loads_three_checkpoints_with_their_licences():
    default = METHOD.parse_options({})
    found = METHOD.checkpoints(default)
    assert [c.filename for c in found] == ["model.safetensors", "model.safetensors", "sam_vit_b_01ec64.pth"]
    assert [c.repo_id or c.url for c in found] == ["IDEA-Research/grounding-dino-tiny",
                                                   "depth-anything/Depth-Anything-V2-Small-hf",
                                                   ckpt.SEGMENTERS["sam-vit-b"][1].url]
    assert METHOD.licences(default) == ["grounding-dino-tiny.model: Apache-2.0",
                                        "depth-anything-v2-small.model: Apache-2.0", "sam-vit-b: Apache-2.0"]
    large = METHOD.parse_options({"depth_model": "depth-anything-v2-large"})
    assert "depth-anything-v2-large.model: CC BY-NC 4.0" in METHOD.licences(large)
    tiny = METHOD.parse_options({"weights": "random-tiny"})
    assert METHOD.checkpoints(tiny) == () and METHOD.weights_kind(tiny) == "random-tiny"
    assert METHOD.weights_kind(default) == "pretrained"
    # every file of every model carries its model's licence
    for table in (ckpt.DETECTORS, ckpt.DEPTH_MODELS):
        for model in table.values():
            assert {c.licence for c in model.checkpoints()} == {model.licence} != {"unknown"}


@pytest.fixture()
def empty_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("RECONBENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def test_missing_weights_message_lists_each_missing_file_with_its_fetch_command(empty_weights):
    available = METHOD.availability(METHOD.parse_options({}))
    message = available.message()
    assert not available.ok and message.startswith("The three models are not on this machine")
    assert str(empty_weights) in message
    dino, depth = ckpt.DETECTORS["grounding-dino-tiny"], ckpt.DEPTH_MODELS["depth-anything-v2-small"]
    expected = [f"{dino.label} needs {', '.join(dino.files)}", "python -m core weights fetch grounding-dino;",
                f"{depth.label} needs {', '.join(depth.files)}", "python -m core weights fetch depth-anything;",
                "Segment Anything ViT-B needs sam_vit_b_01ec64.pth", "python -m core weights fetch sam."]
    positions = [message.index(part) for part in expected]
    assert positions == sorted(positions)  # one line per model, in order, each with its command
    assert message.endswith("Run: python -m core weights fetch grounding-dino depth-anything sam")


def test_partly_fetched_weights_list_only_what_is_missing(empty_weights):
    snapshot = empty_weights / "depth-anything-v2-small"  # a whole snapshot under its key
    snapshot.mkdir()
    for name in ckpt.DEPTH_MODELS["depth-anything-v2-small"].files:
        (snapshot / name).write_bytes(b"x")
    (empty_weights / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    (empty_weights / "grounding-dino-tiny").mkdir()
    (empty_weights / "grounding-dino-tiny" / "config.json").write_text("{}")  # one file of five
    available = METHOD.availability(METHOD.parse_options({}))
    assert available.fix_command == "python -m core weights fetch grounding-dino"
    assert available.missing.startswith("1 of the three models is not on this machine")
    assert ("needs model.safetensors, preprocessor_config.json, tokenizer.json, tokenizer_config.json "
            "(IDEA-Research/grounding-dino-tiny, 690 MB): python -m core weights fetch grounding-dino."
            ) in available.missing
    assert "Depth Anything" not in available.missing and "Segment Anything" not in available.missing
    # an explicit SAM path that does not exist is named, with nothing to fetch for it
    explicit = METHOD.availability(METHOD.parse_options({"checkpoint_path": str(empty_weights / "mine.pth")}))
    assert "Segment Anything ViT-B: checkpoint_path " + str(empty_weights / "mine.pth") + " does not exist" \
        in explicit.missing
    assert explicit.fix_command == "python -m core weights fetch grounding-dino"


def test_the_three_models_are_one_loaded_model():
    options = METHOD.parse_options({"weights": "random-tiny"})
    stages = METHOD.load(options, "cpu")
    modules = [stages.detector.model, stages.segmenter.sam, stages.depth.model]
    count = sum(p.numel() for m in modules for p in m.parameters())
    assert METHOD.parameter_count(stages) == count > 0
    parameter_bytes = sum(p.numel() * p.element_size() for m in modules for p in m.parameters())
    assert METHOD.cost_bytes(stages) >= parameter_bytes
    assert METHOD.model_key(options) == METHOD.model_key(METHOD.parse_options({"weights": "random-tiny",
                                                                                 "prompt": "cup"}))


def test_pipeline_errors_are_user_errors_through_the_runner(sample_scene):
    from core.runner import execute

    assert issubclass(StageError, UserError) and issubclass(FusionError, UserError)
    assert issubclass(depth_fit.NoDepthReference, UserError)
    with pytest.raises(StageError, match="no box detected") as raised:
        execute(METHOD, sample_scene, [0], {"weights": "random-tiny", "box_threshold": 1.0})
    assert raised.value.stage == "detection" and raised.value.partial.detections is not None
    posed = sample_scene.subset([0, 1])
    posed.cam_from_world = posed.cam_from_world.copy()
    posed.cam_from_world[1] = float("nan")
    with pytest.raises(FusionError, match="no pose"):
        execute(METHOD, posed, [0, 1], {"weights": "random-tiny", "box_threshold": 0.0, "text_threshold": 0.0})
