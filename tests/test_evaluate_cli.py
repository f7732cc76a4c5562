"""`python -m core evaluate`: JSON scores, and one-line errors on bad input with the cache untouched."""
import json
import subprocess
import sys

import numpy as np
import pytest

from core import geometry
from core.store.cache import RunStore
from tests.conftest import ROOT, SAMPLE, known_sim3, ply_bytes


def _cli(*args, cache):
    return subprocess.run([sys.executable, "-m", "core", "--cache", str(cache), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_evaluate_prints_the_scores_as_json(tmp_path, sample_scene):
    sim = known_sim3(5)
    path = tmp_path / "moved.ply"
    path.write_bytes(ply_bytes(geometry.transform_points(sim, sample_scene.gt_points.astype(np.float64))))
    result = _cli("evaluate", "--scene", str(SAMPLE), "--reconstruction", str(path), cache=tmp_path / "c")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    for key in ("chamfer", "emd", "fscore", "precision", "recall", "points_scored", "alignment"):
        assert key in scores
    assert scores["chamfer"] < 1e-3 and scores["fscore"]["0.01"] == 1.0
    assert scores["alignment"]["scale"] == pytest.approx(
        1 / geometry.sim3_parts(sim)[0] * geometry.sim3_parts(
            __import__("core.eval.metrics", fromlist=["x"]).normalization_transform(sample_scene.gt_points))[0], rel=1e-4)
    assert scores["alignment"]["fitness"] > 0.99
    assert len(RunStore(tmp_path / "c").runs("toy")) == 1


def _bad_files(tmp_path):
    rng = np.random.default_rng(0)
    files = {
        "empty.ply": ply_bytes(np.zeros((0, 3))),
        "nans.ply": ply_bytes(np.full((100, 3), np.nan)),
        "two.ply": ply_bytes(rng.normal(size=(2, 3))),
        "notaply.ply": b"this is a text file, not a point cloud\n" * 20,
    }
    buffer = tmp_path / "predictions.npz"
    np.savez(buffer, depth=np.zeros((2, 8, 8, 1)), extrinsic=np.zeros((2, 3, 4)))
    files["predictions.npz"] = buffer.read_bytes()
    return files


EXPECTED = {"empty.ply": "no points", "nans.ply": "no finite points", "two.ply": "2 usable points",
            "notaply.ply": "not a readable PLY", "predictions.npz": "lacks the point map"}


def test_bad_inputs_give_one_line_errors_and_leave_the_cache_alone(tmp_path):
    store = RunStore(tmp_path / "c")
    store.save("toy", "existing", __import__("core.data.scene", fromlist=["x"]).Reconstruction(
        method="earlier", points=np.zeros((20, 3))))
    before = store.snapshot()
    for name, data in _bad_files(tmp_path).items():
        path = tmp_path / "in" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        result = _cli("evaluate", "--scene", str(SAMPLE), "--reconstruction", str(path), cache=tmp_path / "c")
        assert result.returncode == 2, name
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and EXPECTED[name] in lines[0], (name, lines)
        assert store.snapshot() == before
    missing = _cli("evaluate", "--scene", str(tmp_path), "--reconstruction", str(path), cache=tmp_path / "c")
    assert missing.returncode == 2 and "not a scene folder" in missing.stderr
