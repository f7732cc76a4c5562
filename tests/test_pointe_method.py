"""Point-E as a ReconBench method: random-tiny end to end on a small synthetic scene."""
from __future__ import annotations

import numpy as np
import pytest

from core import options as opts
from core.errors import OptionError, UserError
from core.models import weights
from core.models.pointe import checkpoints
from core.models.pointe.method import METHOD, PointEInputError, PointEOptions, object_image
from core.models.pointe.modeling_pointe import MULTIVIEW_MODES
from core.models.registry import CannotRun
from core.progress import Progress, Stopped
from core.data.scene import Scene
from core.runner import RANDOM_NOTE, execute


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


def _options(**values) -> dict:
    return {"weights": "random-tiny", "karras_steps": 2, "device": "cpu", **values}


def _run(scene: Scene, views: list[int], progress: Progress | None = None, **values):
    return execute(METHOD, scene, views, _options(**values), progress)


def test_method_declaration():
    assert METHOD.name == "pointe" and METHOD.family == "generative"
    specs = {spec.name: spec for spec in opts.specs(PointEOptions)}
    assert {"weights", "checkpoint_path", "upsample_checkpoint_path", "clip_checkpoint_path",
            "karras_steps", "guidance_scale", "seed", "multiview", "use_object_mask",
            "device"} == set(specs)
    assert specs["multiview"].choices == MULTIVIEW_MODES
    assert specs["weights"].choices == ("pretrained", "random-tiny")
    defaults = PointEOptions()
    assert (defaults.weights, defaults.karras_steps, defaults.guidance_scale) == ("pretrained", 64, 3.0)
    assert METHOD.availability(METHOD.parse_options(_options())).ok
    assert METHOD.checkpoints(METHOD.parse_options(_options())) == ()
    assert METHOD.weights_kind(PointEOptions()) == "pretrained"
    assert METHOD.licences(PointEOptions()) == ["pointe-base40M: MIT", "pointe-upsample: MIT",
                                                "clip-vit-large-patch14: MIT"]


def test_random_tiny_single_view():
    scene = _scene(1)
    result = _run(scene, [0])
    assert result.points.shape == (4096, 3) and result.points.dtype == np.float32
    assert result.colors.shape == (4096, 3) and result.colors.dtype == np.uint8
    assert np.isfinite(result.points).all()
    assert (result.source_view == 0).all() and result.view_ids == [0]
    assert result.notes[0] == RANDOM_NOTE and result.weights_kind == "random-tiny"
    assert any("object-centred frame" in note for note in result.notes)
    assert any("object cropped" in note for note in result.notes)
    model = checkpoints.random_tiny(0, "cpu", published_points=True)
    assert result.parameter_count == sum(p.numel() for p in model.parameters())
    assert result.parameter_count == sum(result.extra["parameter_counts"].values())
    assert result.seconds > 0 and result.device == "cpu" and result.cam_from_world is None
    assert result.method == "pointe" and result.options["karras_steps"] == 2
    assert "licences" not in result.extra and result.extra["model_load_seconds"] >= 0
    # same seed -> same cloud; another seed -> another cloud
    again = _run(scene, [0])
    other = _run(scene, [0], seed=1)
    assert np.array_equal(result.points, again.points)
    assert not np.allclose(result.points, other.points)


def test_multiview_modes():
    scene = _scene(2)
    fused = _run(scene, [0, 1], multiview="fuse-samples")
    assert fused.points.shape == (8192, 3)
    assert fused.source_view.tolist() == [0] * 4096 + [1] * 4096
    assert any("fuse-samples" in note for note in fused.notes)
    average = _run(scene, [0, 1], multiview="average-conditioning")
    concat = _run(scene, [0, 1], multiview="concat-conditioning")
    for result, word in ((average, "mean of"), (concat, "concatenated")):
        assert result.points.shape == (4096, 3) and (result.source_view == -1).all()
        assert any(word in note for note in result.notes)
    assert not np.allclose(average.points, concat.points)


