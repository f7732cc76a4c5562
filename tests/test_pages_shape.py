"""AppTest: Shap-E on the Generative page (a text prompt in the workbench, the Point-E / Shap-E
side by side section, image mode on an uploaded picture)."""
from streamlit.testing.v1 import AppTest

from core.store.cache import RunStore
from tests.conftest import ROOT

APP = str(ROOT / "app.py")
SMALL = {"karras_steps": 2, "grid_size": 16, "render_size": 16, "render_views": 2, "num_points": 300}


def _page():
    at = AppTest.from_file(APP, default_timeout=900)
    at.run()
    at.switch_page("pages/generative.py")
    at.run()
    assert not at.exception
    return at


def _run(at, settings: dict):
    for key, value in settings.items():
        at.get_by_key(f"generative.{key}").set_value(value)
    at.run()
    at.button(key="generative.run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_shape_text_and_image_runs_side_by_side_with_pointe_and_an_upload(isolated_cache):
    at = _page()
    assert any("No stored Shap-E run" in i.value for i in at.info)
    at.selectbox(key="generative.method").set_value("Shap-E")
    at.run()
    assert at.selectbox(key="generative.shape.options.weights").value == "random-tiny"  # nothing downloaded
    options = {f"shape.options.{k}": v for k, v in SMALL.items()}
    at = _run(at, {**options, "shape.options.prompt": "a striped teapot"})
    stored = at.selectbox(key="generative.inspect")
    assert "a striped teapot" in stored.format_func(stored.value)     # the prompt labels the run
    assert any("random weights" in w.value for w in at.warning)
    assert {m.label: m.value for m in at.metric}["Points"] == "300"
    [run] = RunStore(isolated_cache).runs("toy")
    assert run.meta["options"]["prompt"] == "a striped teapot" and run.meta["weights_kind"] == "random-tiny"
    assert run.evaluation is None            # random weights: not scored on the page
    # Point-E on the same scene: the side-by-side section shows the latest run of each
    at.selectbox(key="generative.method").set_value("Point-E")
    at.run()
    at = _run(at, {"pointe.options.weights": "random-tiny", "pointe.options.karras_steps": 1, "pointe.count": 1})
    labels = [m.value for m in at.markdown]
    assert any(v.startswith("**Point-E") for v in labels) and any(v.startswith("**Shap-E · text · a striped teapot") for v in labels)
    # an uploaded picture in image mode (nothing stored)
    data = (ROOT / "sample_data" / "toy" / "images" / "view_000.jpg").read_bytes()
    at.file_uploader(key="shape.upload").set_value(("toy.jpg", data, "image/jpeg"))
    at.radio(key="shape.upload.weights").set_value("random-tiny")
    at.slider(key="shape.upload.steps").set_value(2)
    at.select_slider(key="shape.upload.grid").set_value(16)
    at.run()
    at.button(key="shape.upload.go").click()
    at.run()
    assert not at.exception and not at.error
    assert len(RunStore(isolated_cache).runs("toy")) == 2   # the upload stored nothing
    at.file_uploader(key="shape.upload").set_value(("notes.png", b"no picture", "image/png"))
    at.run()
    at.button(key="shape.upload.go").click()
    at.run()
    assert any("cannot use notes.png" in e.value for e in at.error)
