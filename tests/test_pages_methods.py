"""AppTest: the method pages run registered methods with their tiny random configurations."""
import pytest
from streamlit.testing.v1 import AppTest

from core.cache import RunStore
from tests.conftest import ROOT

APP = str(ROOT / "app.py")


def _page(path):
    at = AppTest.from_file(APP, default_timeout=900)
    at.run()
    at.switch_page(path)
    at.run()
    assert not at.exception
    return at


def _run(at, family, settings):
    for key, value in settings.items():
        widget = at.get_by_key(f"{family}.{key}") if hasattr(at, "get_by_key") else None
        widget.set_value(value)
    at.button(key=f"{family}.run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_generative_page_runs_lrm_random_tiny_and_labels_it(isolated_cache):
    at = _page("pages/generative.py")
    assert any("cannot run" in w.value and "weights fetch" in w.value for w in at.warning)  # no checkpoint here
    at = _run(at, "generative", {"lrm.options.weights": "random-tiny", "lrm.options.grid_size": 16,
                                 "lrm.options.render_resolution": 16, "lrm.options.orbit_views": 2,
                                 "lrm.options.num_points": 2000})
    assert any("random weights" in w.value for w in at.warning)
    labels = {m.label: m.value for m in at.metric}
    assert labels["Points"] == "2,000" and "Chamfer" in labels
    [run] = RunStore(isolated_cache).runs("toy")
    assert run.method == "lrm" and run.evaluation and "chamfer" in run.evaluation
    assert len(at.get("imgs")) + len(at.get("image")) >= 2  # the input view and the orbit renders
