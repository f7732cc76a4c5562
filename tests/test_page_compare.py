"""The Compare page and the leaderboard table, on runs written directly into a temporary run store
(no model runs): a COLMAP-like run (cameras, depth maps; 3 and 5 views), a 3D-LMNet-like run, an
imported file and a random-weights VGGT run. Plus the comparison logic against independent
computations."""
from __future__ import annotations

import csv
import io
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial import cKDTree
from streamlit.testing.v1 import AppTest

from core import geometry
from core.data.scene import Reconstruction
from core.eval import metrics
from core.studies import compare
from core.store.cache import RunStore
from tests.conftest import ROOT

APP = str(ROOT / "app.py")
FAST = dict(sample_points=2000, emd_points=200, icp=False)


def _store_run(store, scene, method, key, recon, alignment):
    recon.method = method
    evaluation = metrics.evaluate(scene, recon, metrics.EvaluationOptions(alignment=alignment, **FAST))
    store.save(scene.name, key, recon, evaluation.scores)
    return f"{method}/{key}"


@pytest.fixture(scope="module")
def stored(tmp_path_factory, sample_scene):
    """{name: ref} of the five runs in a fresh store under ``root``."""
    scene = sample_scene
    root = tmp_path_factory.mktemp("compare") / "cache"
    store = RunStore(root)
    rng = np.random.default_rng(0)
    normalise = metrics.normalization_transform(scene.gt_points)
    normalised = geometry.transform_points(normalise, scene.gt_points[::25].astype(np.float64))
    refs = {}
    for name, views in (("colmap3", [0, 14, 28]), ("colmap5", [0, 8, 16, 25, 33])):
        depths = np.stack([scene.depths[v][::4, ::4] for v in views]) * 2.0  # any scale: median-scaled
        recon = Reconstruction(method="colmap", points=scene.gt_points[::25] + rng.normal(0, 0.004, (4000, 3)),
                               view_ids=views, cam_from_world=scene.cam_from_world[views],
                               intrinsics=scene.intrinsics[views], depth_maps=depths.astype(np.float32),
                               options={"dense": True, "seed": 0}, seconds=30.0 + len(views),
                               peak_memory_bytes=(500 + len(views)) * 2**20)
        refs[name] = _store_run(store, scene, "colmap", f"{name:0<20}", recon, "cameras")
    recon = Reconstruction(method="lmnet", points=normalised[::2] + rng.normal(0, 0.02, (2000, 3)), view_ids=[10],
                           options={"variant": "dgcnn", "weights": "shipped"}, weights_kind="trained-here",
                           seconds=0.2, peak_memory_bytes=50 * 2**20, parameter_count=3_275_024)
    refs["lmnet"] = _store_run(store, scene, "lmnet", "l" * 20, recon, "none")
    recon = Reconstruction(method="imported", points=normalised + rng.normal(0, 0.05, normalised.shape),
                           options={"file": "chair_scan.ply", "kind": "points", "sha256": "0" * 64})
    refs["imported"] = _store_run(store, scene, "imported", "i" * 20, recon, "none")
    recon = Reconstruction(method="vggt", points=normalised + rng.normal(0, 0.3, normalised.shape),
                           view_ids=[0, 14, 28], options={"weights": "random-tiny", "checkpoint": "vggt-1b"},
                           weights_kind="random-tiny", seconds=1.0, peak_memory_bytes=300 * 2**20)
    refs["random"] = _store_run(store, scene, "vggt", "r" * 20, recon, "none")
    return SimpleNamespace(root=root, store=store, refs=refs)


def _open(page, monkeypatch, root, params=None, through_app=False):
    """AppTest of ``page`` on the store at ``root`` with the URL's query ``params``: opened through
    ``app.py``'s navigation when ``through_app``, else the page alone (the navigation marked as run)."""
    from core.app.widgets import APP_RAN_KEY

    monkeypatch.setenv("RECONBENCH_CACHE", str(root))
    at = AppTest.from_file(APP if through_app else str(ROOT / page), default_timeout=300)
    for name, value in (params or {}).items():
        at.query_params[name] = value
    if not through_app:
        at.session_state[APP_RAN_KEY] = True
    at.run()
    if through_app:
        at.switch_page(page)
        at.run()
    assert not at.exception, at.exception
    return at


