"""Point-E as a ReconBench method: random-tiny end to end on a small synthetic scene."""
from __future__ import annotations

import numpy as np
import pytest

from core.models import weights
from core.models.pointe import method as pointe_method
from core.models.pointe.method import METHOD, PointEOptions, object_image
from core.models.registry import option_specs, options_from_dict
from core.progress import Progress, Stopped
from core.data.scene import Scene


pytestmark = pytest.mark.usefixtures("one_thread")


def _scene(views: int = 2, with_masks: bool = True) -> Scene:
    """A red disc on a grey background, seen in ``views`` slightly shifted images."""
    h, w = 72, 96
    images, masks = [], []
    yy, xx = np.mgrid[0:h, 0:w]
    for v in range(views):
        mask = (yy - 36) ** 2 + (xx - 40 - 6 * v) ** 2 < 18 ** 2
        image = np.full((h, w, 3), 90, np.uint8)
        image[mask] = (220, 30, 30 + 40 * v)
        images.append(image)
        masks.append(mask)
    k = np.array([[80.0, 0, w / 2], [0, 80.0, h / 2], [0, 0, 1]])
    poses = np.stack([np.eye(4)] * views)
    poses[:, 0, 3] = np.arange(views) * 0.1
    return Scene(name="disc", images=images, image_names=[f"{v}.png" for v in range(views)],
                 intrinsics=np.stack([k] * views), cam_from_world=poses,
                 masks=np.stack(masks) if with_masks else None)


def _options(**values) -> PointEOptions:
    return PointEOptions(**{"weights": "random-tiny", "karras_steps": 2, "device": "cpu", **values})


def test_method_declaration():
    assert METHOD.name == "pointe" and METHOD.family == "generative"
    names = {spec["name"] for spec in option_specs(PointEOptions)}
    assert {"weights", "checkpoint_path", "karras_steps", "guidance_scale", "seed", "multiview",
            "use_object_mask", "device"} <= names
    defaults = PointEOptions()
    assert (defaults.weights, defaults.karras_steps, defaults.guidance_scale) == ("pretrained", 64, 3.0)
    assert METHOD.availability(_options()).ok


def test_random_tiny_single_view():
    scene = _scene(1)
    result = METHOD.run(scene, [0], _options(), None)
    assert result.points.shape == (4096, 3) and result.points.dtype == np.float32
    assert result.colors.shape == (4096, 3) and result.colors.dtype == np.uint8
    assert np.isfinite(result.points).all()
    assert (result.source_view == 0).all() and result.view_ids == [0]
    assert result.notes[0] == "random weights: the geometry and scores are meaningless"
    assert any("object-centred frame" in note for note in result.notes)
    assert any("object cropped" in note for note in result.notes)
    model = pointe_method.load_model("random-tiny", "", "", "", "cpu")
    assert result.parameter_count == sum(p.numel() for p in model.parameters())
    assert result.seconds > 0 and result.device == "cpu" and result.cam_from_world is None
    # same seed -> same cloud; another seed -> another cloud
    again = METHOD.run(scene, [0], _options(), None)
    other = METHOD.run(scene, [0], _options(seed=1), None)
    assert np.array_equal(result.points, again.points)
    assert not np.allclose(result.points, other.points)


def test_multiview_modes():
    scene = _scene(2)
    fused = METHOD.run(scene, [0, 1], _options(multiview="fuse-samples"), None)
    assert fused.points.shape == (8192, 3)
    assert fused.source_view.tolist() == [0] * 4096 + [1] * 4096
    assert any("fuse-samples" in note for note in fused.notes)
    average = METHOD.run(scene, [0, 1], _options(multiview="average-conditioning"), None)
    concat = METHOD.run(scene, [0, 1], _options(multiview="concat-conditioning"), None)
    for result, word in ((average, "mean of"), (concat, "concatenated")):
        assert result.points.shape == (4096, 3) and (result.source_view == -1).all()
        assert any(word in note for note in result.notes)
    assert not np.allclose(average.points, concat.points)


def test_object_mask_changes_the_input():
    scene = _scene(1)
    masked = METHOD.run(scene, [0], _options(use_object_mask=True), None)
    full = METHOD.run(scene, [0], _options(use_object_mask=False), None)
    assert any("full images" in note for note in full.notes)
    assert not np.allclose(masked.points, full.points)
    no_masks = METHOD.run(_scene(1, with_masks=False), [0], _options(), None)
    assert any("no object masks" in note for note in no_masks.notes)


def test_object_image_crop():
    image = np.zeros((40, 60, 3), np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:20, 30:50] = True
    image[mask] = 7
    out = object_image(image, mask, margin=0.1)
    assert out.shape == (24, 24, 3)               # 20 px * 1.2, square
    assert (out[0, 0] == 255).all()               # white background
    assert (out[12, 12] == 7).all()               # object in the centre
    assert ((out == 7).all(axis=-1)).sum() == mask.sum()
    assert object_image(image, None) is image


