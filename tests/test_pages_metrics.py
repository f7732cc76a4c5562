"""AppTest: the home page and the Metrics page as a user drives them."""
import numpy as np
import pytest
from scipy.spatial import cKDTree
from streamlit.testing.v1 import AppTest

from core import geometry
from core.eval import metrics
from core.store.cache import RunStore
from tests.conftest import ROOT, known_sim3, ply_bytes
from tests.test_evaluate_cli import EXPECTED, _bad_files

APP = str(ROOT / "app.py")


def _metrics_page():
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("pages/metrics.py")
    at.run()
    return at


def _upload_and_evaluate(at, name, data):
    at.file_uploader(key="metrics.upload").set_value((name, data, "application/octet-stream"))
    at.run()
    at.button(key="metrics.evaluate").click()
    at.run()
    return at


def _metric(at, label):
    return float(next(m.value for m in at.metric if m.label == label))


def test_home_page_shows_the_sample(isolated_cache):
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    assert at.title[0].value == "ReconBench"
    values = {m.label: m.value for m in at.metric}
    assert values["Views"] == "42" and values["Registered"] == "42/42" and values["Image size"] == "480×640"
    assert len(at.get("plotly_chart")) == 1 and len(at.get("image")) == 8


def test_import_of_transformed_ground_truth_scores_perfectly_then_noise_scores_worse(isolated_cache, sample_scene):
    sim = known_sim3(9)
    gt = sample_scene.gt_points.astype(np.float64)
    at = _upload_and_evaluate(_metrics_page(), "gt_moved.ply", ply_bytes(geometry.transform_points(sim, gt)))
    assert not at.exception and not at.error
    assert _metric(at, "Chamfer") < 1e-3
    assert _metric(at, "F-score @ 0.01") == 1.0

    # 2 % Gaussian noise (of the object's bounding radius), compared with a direct computation.
    rng = np.random.default_rng(4)
    normalize = metrics.normalization_transform(gt)
    radius = 1 / geometry.sim3_parts(normalize)[0]
    noisy = gt + rng.normal(scale=0.02 * radius, size=gt.shape)
    at = _upload_and_evaluate(at, "gt_noisy.ply", ply_bytes(geometry.transform_points(sim, noisy)))
    assert not at.exception and not at.error
    chamfer, fscore = _metric(at, "Chamfer"), _metric(at, "F-score @ 0.01")
    truth = geometry.transform_points(normalize, noisy)  # the exact alignment, not ICP's
    gt_n = geometry.transform_points(normalize, gt)
    pick = lambda n, seed=0: np.random.default_rng(seed).choice(n, 10_000, replace=False)  # noqa: E731
    to_gt = cKDTree(gt_n).query(truth[pick(len(truth))])[0]
    to_pred = cKDTree(truth).query(gt_n[pick(len(gt_n))])[0]
    direct_chamfer = to_gt.mean() + to_pred.mean()
    p, r = np.mean(to_gt < 0.01), np.mean(to_pred < 0.01)
    assert chamfer == pytest.approx(direct_chamfer, rel=0.03)
    assert fscore == pytest.approx(2 * p * r / (p + r), abs=0.03)
    assert chamfer > 100 * 1e-3 * 0.1 and fscore < 0.9
    rows = at.dataframe
    assert len(RunStore(isolated_cache).runs("toy")) == 2 and rows


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_files_give_a_clear_message_and_leave_the_cache_untouched(isolated_cache, tmp_path, name):
    store = RunStore(isolated_cache)
    from core.data.scene import Reconstruction

    store.save("toy", "earlier", Reconstruction(method="earlier", points=np.zeros((20, 3))))
    before = store.snapshot()
    at = _upload_and_evaluate(_metrics_page(), name, _bad_files(tmp_path)[name])
    assert not at.exception
    assert len(at.error) == 1 and EXPECTED[name] in at.error[0].value and name in at.error[0].value
    assert store.snapshot() == before


def test_metrics_page_opens_filled_from_the_committed_runs_and_shows_their_scores():
    """No isolated cache: the committed sample runs are the leaderboard (read only; nothing is written)."""
    import json

    store = RunStore(ROOT / "cache")
    colmap = next(r for r in store.runs("toy") if r.method == "colmap")
    raw = json.loads((colmap.path / "evaluation.json").read_text())
    before = store.snapshot()
    at = _metrics_page()
    assert not at.exception and not at.error
    assert len(at.dataframe[0].value) == len(store.runs("toy"))
    at.selectbox(key="metrics.inspect").set_value(("toy", "colmap", colmap.key)).run()
    assert not at.exception and not at.error
    values = {m.label: m.value for m in at.metric}
    assert values["Chamfer"] == f"{raw['chamfer']:.4g}" and values["EMD"] == f"{raw['emd']:.4g}"
    assert values["F-score @ 0.01"] == f"{raw['fscore']['0.01']:.3f}"
    cameras = raw["cameras"]
    assert any(c.value.startswith(f"Camera errors over all {cameras['pairs']:,} view pairs") for c in at.caption)
    [table] = [d.value for d in at.dataframe if "measure" in d.value.columns]     # a formatted table
    shown = dict(zip(table["measure"], table["value"]))
    assert shown["AUC@30"] == f"{100 * cameras['auc30']:.0f} %" and shown["RRA@5°"] == f"{100 * cameras['rra@5']:.0f} %"
    assert shown["pairs"] == f"{cameras['pairs']:,}"
    assert any(f"AbsRel {raw['depth']['abs_rel']:.3g}" in c.value for c in at.caption)
    assert store.snapshot() == before
