"""3D-LMNet as a method: shipped checkpoints, evaluation numbers, the app's helpers, bad input."""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.models import weights
from core.models.lmnet import inference, read_training_log, shipped_evaluation, training_curves
from core.models.lmnet.method import run_on_image
from core.models.lmnet import cli as lm_cli
from core.models.lmnet.data import list_models, load_rendering
from core.models.lmnet.evaluate import EvalOptions, evaluate
from core.models.lmnet.inference import LMNetInputError
from core.models.lmnet.method import METHOD, LMNetOptions
from core.data.scene import Reconstruction, Scene
from core.errors import OptionError, UserError
from core.runner import RANDOM_NOTE, execute, key_for, leaderboard
from core.store.cache import RunStore

SUBSET = Path(__file__).parent / "fixtures" / "lmnet_subset"
ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "lmnet"


def _test_image() -> tuple[np.ndarray, np.ndarray]:
    """A held-out procedural test render (RGB on white) and its ground-truth cloud."""
    entry = list_models(SUBSET, "test")[0]
    return load_rendering(entry.rendering(3)), entry.points()


def test_shipped_checkpoints_files_and_size():
    total = 0
    for variant in ("original", "dgcnn"):
        folder = SHIPPED / variant
        for name in ("model.safetensors", "config.json", "train_log.csv", "run.json"):
            assert (folder / name).is_file(), f"{variant}/{name}"
        total += sum(f.stat().st_size for f in folder.iterdir())
        config = json.loads((folder / "config.json").read_text())
        assert config["point_encoder"] == {"original": "pointnet", "dgcnn": "dgcnn"}[variant]
        curves = training_curves(variant)
        assert curves["stage"][0] == "ae" and curves["stage"][-1] == "latent"
        assert curves["step"] == sorted(curves["step"])
        val = [v for v in curves["val_chamfer"] if np.isfinite(v)]
        assert len(val) >= 2
    assert total <= 25 * 2 ** 20
    table = shipped_evaluation()            # the README table, from `python -m core lmnet evaluate`
    assert table["count"] == 80 and table["protocol"]["points"] == 1024
    for name in ("original", "dgcnn"):
        assert table["overall"][name]["chamfer"] < table["overall"]["mean shape"]["chamfer"]


def test_evaluate_reproduces_expected_numbers_and_beats_mean_shape():
    expected = json.loads((SUBSET / "expected.json").read_text())["overall"]
    models = {v: inference.load_run(SHIPPED / v) for v in ("original", "dgcnn")}
    result = evaluate(models, SUBSET, "test", EvalOptions(views=(3,)))
    for name, scores in expected.items():
        for metric, value in scores.items():
            assert result["overall"][name][metric] == pytest.approx(value, rel=0.02, abs=1e-3), (name, metric)
    for name in ("original", "dgcnn"):
        assert result["overall"][name]["chamfer"] < result["overall"]["mean shape"]["chamfer"]