def _linked_figure(at) -> dict:
    """The figure inside the Compare page's iframe: Plotly.newPlot(id, data, layout, config)."""
    (frame,) = at.get("iframe")
    html = frame.proto.srcdoc
    assert "plotly_relayouting" in html and "plotly_relayout'" in html  # the camera link is installed
    start = html.index("Plotly.newPlot(")
    decoder = json.JSONDecoder()
    position = html.index("[", start)
    data, end = decoder.raw_decode(html, position)
    layout, _ = decoder.raw_decode(html, html.index("{", end))
    return {"data": data, "layout": layout}


def _expected_scale(store, scene, refs) -> float:
    """The 95th percentile of every drawn run's distances, computed here from the stored alignment."""
    gt = geometry.transform_points(metrics.normalization_transform(scene.gt_points), scene.gt_points.astype(np.float64))
    tree, pooled = cKDTree(gt), []
    for ref in refs:
        method, key = ref.split("/")
        record = next(r for r in store.runs(scene.name) if r.method == method and r.key == key)
        align = record.evaluation["alignment"]
        moved = geometry.transform_points(geometry.sim3_matrix(align["scale"], np.array(align["rotation"]),
                                                               np.array(align["translation"])),
                                          record.load().points.astype(np.float64))
        margin = 0.1 * (gt.max(axis=0) - gt.min(axis=0))
        moved = moved[np.all((moved >= gt.min(axis=0) - margin) & (moved <= gt.max(axis=0) + margin), axis=1)]
        pooled.append(tree.query(moved)[0])
    return float(np.percentile(np.concatenate(pooled), 95))