def test_object_mask_changes_the_input():
    scene = _scene(1)
    masked = _run(scene, [0], use_object_mask=True)
    full = _run(scene, [0], use_object_mask=False)
    assert any("full images" in note for note in full.notes)
    assert not np.allclose(masked.points, full.points)
    no_masks = _run(_scene(1, with_masks=False), [0])
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
    with pytest.raises(OptionError, match="unknown multiview 'vote' .*fuse-samples, average-conditioning"):
        _run(scene, [0], multiview="vote")
    with pytest.raises(OptionError, match="karras_steps must be in \\[1, 256\\]"):
        _run(scene, [0], karras_steps=0)
    with pytest.raises(UserError, match="view ids must be in 0..0; got \\[3\\]"):
        _run(scene, [3])
    with pytest.raises(UserError, match="at least 1"):
        _run(scene, [])
    with pytest.raises(OptionError, match="unknown option"):
        METHOD.parse_options({"steps": 3})
    steps = []

    def stop_at_the_third_message(fraction, message):
        steps.append(message)
        if len(steps) == 3:
            progress.request_stop()

    progress = Progress(stop_at_the_third_message)
    with pytest.raises(Stopped):
        _run(scene, [0], progress)
    assert len(steps) == 3 and "Karras step" in steps[-1]


def test_pretrained_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(weights, "_hf_cached", lambda checkpoint: None)
    availability = METHOD.availability(METHOD.parse_options({}))
    assert not availability.ok
    assert "base_40m.pt" in availability.missing
    assert availability.fix_command == ("python -m core weights fetch pointe-base40M pointe-upsample "
                                         "clip-vit-large-patch14")  # every missing file, one command
    with pytest.raises(CannotRun, match="base_40m.pt"):
        execute(METHOD, _scene(1), [0], {"device": "cpu"})
    with pytest.raises(CannotRun, match="x.pt does not exist"):
        execute(METHOD, _scene(1), [0], {"device": "cpu", "checkpoint_path": str(tmp_path / "x.pt")})
    registered = weights.registered()
    assert registered["pointe-base40M"].url == "https://openaipublic.azureedge.net/main/point-e/base_40m.pt"
    assert registered["pointe-upsample"].url == "https://openaipublic.azureedge.net/main/point-e/upsample_40m.pt"
    assert registered["clip-vit-large-patch14"].repo_id == "openai/clip-vit-large-patch14"
    # only the CLIP file missing: the message names it
    (tmp_path / "base_40m.pt").write_bytes(b"x")
    (tmp_path / "upsample_40m.pt").write_bytes(b"x")
    availability = METHOD.availability(METHOD.parse_options({}))
    assert "model.safetensors" in availability.missing
    assert availability.fix_command == "python -m core weights fetch clip-vit-large-patch14"
    # each explicit path stands for its own checkpoint: a CLIP file given explicitly makes the
    # set complete; a missing upsample path is reported as the upsample checkpoint
    clip = tmp_path / "elsewhere" / "clip.safetensors"
    clip.parent.mkdir()
    clip.write_bytes(b"x")
    assert METHOD.availability(METHOD.parse_options({"clip_checkpoint_path": str(clip)})).ok
    availability = METHOD.availability(METHOD.parse_options({
        "clip_checkpoint_path": str(clip), "upsample_checkpoint_path": str(tmp_path / "up.pt")}))
    assert not availability.ok and "up.pt does not exist" in availability.missing
    assert availability.fix_command == "python -m core weights fetch pointe-upsample"


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
    with pytest.raises(PointEInputError, match="view 0 has an empty object mask"):
        _run(empty, [0])
    tiny = Scene(name="dot", images=[np.full((1, 1, 3), 200, np.uint8)], image_names=["dot.png"],
                 intrinsics=scene.intrinsics, cam_from_world=scene.cam_from_world)
    with pytest.raises(PointEInputError, match="view 0 is 1x1 pixels"):
        _run(tiny, [0])
    assert issubclass(PointEInputError, UserError)
    store = RunStore(tmp_path)
    progress = Progress(lambda fraction, message: progress.request_stop() if "CLIP" in message else None)
    with pytest.raises(Stopped):
        run_method(scene, "pointe", [0], _options(), progress, store)
    assert store.runs("disc") == [] and [p for p in tmp_path.rglob("*") if p.is_file()] == []
