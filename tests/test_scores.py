"""core.eval.scores: the typed evaluation object round-trips the JSON on disk, and its readers agree with it."""
import copy
import json
import shutil

import numpy as np
import pytest

from core.data.scene import Reconstruction, to_json
from core.errors import UserError
from core.eval import metrics
from core.eval.scores import Scores, ScoresFormatError, threshold_key
from core.store.cache import RunStore
from tests.conftest import ROOT

COMMITTED = sorted((ROOT / "cache" / "runs").glob("*/*/*/evaluation.json"))


def _committed(method: str) -> dict:
    return json.loads(next(p for p in COMMITTED if p.parent.parent.name == method).read_text())


def test_the_committed_runs_are_there_with_cameras_and_depth():
    assert len(COMMITTED) >= 5
    colmap = _committed("colmap")
    assert colmap["cameras"] and colmap["depth"]  # the nested branches are exercised below


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.parent.name}-{p.parent.name[:8]}")
def test_committed_evaluations_round_trip_byte_identically(path):
    text = path.read_text()
    raw = json.loads(text)
    scores = Scores.from_json(raw)
    assert to_json(scores.to_json()) == text
    # the typed accessors read the same numbers as the string keys
    assert scores.scored and scores.chamfer == raw["chamfer"] and scores.emd == raw["emd"]
    assert [threshold_key(t) for t in scores.taus] == sorted(raw["fscore"], key=float)
    for key, fscore in raw["fscore"].items():
        tau = float(key)
        assert scores.fscore_at(tau) == fscore
        assert scores.precision_at(tau) == raw["precision"][key] and scores.recall_at(tau) == raw["recall"][key]
        # invariant of the stored numbers: F is the harmonic mean of precision and recall
        p, r = raw["precision"][key], raw["recall"][key]
        assert fscore == pytest.approx(0.0 if p + r == 0 else 2 * p * r / (p + r), rel=1e-12)
    assert scores.chamfer == pytest.approx(scores.accuracy + scores.completeness, rel=1e-12)
    assert scores.points_scored.prediction == raw["points_scored"]["prediction"]
    assert scores.alignment.scale == raw["alignment"]["scale"]
    assert [list(row) for row in scores.alignment.rotation] == raw["alignment"]["rotation"]
    assert scores.auc30 == (raw.get("cameras") or {}).get("auc30")
    if raw.get("cameras"):
        assert scores.cameras.pairs == raw["cameras"]["pairs"]
        assert scores.cameras.rra == {float(k[4:]): v for k, v in raw["cameras"].items() if k.startswith("rra@")}
    if raw.get("depth"):
        assert (scores.depth.abs_rel, scores.depth.views) == (raw["depth"]["abs_rel"], raw["depth"]["views"])


def test_a_run_scored_now_round_trips(sample_scene):
    views = [0, 7, 14, 21]
    recon = Reconstruction(method="exact", points=sample_scene.gt_points[::20].astype(np.float32),
                           view_ids=views, intrinsics=sample_scene.intrinsics[views],
                           cam_from_world=sample_scene.cam_from_world[views],
                           depth_maps=sample_scene.depths[views])
    options = metrics.EvaluationOptions(alignment="cameras", icp=False, sample_points=2000, emd_points=128,
                                        taus=(0.005, 0.01, 0.02))
    evaluation = metrics.evaluate(sample_scene, recon, options)
    typed = evaluation.typed
    assert typed.to_json() == evaluation.scores
    assert to_json(Scores.from_json(json.loads(to_json(evaluation.scores))).to_json()) == to_json(evaluation.scores)
    # exact cameras and depth: every relative pose agrees, every depth ratio is 1
    assert typed.cameras.pairs == len(views) * (len(views) - 1) // 2 and typed.auc30 == 1.0
    assert set(typed.cameras.rra) == {5.0, 15.0, 30.0} and all(v == 1.0 for v in typed.cameras.rta.values())
    assert typed.depth.views == len(views) and typed.depth.abs_rel < 1e-5 and typed.depth.delta1 == 1.0
    assert typed.taus == (0.005, 0.01, 0.02) and typed.fscore_at(0.01) == evaluation.scores["fscore"]["0.01"]
    assert typed.fscore_at(0.05) is None  # not among the thresholds scored


def test_empty_camera_and_depth_errors_and_failures_round_trip():
    raw = _committed("colmap")
    raw["cameras"], raw["depth"] = {}, {}  # attempted, nothing comparable (fewer than two poses; no depth)
    scores = Scores.from_json(raw)
    assert not scores.cameras.available and not scores.depth.available and scores.auc30 is None
    assert scores.to_json() == raw
    del raw["cameras"], raw["depth"]  # not attempted: absent, not empty
    assert Scores.from_json(raw).cameras is None and Scores.from_json(raw).to_json() == raw

    failed = Scores.from_json({"error": "after alignment only 3 points lie near the object"})
    assert not failed.scored and failed.error.startswith("after alignment")
    assert failed.fscore_at(0.01) is None and failed.taus == () and failed.auc30 is None
    assert failed.to_json() == {"error": "after alignment only 3 points lie near the object"}
    assert Scores.failed("x") == failed.__class__(error="x")