def test_bad_input_and_stop():
    scene = _scene(1)
    with pytest.raises(ValueError, match="multiview"):
        METHOD.run(scene, [0], _options(multiview="vote"), None)
    with pytest.raises(ValueError, match="out of range"):
        METHOD.run(scene, [3], _options(), None)
    with pytest.raises(ValueError, match="at least 1"):
        METHOD.run(scene, [], _options(), None)
    with pytest.raises(ValueError, match="unknown option"):
        options_from_dict(PointEOptions, {"steps": 3})
    steps = []

    def stop_after_two(fraction, message):
        steps.append(message)
        if len(steps) == 3:
            progress.request_stop()

    progress = Progress(stop_after_two)
    with pytest.raises(Stopped):
        METHOD.run(scene, [0], _options(), progress)
    assert len(steps) == 3


def test_pretrained_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(weights, "_hf_cached", lambda checkpoint: None)
    availability = METHOD.availability(PointEOptions())
    assert not availability.ok
    assert "base_40m.pt" in availability.missing
    assert availability.fix_command == "python -m core weights fetch pointe-base40M"
    with pytest.raises(weights.MissingWeights, match="base_40m.pt"):
        METHOD.run(_scene(1), [0], PointEOptions(device="cpu"), None)
    with pytest.raises(weights.MissingWeights, match="does not exist"):
        METHOD.run(_scene(1), [0], PointEOptions(device="cpu", checkpoint_path=str(tmp_path / "x.pt")), None)
    registered = weights.registered()
    assert registered["pointe-base40M"].url == "https://openaipublic.azureedge.net/main/point-e/base_40m.pt"
    assert registered["pointe-upsample"].url == "https://openaipublic.azureedge.net/main/point-e/upsample_40m.pt"
    assert registered["clip-vit-large-patch14"].repo_id == "openai/clip-vit-large-patch14"
    # only the CLIP file missing: the message names it
    (tmp_path / "base_40m.pt").write_bytes(b"x")
    (tmp_path / "upsample_40m.pt").write_bytes(b"x")
    availability = METHOD.availability(PointEOptions())
    assert "model.safetensors" in availability.missing
    assert availability.fix_command == "python -m core weights fetch clip-vit-large-patch14"


def test_load_checkpoint_files(tmp_path):
    """Checkpoint files in the published formats load by name; a wrong file is named."""
    import torch
    from safetensors.torch import save_file

    from core.models.pointe.checkpoints import load_pretrained
    from core.models.pointe.config import PointEConfig
    from core.models.pointe.modeling_pointe import build_random

    config = PointEConfig.tiny()
    source = build_random(config, seed=3)
    torch.save(source.base.state_dict(), tmp_path / "base_40m.pt")
    torch.save(source.upsampler.state_dict(), tmp_path / "upsample_40m.pt")
    clip_state = dict(source.clip.model.state_dict())
    clip_state["text_model.embeddings.token_embedding.weight"] = torch.zeros(3, 2)  # full CLIPModel file
    save_file({k: v.contiguous() for k, v in clip_state.items()}, str(tmp_path / "model.safetensors"))
    loaded = load_pretrained(tmp_path / "base_40m.pt", tmp_path / "upsample_40m.pt",
                             tmp_path / "model.safetensors", config=config)
    for a, b in zip(source.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(weights.BadCheckpoint, match="unexpected .*cond_point_proj"):
        load_pretrained(tmp_path / "upsample_40m.pt", tmp_path / "upsample_40m.pt",
                        tmp_path / "model.safetensors", config=config)


def test_no_object_tiny_image_and_stopped_runs_leave_the_cache_empty(tmp_path):
    from core.store.cache import RunStore
    from core.runner import run_method

    scene = _scene(1)
    empty = Scene(name="disc", images=scene.images, image_names=scene.image_names, intrinsics=scene.intrinsics,
                  cam_from_world=scene.cam_from_world, masks=np.zeros_like(scene.masks))
    with pytest.raises(ValueError, match="empty object mask"):
        METHOD.run(empty, [0], _options(), None)
    tiny = Scene(name="dot", images=[np.full((1, 1, 3), 200, np.uint8)], image_names=["dot.png"],
                 intrinsics=scene.intrinsics, cam_from_world=scene.cam_from_world)
    with pytest.raises(ValueError, match="1x1 pixels"):
        METHOD.run(tiny, [0], _options(), None)
    store = RunStore(tmp_path)
    progress = Progress(lambda fraction, message: progress.request_stop() if "CLIP" in message else None)
    with pytest.raises(Stopped):
        run_method(scene, "pointe", [0], _options(), progress, store)
    assert store.runs("disc") == [] and [p for p in tmp_path.rglob("*") if p.is_file()] == []
