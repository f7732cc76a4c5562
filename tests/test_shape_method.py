"""Shap-E as a ReconBench method: random-tiny end to end (text and image mode), bad input,
stop, checkpoints, run labels, CLI and the tiny benchmark."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core import options as opts
from core.data.scene import Scene
from core.errors import OptionError, UserError
from core.models import registry, weights
from core.models.shape import checkpoints
from core.models.shape.method import METHOD, ShapEInputError, ShapEOptions
from core.models.shape.tokens import PromptError
from core.progress import Progress, Stopped
from core.runner import execute, run_method
from core.store.cache import RunStore

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"weights": "random-tiny", "karras_steps": 2, "grid_size": 16, "render_size": 16,
         "render_views": 2, "num_points": 300, "device": "cpu"}


def _scene(size: int = 48, with_masks: bool = True, empty_mask: bool = False) -> Scene:
    """A red disc on grey, one view."""
    yy, xx = np.mgrid[0:size, 0:size]
    mask = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2
    image = np.full((size, size, 3), 90, np.uint8)
    image[mask] = (220, 30, 30)
    if empty_mask:
        mask[:] = False
    k = np.array([[60.0, 0, size / 2], [0, 60.0, size / 2], [0, 0, 1]])
    return Scene(name="disc", images=[image], image_names=["0.png"], intrinsics=k[None],
                 cam_from_world=np.eye(4)[None], masks=mask[None] if with_masks else None)


def test_declaration_and_label():
    assert METHOD.name == "shape" and METHOD.family == "generative" and "shape" in registry.names("generative")
    assert METHOD.label_options == ("mode", "prompt")
    specs = {spec.name: spec for spec in opts.specs(ShapEOptions)}
    assert specs["mode"].choices == ("text", "image")
    assert specs["weights"].choices == ("pretrained", "random-tiny", "random-full")
    defaults = ShapEOptions()
    assert (defaults.karras_steps, defaults.text_guidance, defaults.image_guidance) == (64, 15.0, 3.0)
    text = METHOD.parse_options({"mode": "text"})
    assert [c.filename for c in METHOD.checkpoints(text)] == [
        "text_cond.pt", "vector_decoder.pt", "model.safetensors", "vocab.json", "merges.txt"]
    image = METHOD.parse_options({"mode": "image"})
    assert [c.filename for c in METHOD.checkpoints(image)] == ["image_cond.pt", "vector_decoder.pt",
                                                               "model.safetensors"]
    assert all(c.url.startswith("https://openaipublic.azureedge.net/main/shap-e/")
               for c in METHOD.checkpoints(image)[:2])
    assert METHOD.checkpoints(METHOD.parse_options(SMALL)) == ()
    label = registry.run_label("shape", {"options": {"mode": "text", "prompt": "a plush toy"},
                                         "weights_kind": "random-tiny"})
    assert label == "Shap-E · text · a plush toy · random-tiny"
    for key in ("shape-text300M", "shape-image300M", "shape-decoder"):
        assert key in weights.registered()


def test_text_mode_end_to_end_with_progress():
    messages: list[tuple[float, str]] = []
    recon = execute(METHOD, _scene(), [0], {**SMALL, "prompt": "a plush toy"},
                    Progress(lambda f, m: messages.append((f, m))))
    calls = [m for _, m in messages if "denoiser call" in m]
    assert [m.split("call ")[1].split(",")[0] for m in calls] == ["1/3", "2/3", "3/3"]
    assert all("ETA" in m for m in calls)
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions)
    assert recon.weights_kind == "random-tiny" and any("random weights" in n for n in recon.notes)
    assert recon.points.shape == (300, 3) and recon.colors.dtype == np.uint8
    assert recon.mesh_faces.shape[1] == 3 and len(recon.mesh_colors) == len(recon.mesh_vertices)
    assert np.abs(recon.mesh_vertices).max() <= 1.0
    assert recon.renders.shape == (2, 16, 16, 3) and recon.renders.dtype == np.uint8
    assert recon.extra["prompt"] == "a plush toy" and recon.extra["denoiser_calls"] == 3
    # the points lie on the mesh's triangles (sampled from it)
    tri = recon.mesh_vertices[recon.mesh_faces]
    lo, hi = tri.min(axis=(0, 1)), tri.max(axis=(0, 1))
    assert ((recon.points >= lo - 1e-6) & (recon.points <= hi + 1e-6)).all()


def test_same_options_same_result_and_the_prompt_matters():
    scene = _scene()
    a = execute(METHOD, scene, [0], {**SMALL, "prompt": "a cat", "render_views": 0})
    b = execute(METHOD, scene, [0], {**SMALL, "prompt": "a cat", "render_views": 0})
    c = execute(METHOD, scene, [0], {**SMALL, "prompt": "a dog", "render_views": 0})
    assert np.array_equal(a.mesh_vertices, b.mesh_vertices) and np.array_equal(a.points, b.points)
    assert a.renders is None
    assert len(a.mesh_vertices) != len(c.mesh_vertices) or not np.allclose(a.mesh_vertices, c.mesh_vertices)


def test_image_mode_end_to_end():
    recon = execute(METHOD, _scene(), [0], {**SMALL, "mode": "image", "render_mode": "nerf"})
    assert recon.renders.shape == (2, 16, 16, 3)
    assert recon.extra["mode"] == "image" and recon.extra["prompt"] == ""
    assert any("image mode: view 0" in n for n in recon.notes)
    assert recon.points.shape == (300, 3)


@pytest.mark.parametrize("values, error, message", [
    ({"prompt": "  "}, OptionError, "empty"),  # refused with the options, before queueing or loading
    ({"prompt": "ab " * 40}, PromptError, "80 character tokens"),
    ({"mode": "image"}, ShapEInputError, "empty object mask"),
])
def test_bad_input_stores_nothing(tmp_path, values, error, message):
    store = RunStore(tmp_path)
    with pytest.raises(error, match=message):
        run_method(_scene(empty_mask=True), "shape", [0], {**SMALL, **values}, store=store)
    assert issubclass(error, UserError)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_picture_under_one_patch(tmp_path):
    with pytest.raises(ShapEInputError, match="under one CLIP patch"):
        execute(METHOD, _scene(size=10, with_masks=False), [0], {**SMALL, "mode": "image"})


def test_stop_stores_nothing(tmp_path):
    store = RunStore(tmp_path)
    progress = Progress(lambda f, m: progress.request_stop() if "denoiser call 1/" in m else None)
    with pytest.raises(Stopped):
        run_method(_scene(), "shape", [0], SMALL, progress, store)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_cached_run_carries_the_prompt(tmp_path):
    store = RunStore(tmp_path)
    first = run_method(_scene(), "shape", [0], {**SMALL, "prompt": "a red ball", "render_views": 0},
                       store=store, evaluate=False)
    again = run_method(_scene(), "shape", [0], {**SMALL, "prompt": "a red ball", "render_views": 0},
                       store=store, evaluate=False)
    other = run_method(_scene(), "shape", [0], {**SMALL, "prompt": "a blue ball", "render_views": 0},
                       store=store, evaluate=False)
    assert again.cached and not first.cached and not other.cached
    assert other.key != first.key
    records = {r.key: r for r in store.runs("disc")}
    assert set(records) == {first.key, other.key}
    meta = records[first.key].meta
    assert meta["options"]["prompt"] == "a red ball"
    assert registry.run_label("shape", meta).startswith("Shap-E · text · a red ball")


def test_checkpoint_sha256_and_tensors(tmp_path):
    fake = tmp_path / "image_cond.pt"
    torch.save({"wrapped.bogus": torch.zeros(2)}, fake)
    with pytest.raises(weights.BadCheckpoint, match="SHA-256"):
        checkpoints.verify_sha256(fake, checkpoints.SHA256["image_cond.pt"])
    checkpoints.verify_sha256(fake, checkpoints.sha256_of(fake))   # its own hash passes
    model = checkpoints.random_tiny("image")
    with pytest.raises(weights.BadCheckpoint, match="does not fit"):
        checkpoints._load_module(model.image_model, fake, checkpoints.sha256_of(fake))
    # through the method: explicit files that are not the published ones, nothing stored
    for name in ("vector_decoder.pt", "clip.safetensors"):
        (tmp_path / name).write_bytes(b"not a checkpoint")
    store = RunStore(tmp_path / "cache")
    with pytest.raises(weights.BadCheckpoint, match="SHA-256"):
        run_method(_scene(), "shape", [0], {
            "weights": "pretrained", "mode": "image", "device": "cpu",
            "latent_checkpoint_path": str(fake), "decoder_checkpoint_path": str(tmp_path / "vector_decoder.pt"),
            "clip_checkpoint_path": str(tmp_path / "clip.safetensors")}, store=store)
    assert not (tmp_path / "cache").exists() or [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_random_full_path_and_the_transmitter_decode_path(tmp_path):
    """random_full fills every tensor (no NaN from the uninitialised build); a decoder saved as
    transmitter.pt names (encoder.params_proj.*, renderer.*, plus encoder tensors) loads."""
    from core.models.shape.config import ShapEConfig
    model = checkpoints.random_full("text", 0, "cpu", ShapEConfig.tiny())
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())
    state = {("encoder." + k if k.startswith("params_proj.") else k): v
             for k, v in model.decoder.state_dict().items()}
    state["encoder.other.weight"] = torch.zeros(3)
    path = tmp_path / "transmitter.pt"
    torch.save(state, path)
    other = checkpoints.random_tiny("text", seed=1)
    checkpoints._load_module(other.decoder, path, None, strip_prefix="encoder.")
    for name, tensor in model.decoder.state_dict().items():
        assert torch.equal(other.decoder.state_dict()[name], tensor), name


def test_cli_text_mode(tmp_path, monkeypatch, capsys):
    from core.__main__ import main
    monkeypatch.setenv("RECONBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("RECONBENCH_EXECUTOR", "inline")
    base = ["run", "shape", "--scene", "sample_data/toy", "--views", "0"]
    base += [f"--option={k}={v}" for k, v in SMALL.items() if k != "device"]
    assert main(base + ["--option", "prompt=a plush toy"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "shape" and out["weights_kind"] == "random-tiny" and not out["cached"]
    assert any("a plush toy" in n for n in out["notes"])
    assert main(base + ["--option", "prompt= "]) == 2
    assert "error:" in capsys.readouterr().err


def test_tiny_benchmark():
    from core.models.shape.bench import bench
    rows = bench(["--size", "tiny", "--mode", "text", "--steps", "1", "--grid-size", "16",
                  "--render-size", "8", "--views", "1"])
    stages = [r["stage"] for r in rows]
    assert stages[:2] == ["text: build", "text: clip"] and "text: one denoiser call" in stages
    sampling = next(r for r in rows if r["stage"] == "text: sampling")
    assert sampling["measured_model_calls"] == 1 and sampling["full_model_calls"] == 127
    assert sampling["seconds_full_steps"] == pytest.approx(sampling["seconds_per_model_call"] * 127)
    assert all(r["gflops_per_s"] > 0 for r in rows if "gflop" in r)


@pytest.mark.parametrize("mode", ["text", "image"])
def test_load_pretrained_reads_the_published_file_layout(tmp_path, mode):
    """Checkpoint files laid out as published (``wrapped.*`` latent model, decoder names, a
    transformers CLIP ``model.safetensors`` holding both towers) load strictly and reproduce the
    model they were saved from."""
    from safetensors.torch import save_file
    from core.models.shape.config import ShapEConfig
    from core.models.shape.modeling_shape import build_random
    config = ShapEConfig.tiny()
    source = build_random(config, seed=4)
    torch.save(source.latent_model(mode).state_dict(), tmp_path / "latent.pt")
    torch.save(source.decoder.state_dict(), tmp_path / "vector_decoder.pt")
    clip = {**{k: v.contiguous() for k, v in source.clip_vision.model.state_dict().items()},
            **{k: v.contiguous() for k, v in source.clip_text.model.state_dict().items()}}
    save_file({k: v for k, v in clip.items() if not k.endswith("position_ids")}, str(tmp_path / "model.safetensors"))
    loaded = checkpoints.load_pretrained(mode, tmp_path / "latent.pt", tmp_path / "vector_decoder.pt",
                                         tmp_path / "model.safetensors", config=config, check_sha256=False)
    for name, tensor in source.state_dict().items():
        if name.startswith(("text_model", "clip_text") if mode == "text" else ("image_model", "clip_vision")) \
                or name.startswith("decoder"):
            assert torch.equal(loaded.state_dict()[name], tensor), name
    with pytest.raises(weights.BadCheckpoint, match="SHA-256"):
        checkpoints.load_pretrained(mode, tmp_path / "latent.pt", tmp_path / "vector_decoder.pt",
                                    tmp_path / "model.safetensors", config=config)