def test_inconsistent_objects_are_refused_with_the_key_named():
    raw = _committed("lmnet")
    cases = {
        "unknown ['speed']": dict(raw, speed=1.0),
        "missing ['emd']": {k: v for k, v in raw.items() if k != "emd"},
        "same thresholds": dict(raw, recall={k: v for k, v in raw["recall"].items() if k != "0.05"}),
        "'0.010' is not written as '0.01'": dict(raw, **{n: {"0.010" if k == "0.01" else k: v
                                                                for k, v in raw[n].items()}
                                                            for n in ("fscore", "precision", "recall")}),
        "'chamfer' must be a number": dict(raw, chamfer="0.2"),
        "'points_scored.prediction' must be a whole number": dict(
            raw, points_scored=dict(raw["points_scored"], prediction=2033.0)),
        "'alignment.rotation' must be 3x3": dict(raw, alignment=dict(raw["alignment"], rotation=[[1, 0, 0]])),
        "of a failed run: unknown ['chamfer']": {"error": "no points", "chamfer": 1.0},
    }
    for message, obj in cases.items():
        with pytest.raises(ScoresFormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
            Scores.from_json(obj)
    assert issubclass(ScoresFormatError, UserError)
    with pytest.raises(ValueError, match="carries no scores"):
        Scores(error="failed", chamfer=0.1)
    with pytest.raises(ValueError, match="missing"):
        Scores(chamfer=0.1)


def test_leaderboard_reads_every_run_through_scores(tmp_path):
    from core.runner import leaderboard

    store = RunStore(tmp_path)
    raw = {}
    for path in COMMITTED:  # copy the committed runs' metadata and scores (no point arrays needed)
        target = store.run_dir(path.parts[-4], path.parts[-3], path.parts[-2])
        target.mkdir(parents=True)
        shutil.copy(path.parent / "meta.json", target / "meta.json")
        shutil.copy(path, target / "evaluation.json")
        np.savez(target / "reconstruction.npz", points=np.zeros((1, 3), np.float32))  # a readable run folder
        raw[path.parts[-2]] = json.loads(path.read_text())
    failed_key, broken_key = "f" * 20, "b" * 20
    for key, evaluation in ((failed_key, {"error": "too few points"}), (broken_key, {"chamfer": 0.1})):
        target = store.run_dir("toy", "imported", key)
        target.mkdir(parents=True)
        (target / "meta.json").write_text(json.dumps({"method": "imported", "notes": ["a note"]}))
        (target / "evaluation.json").write_text(json.dumps(evaluation))
        np.savez(target / "reconstruction.npz", points=np.zeros((1, 3), np.float32))
    rows = {row["key"]: row for row in leaderboard(store, "toy")}
    assert set(rows) == set(raw) | {failed_key, broken_key}
    for key, evaluation in raw.items():
        row = rows[key]
        assert list(row) == ["method", "label", "views", "view_ids", "weights", "chamfer", "emd", "F@0.01", "accuracy", "completeness",
                             "auc30", "seconds", "peak_memory_mb", "parameters_m", "device", "notes", "gt_version", "key"]
        assert (row["chamfer"], row["emd"], row["F@0.01"]) == (evaluation["chamfer"], evaluation["emd"],
                                                              evaluation["fscore"]["0.01"])
        assert (row["accuracy"], row["completeness"]) == (evaluation["accuracy"], evaluation["completeness"])
        assert row["auc30"] == (evaluation["cameras"]["auc30"] if "cameras" in evaluation else None)
    assert rows[failed_key]["chamfer"] is None and rows[failed_key]["notes"] == "a note (not scored: too few points)"
    assert rows[broken_key]["chamfer"] is None and "unreadable evaluation" in rows[broken_key]["notes"]
    assert "missing" in rows[broken_key]["notes"]
    assert rows[next(iter(raw))]["F@0.01"] is not None
    assert "F@0.02" in leaderboard(store, "toy", tau=0.02)[0]


def test_scaling_summary_reads_scores_typed():
    from core.studies import scaling

    first, second = _committed("colmap"), copy.deepcopy(_committed("lmnet"))

    def point(views, repeat, scores):
        return scaling.ScalingPoint(views, repeat, list(range(views)), 1.0 + repeat, 10.0, f"k{views}{repeat}", True,
                                    scores)

    result = scaling.ScalingResult("vggt", [point(2, 0, first), point(2, 1, second),
                                            point(3, 0, {"error": "no overlap"}), point(3, 1, None)])
    rows = scaling.summary_table(result)
    assert [r["views"] for r in rows] == [2, 3]
    chamfers = [first["chamfer"], second["chamfer"]]
    fscores = [first["fscore"]["0.01"], second["fscore"]["0.01"]]
    assert rows[0]["chamfer"] == pytest.approx(np.mean(chamfers)) and rows[0]["chamfer_std"] == pytest.approx(
        abs(chamfers[0] - chamfers[1]) / 2)
    assert rows[0]["fscore@0.01"] == pytest.approx(np.mean(fscores))
    assert rows[0]["emd"] == pytest.approx((first["emd"] + second["emd"]) / 2)
    assert "chamfer" not in rows[1] and rows[1]["subsets"] == 2  # neither subset of 3 views was scored
