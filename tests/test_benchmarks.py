"""Benchmark plans on format-faithful tiny CO3D and DTU data: the runs, the papers' table shape,
CSV / LaTeX exports that read back, the CLI and the Benchmarks page."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from core.errors import OptionError, UserError
from core.studies import benchmarks
from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")

CO3D_PLAN = """
name = "tiny-co3d"
protocol = "co3d-pose"
root = "co3d"
items = ["teddybear/101_1_1", "teddybear/102_2_2", "apple/201_1_1"]
methods = ["vggt"]
views = [3]
seed = 4
[options.vggt]
weights = "random-tiny"
"""

DTU_PLAN = """
name = "tiny-dtu"
protocol = "dtu"
root = "dtu"
items = ["7"]
methods = ["vggt"]
views = [4]
[options.vggt]
weights = "random-tiny"
confidence_percentile = 99.0
"""


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """A data-sets folder with a two-category CO3D root and a one-scan DTU root, in the official layouts."""
    from tests.test_co3d import write_co3d_root
    from tests.test_dtu import write_scan

    root = tmp_path_factory.mktemp("datasets")
    write_co3d_root(root / "co3d", "teddybear", {"101_1_1": (56, 40, 5), "102_2_2": (40, 56, 5)})
    write_co3d_root(root / "co3d", "apple", {"201_1_1": (40, 56, 5)})
    (root / "dtu").mkdir()
    write_scan(root / "dtu")
    return root


@pytest.fixture()
def environment(datasets, tmp_path, monkeypatch):
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "co3d.toml").write_text(CO3D_PLAN)
    (plans / "dtu.toml").write_text(DTU_PLAN)
    (plans / "one-sequence.toml").write_text(CO3D_PLAN.replace('"teddybear/101_1_1", "teddybear/102_2_2", ', ""))
    monkeypatch.setenv("RECONBENCH_DATASETS", str(datasets))
    monkeypatch.setenv("RECONBENCH_PLANS", str(plans))
    monkeypatch.setenv("RECONBENCH_CACHE", str(tmp_path / "cache"))
    return plans


def _auc30(rre, rte) -> float:
    """AUC@30 restated: the mean over thresholds 1..30 deg of the fraction of pairs with max error below."""
    worst = np.maximum(rre, rte)
    return float(np.mean([np.mean(worst < t) for t in range(1, 31)]))


def test_co3d_plan_gives_per_category_rows_and_their_mean(environment):
    from core.store.cache import RunStore

    plan = benchmarks.load_plan(environment / "co3d.toml")
    result = benchmarks.run_plan(plan, RunStore())
    assert [r["item"] for r in result.rows] == plan.items and not any("error" in r for r in result.rows)
    assert all(r["weights"] == "random-tiny" and len(r["rre_deg"]) == 3 for r in result.rows)  # 3 frames: 3 pairs
    table = {row["category"]: row for row in result.table}
    assert set(table) == {"apple", "teddybear", "mean"}
    # per category: the pairs of its sequences pooled; mean: the average of the categories
    teddy = [r for r in result.rows if r["category"] == "teddybear"]
    rre = np.concatenate([r["rre_deg"] for r in teddy])
    rte = np.concatenate([r["rte_deg"] for r in teddy])
    assert table["teddybear"]["auc30"] == pytest.approx(100 * _auc30(rre, rte), abs=1e-9)
    assert table["teddybear"]["rra30"] == pytest.approx(100 * np.mean(rre < 30), abs=1e-9)
    for metric in ("auc30", "rra30", "rta30"):
        assert table["mean"][metric] == pytest.approx((table["apple"][metric] + table["teddybear"][metric]) / 2)
    # the frames are the protocol's seeded draw
    from core.eval.protocols.co3d_pose import sample_frames

    again = benchmarks.run_plan(plan, RunStore())
    assert all(r["cached"] for r in again.rows) and again.table == result.table
    assert sample_frames(5, 3, 4) == sample_frames(5, 3, 4)


def test_dtu_plan_scores_in_millimetres_with_a_mean_row(environment):
    """A stored run holding the scan's own points and cameras, moved by a known Sim(3) into another
    frame, is found in the cache, aligned on its camera centres and scores ~0 mm; a random-weights
    run whose cameras are noise lands outside the evaluation box and is reported, not scored."""
    from core import geometry
    from core.data.scene import Reconstruction
    from core.models import registry
    from core.runner import key_for
    from core.store.cache import RunStore

    plan = benchmarks.load_plan(environment / "dtu.toml")
    random_run = benchmarks.run_plan(plan, RunStore(environment.parent / "other-cache"))
    assert "none of the" in random_run.rows[0]["error"] and random_run.table == []

    store = RunStore()
    scene, _ = benchmarks._scene_for(plan, "7", store.root)
    views = scene.uniform_views(4)
    method = registry.get("vggt")
    options = method.parse_options(plan.options["vggt"])
    move = geometry.sim3_matrix(0.01, geometry.look_at(np.array([1.0, 2.0, 3.0]), np.zeros(3))[:3, :3],
                                np.array([0.5, -0.2, 0.1]))      # mm -> some unit-less frame
    cams = np.stack([c @ np.linalg.inv(move) for c in scene.cam_from_world[views]])
    cams[:, :3, :] /= np.cbrt(np.linalg.det(cams[:, :3, :3]))[:, None, None]  # rigid again
    perfect = Reconstruction("vggt", geometry.transform_points(move, scene.gt_points.astype(np.float64)),
                             view_ids=views, cam_from_world=cams, weights_kind="random-tiny")
    store.save(scene.name, key_for(scene, method, views, options), perfect)
    plan.name = "tiny-dtu-perfect"
    result = benchmarks.run_plan(plan, store)
    [row] = result.rows
    assert "error" not in row, row
    assert row["cached"] and row["scan"] == "scan7" and row["alignment"].startswith("cameras")
    assert row["accuracy_mm"] < 1e-3 and row["completeness_mm"] < 1e-3   # the scan's own points
    assert row["overall_mm"] == pytest.approx((row["accuracy_mm"] + row["completeness_mm"]) / 2)
    assert [r["scan"] for r in result.table] == ["scan7", "mean"]
    assert result.table[1]["overall_mm"] == pytest.approx(row["overall_mm"])


def test_csv_and_latex_exports_read_back():
    table = [{"category": "teddy_bear", "method": "vggt", "views": 10, "auc30": 88.21234, "rra30": 95.5,
              "rta30": 93.0},
             {"category": "mean", "method": "vggt", "views": 10, "auc30": 1 / 3, "rra30": 100.0, "rta30": 0.0}]
    columns = benchmarks.table_columns("co3d-pose")
    assert benchmarks.read_csv(benchmarks.to_csv(table, columns)) == table  # full precision
    latex = benchmarks.to_latex(table, columns, caption="CO3D & friends")
    assert r"\toprule" in latex and r"teddy\_bear" in latex and r"CO3D \& friends" in latex
    back = benchmarks.read_latex(latex)
    assert [r["category"] for r in back] == ["teddy_bear", "mean"]
    for original, read in zip(table, back):
        for column in columns[3:]:
            assert read[column] == pytest.approx(round(original[column], 3), abs=1e-12)
        assert read["views"] == 10


@pytest.mark.parametrize("text, message", [
    ('name = "x"\nprotocol = "co3d-pose"\nroot = "co3d"\nmethods = ["vggt"]\nviews = [3]', "lacks items"),
    ('name = "x"\nprotocol = "eth3d"\nroot = "a"\nitems = ["a/b"]\nmethods = ["vggt"]\nviews = [3]',
     r"unknown protocol 'eth3d' \(choices: co3d-pose, dtu, reconbench\)"),
    ('name = "x"\nprotocol = "dtu"\nroot = "dtu"\nitems = ["7"]\nmethods = ["nerf"]\nviews = [3]',
     "unknown method"),
    ('name = "x"\nprotocol = "dtu"\nroot = "dtu"\nitems = ["scan7"]\nmethods = ["vggt"]\nviews = [3]',
     "DTU items are scan numbers"),
    ('name = "x"\nprotocol = "dtu"\nroot = "dtu"\nitems = ["7"]\nmethods = ["vggt"]\nviews = [1]',
     "views must be whole numbers >= 2"),
    ('name = "x\nprotocol', "not valid TOML"),
])
def test_bad_plans_are_refused_with_one_clear_message(tmp_path, text, message):
    path = tmp_path / "plan.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        benchmarks.load_plan(path)


def test_plan_options_are_validated_like_everywhere_else(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text(DTU_PLAN.replace('"random-tiny"', '"tiny"'))
    with pytest.raises(OptionError, match="unknown weights 'tiny'"):
        benchmarks.load_plan(path)


def test_a_root_outside_the_datasets_folder_is_refused(environment):
    plan = benchmarks.load_plan(environment / "dtu.toml")
    plan.root = "../../etc"
    with pytest.raises(UserError, match="leaves the data-sets folder"):
        benchmarks.dataset_folder(plan)


def test_batch_cli_writes_the_table_and_refuses_a_bad_plan(environment, tmp_path):
    import os

    csv_path, tex_path = tmp_path / "t.csv", tmp_path / "t.tex"
    out = subprocess.run([sys.executable, "-m", "core", "batch", str(environment / "one-sequence.toml"), "--csv",
                          str(csv_path), "--latex", str(tex_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["kind"] for line in lines] == ["row", "table", "table"]
    table = [{k: v for k, v in line.items() if k != "kind"} for line in lines[1:]]
    assert benchmarks.read_csv(csv_path.read_text()) == table
    assert [r["category"] for r in benchmarks.read_latex(tex_path.read_text())] == ["apple", "mean"]
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"')
    refused = subprocess.run([sys.executable, "-m", "core", "batch", str(bad)], cwd=ROOT, capture_output=True,
                             text=True, timeout=300, env=os.environ.copy())
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == ["error: plan bad.toml lacks protocol, root, items, methods, views"]


def test_benchmarks_page_runs_a_plan_and_shows_the_table(environment):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.run()
    at.switch_page("pages/benchmarks.py")
    at.run()
    assert not at.exception
    at.selectbox(key="benchmarks.plan").set_value("one-sequence").run()
    assert any("No stored result" in i.value for i in at.info)
    at.button(key="benchmarks.run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    tables = at.dataframe
    measured = tables[0].value
    assert list(measured["category"]) == ["apple", "mean"] and "AUC@30 (%)" in measured.columns
    reported = tables[1].value
    assert list(reported["reported"]) == [88.2, 89.5]
    assert len(at.get("download_button")) == 2