def test_compare_page_draws_three_linked_views_one_scale_and_the_charts(stored, sample_scene, monkeypatch):
    chosen = [stored.refs["colmap3"], stored.refs["lmnet"], stored.refs["imported"]]
    at = _open("pages/compare.py", monkeypatch, stored.root, {"runs": ",".join(chosen), "camera": "side"},
               through_app=True)
    assert not at.error
    assert at.multiselect(key="compare.runs").value == chosen
    assert at.radio(key="compare.camera").value == "side"

    figure = _linked_figure(at)
    layout = figure["layout"]
    scenes = sorted(k for k in layout if re.fullmatch(r"scene\d*", k))
    assert scenes == ["scene", "scene2", "scene3"]
    cameras = [layout[s]["camera"] for s in scenes]
    assert all(c == cameras[0] for c in cameras)  # one starting camera ...
    assert all(layout[s]["xaxis"]["range"] == layout["scene"]["xaxis"]["range"] for s in scenes)  # ... one framing
    up = np.array([cameras[0]["up"][a] for a in "xyz"])
    eye = np.array([cameras[0]["eye"][a] for a in "xyz"])
    assert abs(eye @ up) < 1e-9 and np.linalg.norm(np.cross(up, compare.scene_up(sample_scene))) < 1e-9  # side
    clouds = [t for t in figure["data"] if t["name"] != "ground truth"]
    truth = [t for t in figure["data"] if t["name"] == "ground truth"]
    assert len(clouds) == 3 and all(t["marker"]["coloraxis"] == "coloraxis" for t in clouds)
    assert len(truth) == 3 and truth[0]["marker"]["color"].startswith("rgba(214,39,214")
    assert layout["coloraxis"]["cmin"] == 0
    assert layout["coloraxis"]["cmax"] == pytest.approx(_expected_scale(stored.store, sample_scene, chosen), rel=1e-5)

    charts = {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    assert len(charts) == 4  # depth errors, score bars, Pareto, quality against views
    bars = next(c for c in charts.values() if c["data"][0]["type"] == "bar")
    titles = [a["text"] for a in bars["layout"]["annotations"]]
    assert "Chamfer ↓ lower is better" in titles and "F-score @ 0.01 ↑ higher is better" in titles
    assert titles[0].startswith("Chamfer")  # the first subplot: axis "x"
    for ref in chosen:
        method, key = ref.split("/")
        evaluation = next(r for r in stored.store.runs("toy") if r.key == key).evaluation
        bar = next(t for t in bars["data"] if t["xaxis"] == "x" and t["x"][0].endswith(key[:6]))
        assert bar["y"][0] == pytest.approx(evaluation["chamfer"])
    depth = next(c for c in charts.values() if c["data"][0]["type"] == "heatmap")
    assert len(depth["data"]) == 3 and all(t["coloraxis"] == "coloraxis" for t in depth["data"])  # COLMAP's 3 views
    views = next(c for c in charts.values() if c["data"][0].get("error_y"))
    assert [t["name"] for t in views["data"]] == ["COLMAP (SfM + stereo)"] and views["data"][0]["x"] == [3, 5]


def test_compare_url_round_trips_the_selection_and_random_runs_stay_out_unless_asked(stored, monkeypatch):
    at = _open("pages/compare.py", monkeypatch, stored.root)
    options = at.multiselect(key="compare.runs").options
    assert not any("random-tiny" in o for o in options) and len(options) == 4
    wanted = [stored.refs["lmnet"], stored.refs["colmap3"]]
    at.multiselect(key="compare.runs").set_value(wanted)
    at.toggle(key="compare.gt").set_value(False)
    at.radio(key="compare.camera").set_value("top").run()
    assert not at.exception
    params = dict(at.query_params)
    assert params["runs"] == ",".join(wanted) and params["gt"] == "0" and params["camera"] == "top"
    assert not any(t["name"] == "ground truth" for t in _linked_figure(at)["data"])

    again = _open("pages/compare.py", monkeypatch, stored.root, params)  # the shared link
    assert again.multiselect(key="compare.runs").value == wanted
    assert again.toggle(key="compare.gt").value is False and again.radio(key="compare.camera").value == "top"

    marked = _open("pages/compare.py", monkeypatch, stored.root, {"runs": stored.refs["random"]})
    assert marked.toggle(key="compare.random").value is True  # a link naming a random run includes them
    assert marked.multiselect(key="compare.runs").value == [stored.refs["random"]]
    assert marked.multiselect(key="compare.runs").options[0].startswith("⚠ VGGT · vggt-1b · random-tiny")
    assert any("random weights" in w.value and "meaningless" in w.value for w in marked.warning)


def test_leaderboard_hides_random_runs_by_default_and_labels_rows(stored, monkeypatch):
    at = _open("pages/metrics.py", monkeypatch, stored.root)
    assert not at.error
    table = at.dataframe[0].value
    labels = list(table["label"])
    assert len(labels) == 4 and not any("VGGT" in label for label in labels)
    assert "3D-LMNet · dgcnn · trained-here" in labels and "Imported · chair_scan.ply" in labels
    views = list(zip(labels, table["view_ids"]))
    assert ("3D-LMNet · dgcnn · trained-here", "10") in views
    assert sorted(v for label, v in views if label.startswith("COLMAP")) == ["0, 14, 28", "0, 8, 16, 25, 33"]
    missing = next(v for label, v in views if label.startswith("Imported"))
    assert missing is None or missing != missing  # None (or NaN in the frame): shown as —
    assert list(table["chamfer"]) == sorted(table["chamfer"])  # best first
    config = json.loads(at.dataframe[0].proto.columns)
    assert config["chamfer"]["label"] == "Chamfer ↓" and config["seconds"]["type_config"]["format"] == "%.1f s"
    assert "lower is better" in config["chamfer"]["help"]
    assert at.dataframe[0].proto.placeholder == "—"

    at.toggle(key="metrics.leaderboard.random").set_value(True).run()
    labels = list(at.dataframe[0].value["label"])
    assert len(labels) == 5 and "⚠ VGGT · vggt-1b · random-tiny" in labels


# --------------------------------------------------------------------------- the logic
def test_pareto_front_matches_a_brute_force_definition():
    rng = np.random.default_rng(3)
    for _ in range(30):
        costs = list(rng.integers(0, 6, 9).astype(float))
        quality = list(rng.integers(0, 6, 9).astype(float))
        quality[0] = None
        for lower in (True, False):
            sign = 1 if lower else -1
            expected = {i for i in range(1, 9) if not any(
                costs[j] <= costs[i] and sign * quality[j] <= sign * quality[i]
                and (costs[j], quality[j]) != (costs[i], quality[i]) for j in range(1, 9))}
            front = compare.pareto_front(costs, quality, lower)
            assert set(front) == expected and [costs[i] for i in front] == sorted(costs[i] for i in front)


def test_views_series_labels_refs_and_csv(stored):
    runs = compare.compared_runs(stored.store, "toy")
    by_ref = {r.ref: r for r in runs}
    series = compare.views_series(runs)
    colmap = [by_ref[stored.refs["colmap3"]], by_ref[stored.refs["colmap5"]]]
    assert list(series) == ["COLMAP (SfM + stereo)"]
    assert [(p.views, p.mean, p.runs) for p in series["COLMAP (SfM + stereo)"]] == [
        (3, colmap[0].value("chamfer"), 1), (5, colmap[1].value("chamfer"), 1)]
    assert [r.ref for r in compare.filter_runs(runs, include_random=True, views=[3])] == sorted(
        [stored.refs["colmap3"], stored.refs["random"]], key=[r.ref for r in runs].index)
    assert stored.refs["random"] not in [r.ref for r in compare.filter_runs(runs)]
    text = compare.refs_text(colmap) + ", ," + stored.refs["colmap3"] + ",nope/1"
    assert compare.parse_refs(text) == [stored.refs["colmap3"], stored.refs["colmap5"], "nope/1"]
    assert compare.resolve_refs(compare.parse_refs(text), runs) == (colmap, ["nope/1"])
    from core.models.registry import run_label
    from core.runner import view_ids_text
    assert view_ids_text(list(range(0, 42, 2))) == "0, 2, 4, …, 40" and view_ids_text([3]) == "3"
    assert run_label("imported", {"options": {"file": "a.ply"}}) == "Imported · a.ply"
    assert run_label("someone-else", {"weights_kind": "pretrained"}) == "someone-else · pretrained"

    from core.runner import leaderboard
    rows = compare.leaderboard_view(leaderboard(stored.store, "toy"))
    parsed = list(csv.reader(io.StringIO(compare.leaderboard_csv(rows))))
    header, body = parsed[0], parsed[1:]
    assert header[:4] == ["Run", "Views", "Input views", "Chamfer ↓ (normalised units)"] and "Time (s)" in header
    imported = next(r for r in body if r[0] == "Imported · chair_scan.ply")
    assert imported[1:3] == ["", ""] and imported[header.index("Time (s)")] == "" and float(imported[3]) == next(r["chamfer"] for r in rows if r["method"] == "imported")


def test_depth_error_maps_against_a_direct_computation():
    rng = np.random.default_rng(5)
    gt = rng.uniform(1.0, 3.0, (2, 40, 30)).astype(np.float32)
    gt[0, :5] = 0  # no ground truth there
    masks = np.ones((2, 40, 30), bool)
    masks[1, :, :10] = False
    scene = SimpleNamespace(depths=gt, masks=masks, num_views=2)
    noise = rng.uniform(-0.1, 0.1, (20, 15))
    pred = (3.0 * gt[1, ::2, ::2] * (1 + noise)).astype(np.float32)  # view 1 at half resolution
    recon = SimpleNamespace(depth_maps=pred[None], view_ids=[1])
    ((view, error),) = compare.depth_error_maps(scene, recon)
    import cv2
    g = cv2.resize(gt[1], (15, 20), interpolation=cv2.INTER_NEAREST).astype(np.float64)
    valid = cv2.resize(masks[1].astype(np.uint8), (15, 20), interpolation=cv2.INTER_NEAREST) > 0
    scaled = pred * np.median(g[valid]) / np.median(pred[valid].astype(np.float64))
    assert view == 1 and np.isnan(error[~valid]).all()
    np.testing.assert_allclose(error[valid], np.abs(scaled[valid] - g[valid]) / g[valid], rtol=1e-5, atol=1e-6)
    assert compare.depth_error_maps(scene, SimpleNamespace(depth_maps=np.ones((1, 30, 30)), view_ids=[0])) == []


def test_camera_presets_and_the_overlay_ground_truth_toggle(sample_scene):
    from core.app import compare_figures, figures

    up = np.array([0.0, 0.3, 1.0]) / np.linalg.norm([0.0, 0.3, 1.0])
    vec = lambda d: np.array([d["x"], d["y"], d["z"]])  # noqa: E731
    front, side, top = (compare_figures.camera_for(p, up) for p in ("front", "side", "top"))
    assert abs(vec(front["eye"]) @ up) < 1e-12 and abs(vec(side["eye"]) @ vec(front["eye"])) < 1e-12
    assert np.allclose(np.cross(vec(top["eye"]), up), 0) and vec(top["eye"]) @ up > 0
    recon = Reconstruction(method="m", points=sample_scene.gt_points[::50] + 0.002)
    evaluation = metrics.evaluate(sample_scene, recon, metrics.EvaluationOptions(alignment="none", **FAST))
    shown, caption = figures.error_overlay_figure(evaluation, max_points=1000)
    hidden, hidden_caption = figures.error_overlay_figure(evaluation, max_points=1000, show_ground_truth=False)
    assert shown.data[0].name == "ground truth" and shown.data[0].marker.color == figures.GT_COLOUR
    assert [t.name for t in hidden.data] == ["prediction"] and "ground truth hidden" in hidden_caption
