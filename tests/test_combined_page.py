"""AppTest: the Combined pipeline page with the tiny random stages."""
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.app.widgets import NOT_SCORED_RANDOM
from tests.conftest import ROOT

APP = str(ROOT / "app.py")


@pytest.fixture()
def page(isolated_cache, monkeypatch):
    from core.models import registry

    monkeypatch.setitem(registry.METHOD_MODULES, "combined", "core.models.combined.method")

    def open_page(scene_name=None):
        at = AppTest.from_file(APP, default_timeout=600)
        if scene_name:
            at.session_state["scene_name"] = scene_name
        at.run()
        at.switch_page("pages/combined.py")
        at.run()
        assert not at.exception
        return at
    return open_page


def _run(at, **values):
    at.selectbox(key="combined.weights").select("random-tiny")
    for name, value in values.items():
        widget = at.text_input(key=f"combined.{name}") if isinstance(value, str) else \
            at.number_input(key=f"combined.{name}")
        widget.set_value(value)
    at.run()
    at.button(key="combined.run").click()
    at.run()
    assert not at.exception, at.exception
    return at


def _captions(at):
    return [c.value for c in at.caption]


def test_pretrained_without_weights_says_how_to_fetch(page, monkeypatch, tmp_path):
    monkeypatch.setenv("RECONBENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = page()
    assert at.title[0].value == "Combined pipeline"
    # a fresh install opens on what can run: random-tiny, with the random-weights banner
    assert at.selectbox(key="combined.weights").value == "random-tiny" and not at.warning
    assert any(i.value.startswith("Random weights (random-tiny)") for i in at.info)
    at.selectbox(key="combined.weights").select("pretrained")
    at.run()
    # one box: one line per model with its missing files, then the one command for all of them
    [box] = [w.value for w in at.warning]
    assert not at.error and "cannot run with these weights" in box
    lines = [line for line in box.splitlines() if line.startswith("- ")]
    assert len(lines) == 3 and "sam_vit_b_01ec64.pth" in box and "model.safetensors" in box
    assert box.count("python -m core weights fetch") == 1
    assert "python -m core weights fetch grounding-dino depth-anything sam" in box
    assert at.button(key="combined.run").disabled


def test_random_tiny_run_shows_panels_and_cloud_and_is_not_scored(page):
    at = _run(page(), box_threshold=0.0, text_threshold=0.0)
    assert any("Random weights" in i.value and "meaningless" in i.value for i in at.info)
    captions = _captions(at)
    assert not any("[SEP]" in c or "[CLS]" in c for c in captions)      # no tokenizer leftovers
    for start in ("Image", "Detection: box score", "Mask: SAM score", "Depth (scene units", "Masked depth"):
        assert any(c.startswith(start) for c in captions), (start, captions)
    assert any(c.startswith("Depth reference: the scene's depth map") and "residual" in c for c in captions)
    assert any(c.startswith("Time per stage: detection") and "back-projection" in c for c in captions)
    assert len(at.get("plotly_chart")) == 1
    # random weights: stored unscored (the Metrics page scores it on request)
    assert not any(m.label == "Chamfer" for m in at.metric)
    assert any(i.value == NOT_SCORED_RANDOM for i in at.info)
    # the sample is bundled: its masks are offered as a derived copy
    assert at.button(key="combined.save_masks").label == "Store masks in “toy-masks”"


def test_prompt_that_detects_nothing_is_a_clear_message(page):
    at = _run(page(), box_threshold=1.0)
    assert any("no box detected" in e.value for e in at.error)
    captions = _captions(at)
    assert "Image" in captions and "Detection: no box" in captions


def test_view_without_depth_reference_keeps_box_and_mask(page, sample_scene):
    from core.models.combined.scene_masks import scenes_root

    bare = sample_scene.subset([0, 1])
    bare.name, bare.depths, bare.gt_points, bare.gt_colors, bare.gt_normals = "bare", None, None, None, None
    bare.mesh_vertices = bare.mesh_faces = bare.mesh_colors = None
    bare.save(scenes_root() / "bare")
    at = _run(page("bare"), box_threshold=0.0, text_threshold=0.0)
    assert any("depth stage of view 0" in e.value and "no depth reference" in e.value for e in at.error)
    captions = _captions(at)
    assert any(c.startswith("Detection: box score") for c in captions)
    assert any(c.startswith("Mask: SAM score") for c in captions)
    assert "Depth: not computed" in captions
    # the explicit relative mode then works and says so
    at.selectbox(key="combined.depth_reference").select("none (relative depth)")
    at.button(key="combined.run").click()
    at.run()
    assert any("Relative depth" in w.value for w in at.warning)
    assert any(c.startswith("Depth (relative units") for c in _captions(at))
    # an app scene takes the masks in place
    at.button(key="combined.save_masks").click()
    at.run()
    assert any("into scene “bare”" in s.value for s in at.success)
    from core.data.scene import Scene

    saved = Scene.load(scenes_root() / "bare")
    assert saved.provenance["object_masks"]["views"] == [0] and saved.masks[0].any()
    assert np.array_equal(saved.masks[1], sample_scene.masks[1])  # views without a new mask keep theirs


def test_detected_phrases_lose_tokenizer_tokens_and_the_prompt_full_stop():
    from core.models.combined.detection import clean_label

    assert clean_label("toy. [SEP]") == "toy"
    assert clean_label("[CLS] red  toy [SEP] [PAD]") == "red toy"
    assert clean_label("a cup. a toy.") == "a cup. a toy"           # only the closing stop goes
