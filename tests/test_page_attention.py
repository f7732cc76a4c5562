"""AppTest: the attention viewer tracks clicked points through the chosen views (tracking head,
depth correspondence, ground truth with errors) and shows the attribution maps with the rank
correlations, on random-tiny and sample_data/toy."""
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

APP = str(ROOT / "app.py")


@pytest.fixture(scope="module")
def viewer():
    at = AppTest.from_file(APP, default_timeout=900)
    at.run()
    at.switch_page("pages/attention.py")
    at.run()
    at.selectbox(key="attention.weights").set_value("random-tiny")
    at.button(key="attention.run").click()
    at.run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    return at


def _pick(at, u, v):
    at.number_input(key="attention.u").set_value(u)
    at.number_input(key="attention.v").set_value(v)
    at.run()


def test_viewer_tracks_clicked_points_with_three_correspondences_and_errors(viewer, sample_scene):
    at = viewer
    at.selectbox(key="attention.source").set_value(1)  # view 14: tracking from a view that is not VGGT's first
    at.run()
    for u, v in ((250, 300), (180, 220)):
        _pick(at, u, v)
        at.button(key="attention.track_add").click()
        at.run()
    assert any("0: (250, 300), 1: (180, 220)" in c.value for c in at.caption)
    at.button(key="attention.track_run").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.get("plotly_chart")  # the click target and the coloured tracks
    table = next(d.value for d in at.dataframe if "track error px" in d.value.columns)
    assert len(table) == 2 * 3 and sorted(set(table["view"])) == [0, 14, 28]
    for column in ("track x", "visibility", "confidence", "depth x", "truth x", "truth", "depth error px"):
        assert column in table.columns
    # the tracking head starts from the clicked pixels in their own view
    source_rows = table[table["view"] == 14]
    np.testing.assert_allclose(source_rows[["track x", "track y"]].to_numpy(float), [[250, 300], [180, 220]],
                               atol=1e-3)
    # the ground truth is the scene's own transfer, and each error is the distance to it
    with_truth = table[table["truth x"].notna()]
    assert len(with_truth) >= 2 and set(table["truth"]) <= {"visible", "occluded", "outside"}
    expected = np.hypot(with_truth["track x"].to_numpy(float) - with_truth["truth x"].to_numpy(float),
                        with_truth["track y"].to_numpy(float) - with_truth["truth y"].to_numpy(float))
    np.testing.assert_allclose(with_truth["track error px"].to_numpy(float), expected, rtol=1e-9)
    summary = next(d.value for d in at.dataframe if "views compared" in d.value.columns)
    assert list(summary["point"]) == [0, 1]


def test_a_click_moves_the_pixel_boxes_and_the_click_axis_spans_the_image(viewer):
    at = viewer
    # what the page does on a click event: remember the pick and rerun (AppTest cannot click a chart)
    at.session_state["attention.pick"] = (100, 50)
    at.session_state["attention.pick_pending"] = True
    at.run()
    assert not at.exception
    assert (at.number_input(key="attention.u").value, at.number_input(key="attention.v").value) == (100, 50)
    from core.app import figures

    image = np.zeros((294, 518, 3), np.uint8)
    figure = figures.attention_click_figure(image, (21, 37), (100, 50))
    assert tuple(figure.layout.xaxis.range) == (-0.5, 517.5) and tuple(figure.layout.yaxis.range) == (293.5, -0.5)


def test_viewer_shows_attribution_maps_with_rank_correlations(viewer):
    at = viewer
    _pick(at, 200, 150)
    assert any("This attribution needs about" in c.value and "is available now" in c.value for c in at.caption)
    at.selectbox(key="attention.attr_target").set_value("depth")
    at.run()
    at.button(key="attention.attr_run").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    rho = next(d.value for d in at.dataframe if any(c.startswith("ρ ") for c in d.value.columns))
    assert list(rho["view"]) == [0, 14, 28]
    assert {"ρ input × gradient vs rollout", "ρ Grad-CAM vs rollout"} <= set(rho.columns)
    values = rho["ρ input × gradient vs rollout"].dropna()
    assert len(values) >= 2 and values.between(-1, 1).all()
    captions = [c for c in at.caption if "depth =" in c.value]
    assert captions and "Rollout over layers" in captions[0].value
    assert len(at.get("imgs")) + len(at.get("image")) == 3 + 3 * 3  # the attention maps, then per view input × gradient, Grad-CAM, rollout


def test_tracks_put_the_clicked_view_first_and_share_the_cached_weights(sample_scene):
    import torch

    from core.studies.attention import capture_session, tracking_model, vggt_model

    session = capture_session(sample_scene, [0, 14, 28], weights="random-tiny")
    tracker = tracking_model("random-tiny")
    base = vggt_model("random-tiny")
    shared = dict(base.named_parameters())
    assert all(p.data_ptr() == shared[name].data_ptr() for name, p in tracker.named_parameters()
               if not name.startswith("track_head."))
    assert tracker.track_head is not None and getattr(base, "track_head", None) is None  # the cached model is untouched
    points = [(250.0, 300.0), (100.0, 120.0)]
    tracks = session.track(2, points)
    inputs = torch.as_tensor(session.inputs)
    with torch.inference_mode():
        direct = tracker(inputs[[2, 0, 1]][None], heads=(), query_points=torch.tensor(points)[None])
    np.testing.assert_array_equal(tracks.uv, direct.track[0].numpy()[[1, 2, 0]])
    np.testing.assert_array_equal(tracks.visibility, direct.vis[0].numpy()[[1, 2, 0]])
    np.testing.assert_allclose(tracks.uv[2], points, atol=1e-4)  # the queries themselves in their own view
    assert session.track(2, points) is tracks  # kept in the session