def test_cli_evaluate_on_subset(capsys):
    parser = argparse.ArgumentParser()
    lm_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["lmnet", "evaluate", "--data", str(SUBSET), "--run", str(SHIPPED / "original"),
                              "--views", "3", "--max-shapes", "2", "--no-baseline"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["count"] == 2 and set(out["overall"]) == {"original"}
    assert out["protocol"]["points"] == 1024 and out["protocol"]["icp"] is True


@pytest.mark.parametrize("variant", ["original", "dgcnn"])
def test_shipped_model_runs_on_held_out_image(variant):
    image, gt = _test_image()
    points = run_on_image(image, variant=variant)
    assert points.shape == (2048, 3) and points.dtype == np.float32 and np.isfinite(points).all()
    extent = points.max(0) - points.min(0)
    assert 0.5 < extent.max() < 1.5          # the canonical unit-box frame


def test_method_run_on_scene_view_with_mask():
    image, _ = _test_image()
    big = np.full((300, 400, 3), 255, np.uint8)
    big[80:217, 130:267] = image                       # the object somewhere in a larger photo
    mask = (big < 235).any(axis=2)
    big[~mask] = [30, 120, 40]                          # cluttered background: only the mask tells
    k = np.array([[300.0, 0, 200], [0, 300, 150], [0, 0, 1]])
    scene = Scene(name="t", images=[big, big], image_names=["a.png", "b.png"], intrinsics=np.stack([k, k]),
                  cam_from_world=np.stack([np.eye(4)] * 2), masks=np.stack([mask, mask]))
    recon = execute(METHOD, scene, [1], {})
    assert recon.points.shape == (2048, 3) and recon.view_ids == [1]
    assert any("object-centred" in n for n in recon.notes) and RANDOM_NOTE not in recon.notes
    assert recon.weights_kind == "trained-here" and recon.options == {
        "variant": "original", "weights": "shipped", "checkpoint_path": "", "use_object_mask": True}
    model = inference.load_run(SHIPPED / "original")
    assert recon.parameter_count == sum(p.numel() for p in model.parameters()) > 1_000_000
    direct = run_on_image(big, mask=mask)
    assert np.allclose(recon.points, direct)
    tiny = execute(METHOD, scene, [0], {"weights": "random-tiny"})
    assert tiny.points.shape == (256, 3) and tiny.notes[0] == RANDOM_NOTE
    assert tiny.weights_kind == "random-tiny"
    assert METHOD.family == "generative" and METHOD.max_views == 1
    with pytest.raises(UserError, match="at most 1 view"):
        execute(METHOD, scene, [0, 1], {})
    with pytest.raises(OptionError, match="unknown weights 'pretrained' .*shipped, random-tiny"):
        execute(METHOD, scene, [0], {"weights": "pretrained"})
    empty = Scene(name="t", images=[big], image_names=["a.png"], intrinsics=k[None],
                  cam_from_world=np.eye(4)[None], masks=np.zeros((1, 300, 400), bool))
    with pytest.raises(LMNetInputError, match="no object found"):
        execute(METHOD, empty, [0], {})


def test_committed_runs_still_load_and_are_listed():
    """The sample runs in cache/runs/toy/lmnet were stored with weights "shipped": their keys
    are still what the method computes for their options and views, and they load as
    trained-here runs that the leaderboard lists."""
    store = RunStore(ROOT / "cache")
    records = [r for r in store.runs("toy") if r.method == "lmnet"]
    assert len(records) >= 2 and {r.meta["options"]["variant"] for r in records} == {"original", "dgcnn"}
    scene = Scene.load(ROOT / "sample_data" / "toy")
    for record in records:
        options = METHOD.parse_options(record.meta["options"])
        assert options.weights == "shipped"
        assert key_for(scene, METHOD, record.meta["view_ids"], options) == record.key
        recon = record.load()
        assert isinstance(recon, Reconstruction) and recon.points.shape == (2048, 3)
        assert recon.weights_kind == "trained-here" == METHOD.weights_kind(options)
    rows = [row for row in leaderboard(store, "toy") if row["method"] == "lmnet"]
    assert sorted(row["key"] for row in rows) == sorted(r.key for r in records)
    assert all(row["weights"] == "trained-here" for row in rows)


def test_bad_inputs_have_clear_messages(tmp_path):
    assert issubclass(LMNetInputError, UserError)
    with pytest.raises(LMNetInputError, match="not an image"):
        run_on_image(b"%PDF-1.4 this is not a picture")
    with pytest.raises(LMNetInputError, match="no object found"):
        run_on_image(np.full((137, 137, 3), 255, np.uint8))
    image, _ = _test_image()
    with pytest.raises(LMNetInputError, match="no object found"):
        run_on_image(image, mask=np.zeros(image.shape[:2], bool))
    with pytest.raises(LMNetInputError, match="HxWx3"):
        run_on_image(np.zeros((5, 137, 137), np.uint8))
    # PNG bytes of a real render work like the array
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    assert np.allclose(run_on_image(buffer.getvalue()), run_on_image(image))
    # the other variant's checkpoint: the error names the tensors
    with pytest.raises(weights.BadCheckpoint, match=r"point_encoder\.(layers|edge_convs)"):
        inference.build_model("original", "shipped", str(SHIPPED / "dgcnn" / "model.safetensors"))
    with pytest.raises(weights.MissingWeights, match="does not exist"):
        inference.build_model("original", "shipped", str(tmp_path / "none.safetensors"))
    missing = METHOD.availability(METHOD.parse_options({"checkpoint_path": str(tmp_path / "x")}))
    assert not missing.ok and str(tmp_path / "x") in missing.missing
    assert missing.fix_command.startswith("python -m core lmnet train")
    assert METHOD.availability(METHOD.parse_options({})).ok
    assert METHOD.availability(METHOD.parse_options({"variant": "dgcnn"})).ok
    assert METHOD.checkpoints(METHOD.parse_options({})) == () and METHOD.licences(LMNetOptions()) == []


def test_read_training_log(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("stage,step,loss,val_loss,val_chamfer,lr,seconds\nae,10,0.5,,0.1,0.001,3.5\n")
    log = read_training_log(path)
    assert log["step"] == [10] and log["loss"] == [0.5] and np.isnan(log["val_loss"][0])
    with pytest.raises(FileNotFoundError):
        read_training_log(tmp_path / "missing.csv")
