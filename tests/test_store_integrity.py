"""Results that stay true and a store that survives bad files.

A tiny in-test method (``echo``: the scene's ground-truth points moved by a fixed offset, no model)
keeps every run cheap; the scene is 3 views of 16x16 pixels with 300 ground-truth points.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import numpy as np
import pytest

from core import options as opts
from core.data.fingerprint import UNKNOWN, ground_truth_fingerprint
from core.data.scene import Reconstruction, Scene
from core.eval import metrics
from core.models import registry
from core.runner import import_file, leaderboard, run_method
from core.store.cache import RunStore, run_key


@dataclass
class EchoOptions:
    offset: float = opts.option(0.0, "shift added to every point (world units)", min=-1.0, max=1.0)


class Echo(registry.Method):
    name = "echo"
    label = "Echo"
    family = "discriminative"
    version = "1"
    options_type = EchoOptions
    calls = 0

    def load(self, options, device):
        return None

    def predict(self, model, scene, view_ids, options, progress, device):
        Echo.calls += 1
        return Reconstruction(method=self.name, points=scene.gt_points + np.float32(options.offset))


@pytest.fixture()
def echo(monkeypatch):
    monkeypatch.setitem(registry.METHOD_MODULES, "echo", __name__)
    monkeypatch.setitem(registry._loaded, "echo", Echo())
    Echo.calls = 0
    return "echo"


def tiny_scene(seed: int = 0, name: str = "tiny") -> Scene:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(3)]
    intrinsics = np.repeat(np.array([[[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]]), 3, axis=0)
    poses = np.repeat(np.eye(4)[None], 3, axis=0)
    poses[:, 2, 3] = 3.0
    points = rng.normal(size=(300, 3)).astype(np.float32)
    return Scene(name=name, images=images, image_names=[f"{i}.png" for i in range(3)], intrinsics=intrinsics,
                 cam_from_world=poses, gt_points=points)


FAST = metrics.EvaluationOptions(sample_points=500, emd_points=64, alignment="none")
FAST_OTHER = metrics.EvaluationOptions(sample_points=400, emd_points=64, alignment="none")


# ------------------------------------------------------------------------------ results that stay true
def test_a_new_ground_truth_is_not_answered_from_the_cache(tmp_path, echo):
    store = RunStore(tmp_path)
    scene = tiny_scene(0)
    first = run_method(scene, echo, [0, 1], store=store, evaluate=False)
    again = run_method(scene, echo, [0, 1], store=store, evaluate=False)
    assert (first.cached, again.cached, again.key) == (False, True, first.key) and Echo.calls == 1

    replaced = tiny_scene(0)
    replaced.gt_points = replaced.gt_points * 2  # same name, same views, new ground truth
    rerun = run_method(replaced, echo, [0, 1], store=store, evaluate=False)
    assert not rerun.cached and rerun.key != first.key and Echo.calls == 2
    assert rerun.recon.extra["ground_truth"] == ground_truth_fingerprint(replaced)

    # grouped by ground truth: each scene object sees its own run, the name sees both
    versions = {row["gt_version"] for row in leaderboard(store, "tiny")}
    assert versions == {ground_truth_fingerprint(scene)[:12], ground_truth_fingerprint(replaced)[:12]}
    assert [row["key"] for row in leaderboard(store, replaced)] == [rerun.key]
    assert [row["key"] for row in leaderboard(store, scene)] == [first.key]


def test_fingerprint_covers_points_cameras_and_masks_not_the_name():
    base = ground_truth_fingerprint(tiny_scene(0))
    renamed = tiny_scene(0, name="other")
    assert ground_truth_fingerprint(renamed) == base
    for change in ("gt_points", "cam_from_world", "intrinsics"):
        scene = tiny_scene(0)
        value = getattr(scene, change).copy()
        value.flat[0] += 1e-3
        setattr(scene, change, value)
        assert ground_truth_fingerprint(scene) != base, change
    masked = tiny_scene(0)
    masked.masks = np.ones((3, 16, 16), bool)
    assert ground_truth_fingerprint(masked) != base


def test_old_runs_without_a_fingerprint_are_read_as_unknown(tmp_path):
    store = RunStore(tmp_path)
    recon = Reconstruction(method="colmap", points=np.zeros((5, 3), np.float32), view_ids=[0])
    key = run_key("colmap", "1", {}, [0], [])  # a key of the format before fingerprints
    store.save("tiny", key, recon)
    (row,) = leaderboard(store, "tiny")
    assert row["gt_version"] == UNKNOWN and row["key"] == key
    assert [r["key"] for r in leaderboard(store, tiny_scene(0))] == [key]  # shown, marked unknown


def test_evaluations_with_other_options_coexist(tmp_path):
    from tests.conftest import ply_bytes

    store = RunStore(tmp_path)
    scene = tiny_scene(0)
    data = ply_bytes(scene.gt_points + np.float32(0.01))
    first, _ = import_file(scene, data, "cloud.ply", store=store, options=FAST)
    second, _ = import_file(scene, data, "cloud.ply", store=store, options=FAST_OTHER)
    assert second.key == first.key
    folder = store.run_dir("tiny", "imported", first.key)
    (folder / "evaluation.json").write_text(json.dumps({"chamfer": 0.246}))  # a stored default evaluation
    before = (folder / "evaluation.json").read_bytes()
    import_file(scene, data, "cloud.ply", store=store, options=FAST)  # again, with non-default options
    assert (folder / "evaluation.json").read_bytes() == before
    (record,) = store.runs("tiny")
    assert record.evaluation == {"chamfer": 0.246}
    by_points = {v["options"]["sample_points"]: v["scores"] for v in record.evaluations.values()}
    assert sorted(by_points) == [400, 500]
    assert by_points[500]["chamfer"] == pytest.approx(first.evaluation["chamfer"])
    assert by_points[400]["chamfer"] == pytest.approx(second.evaluation["chamfer"])


# ------------------------------------------------------------------------------ damaged runs
DAMAGE = {
    "meta is a JSON string": ("meta.json", b'"just a string"', "holds a JSON str"),
    "meta is not UTF-8": ("meta.json", b"\xff\xfe\x00garbage", "not UTF-8"),
    "evaluation is not JSON": ("evaluation.json", b"{oops", "evaluation.json: not JSON"),
    "reconstruction is not an archive": ("reconstruction.npz", b"PK\x03\x04 truncated", "reconstruction.npz"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_one_damaged_run_folder_is_skipped_and_reported(tmp_path, echo, case, capsys):
    from core.__main__ import main

    store = RunStore(tmp_path)
    scene = tiny_scene(0)
    good = run_method(scene, echo, [0, 1], store=store, evaluate=False)
    bad = run_method(scene, echo, [0, 2], store=store, evaluate=False)
    store.save_evaluation("tiny", echo, bad.key, {"chamfer": 1.0})
    name, content, reason = DAMAGE[case]
    (store.run_dir("tiny", echo, bad.key) / name).write_bytes(content)

    assert [r.key for r in store.runs("tiny")] == [good.key]
    assert [row["key"] for row in leaderboard(store, "tiny")] == [good.key]
    (damaged,) = store.damaged()
    assert (damaged.key, damaged.method) == (bad.key, echo) and reason in damaged.reason

    assert main(["--cache", str(tmp_path), "runs", "--scene", "tiny"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["key"] for row in rows] == [good.key]
    assert main(["--cache", str(tmp_path), "cache", "damaged"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["key"] == bad.key

    # asked for again, the damaged run is computed again and stored whole
    again = run_method(scene, echo, [0, 2], store=store, evaluate=False)
    assert not again.cached and again.key == bad.key
    assert store.damaged() == [] and len(store.runs("tiny")) == 2


def test_repair_removes_only_damaged_folders(tmp_path, echo, capsys):
    from core.__main__ import main

    store = RunStore(tmp_path)
    scene = tiny_scene(0)
    good = run_method(scene, echo, [0, 1], store=store, evaluate=False)
    bad = run_method(scene, echo, [1, 2], store=store, evaluate=False)
    (store.run_dir("tiny", echo, bad.key) / "meta.json").write_bytes(b"[1, 2]")
    assert main(["--cache", str(tmp_path), "cache", "repair"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] is True
    assert not store.run_dir("tiny", echo, bad.key).exists()
    assert [r.key for r in store.runs()] == [good.key] and store.damaged() == []


def test_a_corrupt_array_file_is_recomputed_on_request(tmp_path, echo):
    store = RunStore(tmp_path)
    scene = tiny_scene(0)
    first = run_method(scene, echo, [0, 1], store=store, evaluate=False)
    path = store.run_dir("tiny", echo, first.key) / "reconstruction.npz"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = b"\0" * 64  # the zip directory survives, the array does not
    path.write_bytes(bytes(data))
    assert [d.key for d in store.damaged(deep=True)] == [first.key]
    again = run_method(scene, echo, [0, 1], store=store, evaluate=False)
    assert not again.cached and Echo.calls == 2
    np.testing.assert_array_equal(store.load("tiny", echo, first.key).points, first.recon.points)


def test_staging_leftovers_are_cleaned_only_when_old(tmp_path):
    store = RunStore(tmp_path)
    old = tmp_path / "runs" / "tiny" / "echo" / ".tmp-abc-1234"
    young = tmp_path / "runs" / "tiny" / "echo" / ".tmp-def-5678"
    half_file = tmp_path / "scenes" / "s" / ".scene.json.x1.tmp"
    for folder in (old, young):
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text("{}")
    half_file.parent.mkdir(parents=True)
    half_file.write_text("{")
    past = time.time() - 7200
    os.utime(old, (past, past))
    os.utime(half_file, (past, past))
    removed = store.clean_staging()
    assert sorted(removed) == sorted([old, half_file])
    assert young.is_dir() and not old.exists() and not half_file.exists()


def test_legacy_runs_are_adopted_only_when_their_key_proves_their_inputs(tmp_path, echo):
    from core.store.migrate import adopt_legacy_runs

    store = RunStore(tmp_path)
    scene = tiny_scene(0)
    options = opts.as_dict(EchoOptions())
    legacy = Reconstruction(method=echo, points=scene.gt_points, view_ids=[0, 1], options=options)
    old_key = run_key(echo, "1", options, [0, 1], [scene.images[0], scene.images[1]])  # the format before
    store.save("tiny", old_key, legacy)
    stranger = Reconstruction(method=echo, points=scene.gt_points, view_ids=[0, 2], options=options)
    store.save("tiny", "0" * 20, stranger)                     # a key that is not its inputs' key

    (adopted, refused) = sorted(adopt_legacy_runs(store, scene), key=lambda a: a.new_key is None)
    assert adopted.old_key == old_key and refused.old_key == "0" * 20 and refused.new_key is None
    again = run_method(scene, echo, [0, 1], store=store, evaluate=False)
    assert again.cached and again.key == adopted.new_key and Echo.calls == 0
    assert {r.key: r.gt_version for r in store.runs("tiny")} == {
        adopted.new_key: ground_truth_fingerprint(scene)[:12], "0" * 20: UNKNOWN}
