"""AppTest: the method pages run registered methods with their tiny random configurations."""
import pytest
from streamlit.testing.v1 import AppTest

from core.app.widgets import NOT_SCORED_RANDOM
from core.store.cache import RunStore
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
    at.run()                                    # the Run button follows the inputs (enabled once they can run)
    at.button(key=f"{family}.run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_generative_page_runs_lrm_random_tiny_and_labels_it(isolated_cache):
    at = _page("pages/generative.py")
    at.selectbox(key="generative.method").set_value("LRM (OpenLRM v1.1)")
    at.run()
    weights = at.selectbox(key="generative.lrm.options.weights")
    assert weights.value == "random-tiny"       # no checkpoint here: the default is what can run
    assert any(i.value.startswith("Random weights (random-tiny)") for i in at.info) and not at.warning
    weights.set_value("pretrained")
    at.run()
    [box] = at.warning                          # one box: the missing file(s) and the one command
    assert "cannot run with these weights" in box.value and "python -m core weights fetch" in box.value
    assert at.button(key="generative.run").disabled
    at = _run(at, "generative", {"lrm.options.weights": "random-tiny", "lrm.options.grid_size": 16,
                                 "lrm.options.render_resolution": 16, "lrm.options.orbit_views": 2,
                                 "lrm.options.num_points": 2000})
    assert any("random weights" in w.value for w in at.warning)
    labels = {m.label: m.value for m in at.metric}
    assert labels["Points"] == "2,000" and "Chamfer" not in labels  # random weights: not scored
    assert any(i.value == NOT_SCORED_RANDOM for i in at.info)
    [run] = RunStore(isolated_cache).runs("toy")
    assert run.method == "lrm" and run.evaluation is None and run.meta["weights_kind"] == "random-tiny"
    assert len(at.get("imgs")) + len(at.get("image")) >= 2  # the input view and the orbit renders


def test_discriminative_page_runs_vggt_random_tiny_with_depth_maps_and_cameras(isolated_cache):
    at = _page("pages/discriminative.py")
    assert at.selectbox(key="discriminative.vggt.options.weights").value == "random-tiny"
    assert not at.warning and any(c.value.startswith("Estimated cost: **about") for c in at.caption)
    at.selectbox(key="discriminative.vggt.options.weights").set_value("pretrained")
    at.run()
    [box] = at.warning
    assert "model.pt" in box.value and "python -m core weights fetch vggt" in box.value
    assert any(c.value == "Checkpoint licence: vggt-1b: CC BY-NC 4.0" for c in at.caption)
    # The view list follows the count at once (no form holding it until Run).
    at.slider(key="discriminative.vggt.count").set_value(4)
    at.run()
    assert at.multiselect(key="discriminative.vggt.views.4").value == [0, 10, 21, 31]   # 42 views, evenly
    at.selectbox(key="discriminative.vggt.options.weights").set_value("random-tiny")
    at = _run(at, "discriminative", {"vggt.options.weights": "random-tiny", "vggt.count": 3})
    assert any("random weights" in w.value for w in at.warning)
    charts = [c.proto.spec if hasattr(c, "proto") else "" for c in at.get("plotly_chart")]
    assert len(charts) == 2  # the cloud with frustums and the depth maps
    assert any("predicted cameras" in c.value for c in at.caption)
    [run] = RunStore(isolated_cache).runs("toy")
    assert run.method == "vggt" and run.meta["view_ids"] == [0, 14, 28]
    assert run.evaluation is None and any(i.value == NOT_SCORED_RANDOM for i in at.info)


def test_scaling_page_runs_a_timing_only_study(isolated_cache):
    from core.models import registry

    at = _page("pages/scaling.py")
    assert at.title[0].value == "View-count scaling"
    models = at.multiselect(key="scaling.methods")
    labels = {registry.get(name).label for name in ("vggt", "fast3r", "dust3r")}
    assert models.value == ["vggt"] and labels <= set(models.options)  # options show as labels
    weights = at.selectbox(key="scaling.vggt.options.weights")
    assert weights.value == "random-tiny" and not at.warning       # the default that can run here
    weights.set_value("pretrained")
    at.run()
    assert any("VGGT cannot run" in w.value and "weights fetch vggt" in w.value for w in at.warning)
    assert at.button(key="scaling.run").disabled
    at.selectbox(key="scaling.vggt.options.weights").set_value("random-tiny")
    at.run()
    assert any(c.value.startswith("Estimated study time") for c in at.caption)
    at.multiselect(key="scaling.counts").set_value([1, 2, 3])
    at.button(key="scaling.run").click()
    at.run()
    assert not at.exception and not at.error
    assert not any("cannot run" in w.value for w in at.warning)
    assert any("Quality unavailable for VGGT" in w.value for w in at.warning)
    runs = RunStore(isolated_cache).runs("toy")
    assert len(runs) == 3 and all(r.evaluation is None for r in runs)
    table = at.dataframe[0].value
    assert list(table["views"]) == [1, 2, 3] and set(table["model"]) == {"VGGT"}
    assert any("Best by BIC" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 3  # the overlay, then VGGT's time and memory fits
    at.multiselect(key="scaling.methods").set_value(["vggt", "fast3r"])
    at.run()
    at.selectbox(key="scaling.fast3r.options.weights").set_value("random-tiny")
    at.button(key="scaling.run").click()
    at.run()
    assert not at.exception and not at.error
    runs = RunStore(isolated_cache).runs("toy")  # VGGT's three runs came from the cache
    assert sorted(r.method for r in runs) == ["fast3r"] * 3 + ["vggt"] * 3
    table = at.dataframe[0].value
    assert list(zip(table["model"], table["views"])) == [("VGGT", 1), ("VGGT", 2), ("VGGT", 3), ("Fast3R", 1),
                                                         ("Fast3R", 2), ("Fast3R", 3)]
    assert len(at.get("plotly_chart")) == 5  # the overlay, then each model's time and memory fits
    assert any("Quality unavailable for Fast3R" in w.value for w in at.warning)


def test_attention_viewer_page_shows_every_view_with_correspondences(isolated_cache):
    at = _page("pages/attention.py")
    at.selectbox(key="attention.weights").set_value("random-tiny")
    at.button(key="attention.run").click()
    at.run()
    assert not at.exception and not at.error
    assert any("random weights" in w.value for w in at.warning)
    images = at.get("image")
    assert len(images) == 3
    at.number_input(key="attention.u").set_value(250)
    at.number_input(key="attention.v").set_value(300)
    at.radio(key="attention.mode").set_value("rollout")
    at.run()
    assert not at.exception and len(at.get("image")) == 3


def test_generative_page_runs_shipped_lmnet_on_a_scene_view_and_an_upload(isolated_cache):
    at = _page("pages/generative.py")
    at.selectbox(key="generative.method").set_value("3D-LMNet")
    at.run()
    at = _run(at, "generative", {"lmnet.view": 3})
    assert not any("random weights" in w.value for w in at.warning)  # shipped, trained weights
    [run] = RunStore(isolated_cache).runs("toy")
    assert run.method == "lmnet" and run.meta["view_ids"] == [3] and "chamfer" in run.evaluation
    assert {m.label: m.value for m in at.metric}["Points"] == "2,048"
    held_out = ROOT / "tests" / "fixtures" / "lmnet_subset" / "90000001" / "chair_0032" / "rendering" / "03.png"
    at.file_uploader(key="lmnet.upload").set_value(("chair.png", held_out.read_bytes(), "image/png"))
    at.run()
    at.button(key="lmnet.go").click()
    at.run()
    assert not at.exception and not at.error
    assert any("2,048 points" in c.value for c in at.caption)
    at.file_uploader(key="lmnet.upload").set_value(("notes.png", b"not an image at all", "image/png"))
    at.run()
    at.button(key="lmnet.go").click()
    at.run()
    assert any("cannot use notes.png" in e.value for e in at.error)


def test_generative_page_runs_pointe_random_tiny_to_4096_coloured_points(isolated_cache):
    at = _page("pages/generative.py")
    at.selectbox(key="generative.method").set_value("Point-E")
    at.run()
    at = _run(at, "generative", {"pointe.options.weights": "random-tiny", "pointe.options.karras_steps": 2,
                                 "pointe.count": 1})
    assert any("random weights" in w.value for w in at.warning)
    assert {m.label: m.value for m in at.metric}["Points"] == "4,096"
    [run] = RunStore(isolated_cache).runs("toy")
    recon = run.load()
    assert run.method == "pointe" and recon.colors.shape == (4096, 3) and run.evaluation is None


@pytest.mark.parametrize("method,label,views", [("dust3r", "DUSt3R", 2), ("dust3r", "DUSt3R", 5),
                                               ("fast3r", "Fast3R", 2), ("fast3r", "Fast3R", 5),
                                               ("pi3", "π³", 2), ("pi3x", "Pi3X", 2), ("da3-small", "DA3 Small", 2),
                                               ("da3-base", "DA3 Base", 2)])
def test_discriminative_page_runs_each_multi_view_method_random_tiny(isolated_cache, method, label, views):
    at = _page("pages/discriminative.py")
    at.selectbox(key="discriminative.method").set_value(label)
    at.run()
    settings = {f"{method}.options.weights": "random-tiny", f"{method}.count": views}
    if method == "dust3r":
        settings["dust3r.options.ga_iterations"] = 20
    at = _run(at, "discriminative", settings)
    assert any("random weights" in w.value for w in at.warning)
    [run] = RunStore(isolated_cache).runs("toy")
    assert run.method == method and len(run.meta["view_ids"]) == views
    assert run.evaluation is None and any(i.value == NOT_SCORED_RANDOM for i in at.info)
    assert len(at.get("plotly_chart")) >= 1
    if method == "dust3r" and views > 2:  # global alignment ran: its loss curve is shown
        assert any(c.value.startswith("Global alignment: 20 iterations") for c in at.caption)


def test_a_run_over_the_confirmation_threshold_waits_for_run_anyway(isolated_cache, monkeypatch):
    monkeypatch.setenv("RECONBENCH_CONFIRM_SECONDS", "0")        # every estimate is "long"
    at = _page("pages/discriminative.py")
    [confirm] = [c for c in at.checkbox if c.label.startswith("Run anyway")]
    assert not confirm.value
    at.button(key="discriminative.run").click()
    at.run()
    assert any("Tick “Run anyway”" in w.value for w in at.warning)
    assert RunStore(isolated_cache).runs("toy") == []                # nothing ran, nothing stored
