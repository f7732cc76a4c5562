"""Point-E conformance against the reference fixture (tiny random models, float32 CPU).

Fixture: tests/fixtures/pointe_tiny_reference.safetensors (see /work/shared/fixtures/README.md,
section Point-E) and the full-size state-dict manifests.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from core.models.pointe import (CLIPImageGrid, CLIPImageGridPointDiffusionTransformer,
                                CLIPImageGridUpsamplePointDiffusionTransformer, GaussianDiffusion,
                                GuidedDenoiser, NoiseSource, PointDiffusionTransformerConfig, PointE,
                                PointEConfig, combine_views, heun_step, karras_sigmas,
                                openai_clip_to_transformers, preprocess,
                                samples_to_points)
from core.models.pointe.sampler import heun_gamma
from core.progress import Progress, Stopped
from tests.conftest import load_reference, prefixed

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "pointe_tiny_reference.safetensors"
STAGES = ("base", "upsample")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ref():
    return load_reference(REFERENCE.name)


def _load(ref, attention):
    tensors, metadata = ref
    config = PointEConfig.from_fixture_metadata(metadata, attention=attention)
    pe = PointE(config).eval()
    pe.clip.load_transformers_state_dict(prefixed(tensors, "clip.weights.hf."))
    pe.base.load_state_dict(prefixed(tensors, "base.weights."), strict=True)
    pe.upsampler.load_state_dict(prefixed(tensors, "upsample.weights."), strict=True)
    return pe


@pytest.fixture(scope="module")
def model(ref):
    """The fixture's models with the reference attention order (bit-exact on CPU)."""
    return _load(ref, "reference")


@pytest.fixture(scope="module")
def fast_model(ref):
    """The same weights with the default fused attention kernel (sdpa)."""
    return _load(ref, "sdpa")


def _images(tensors):
    return [tensors["clip.input.image.0"].numpy(), tensors["clip.input.image.1"].numpy()]


def _noise(tensors, stages=STAGES, steps=4):
    draws = []
    for stage in stages:
        draws.append(tensors[f"sampler.{stage}.noise.x_T"])
        draws += [tensors[f"sampler.{stage}.noise.eps.{i}"] for i in range(steps)]
    return draws


# ----------------------------------------------------------------------------- configuration
def test_config_reads_fixture_keys(ref):
    _, metadata = ref
    config = PointEConfig.from_fixture_metadata(metadata)
    assert (config.clip_width, config.base_points, config.up_points) == (64, 64, 128)
    assert config.stage(0)["karras_steps"] == config.stage(1)["karras_steps"] == 4
    base, up = config.base_transformer_config(), config.upsample_transformer_config()
    assert (base.width, base.layers, base.heads, base.n_ctx, base.clip_grid_dim) == (64, 2, 4, 64, 64)
    assert up.is_upsampler and up.cond_ctx == 64 and up.n_ctx == 128
    assert config.stage(0)["sigma_max"] == 120.0 and config.stage(1)["sigma_max"] == 160.0
    assert config.stage(0)["s_churn"] == 3.0 and config.stage(1)["s_churn"] == 0.0
    assert config.clip_vision_config().intermediate_size == 256
    # defaults are the published models and sampler
    default = PointEConfig()
    assert default.num_points == 4096 and default.stage(1)["karras_steps"] == 64
    assert default.stage(0)["guidance_scale"] == default.stage(1)["guidance_scale"] == 3.0
    with pytest.raises(ValueError, match="unknown Point-E transformer config key"):
        PointDiffusionTransformerConfig.from_dict({"widht": 3})


# ----------------------------------------------------------------------------- CLIP
def test_preprocessing_reproduces_reference_pixels(ref):
    tensors, _ = ref
    pixels = preprocess(_images(tensors))
    assert pixels.shape == (2, 3, 224, 224)
    torch.testing.assert_close(pixels, tensors["clip.input.pixel_values"], atol=1e-6, rtol=0)


def test_preprocessing_rejects_non_rgb():
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        preprocess([np.zeros((10, 10), np.uint8)])


def test_clip_grid_and_embed(ref, model):
    tensors, _ = ref
    with torch.no_grad():
        grid, embed = model.clip(tensors["clip.input.pixel_values"])
    assert grid.shape == (2, 64, 256)
    torch.testing.assert_close(grid, tensors["clip.output.grid"], atol=1e-5, rtol=0)
    torch.testing.assert_close(embed, tensors["clip.output.embed"], atol=1e-6, rtol=0)
    # end to end from raw images
    torch.testing.assert_close(model.condition(_images(tensors)), tensors["clip.output.grid"],
                               atol=1e-5, rtol=0)


def test_openai_clip_names_convert_to_transformers(ref):
    tensors, _ = ref
    converted = openai_clip_to_transformers(prefixed(tensors, "clip.weights.openai."))
    expected = prefixed(tensors, "clip.weights.hf.")
    assert set(converted) == set(expected)
    for name, value in expected.items():
        assert torch.equal(converted[name], value), name
    with pytest.raises(ValueError, match="unknown CLIP tensor visual.bogus"):
        openai_clip_to_transformers({"visual.bogus": torch.zeros(1)})


def test_clip_loads_openai_naming_directly(ref, model):
    tensors, _ = ref
    clip = CLIPImageGrid(model.config.clip_vision_config()).eval()
    clip.load_transformers_state_dict(prefixed(tensors, "clip.weights.openai."))
    with torch.no_grad():
        grid, _ = clip(tensors["clip.input.pixel_values"])
    torch.testing.assert_close(grid, tensors["clip.output.grid"], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- transformers
def test_base_forward(ref, model):
    tensors, _ = ref
    with torch.no_grad():
        out = model.base(tensors["base.input.x_t"], tensors["base.input.t"], tensors["clip.output.grid"])
    torch.testing.assert_close(out, tensors["base.output"], atol=1e-5, rtol=0)


def test_upsample_forward(ref, model):
    tensors, _ = ref
    with torch.no_grad():
        out = model.upsampler(tensors["upsample.input.x_t"], tensors["upsample.input.t"],
                              tensors["clip.output.grid"], tensors["upsample.input.low_res"])
    torch.testing.assert_close(out, tensors["upsample.output"], atol=1e-5, rtol=0)
    assert torch.equal(model.upsampler.channel_scales, tensors["upsample.weights.channel_scales"])


@pytest.mark.parametrize("name,cls", [
    ("pointe_base40M_state_dict_manifest.json", CLIPImageGridPointDiffusionTransformer),
    ("pointe_upsample_state_dict_manifest.json", CLIPImageGridUpsamplePointDiffusionTransformer),
])
def test_full_size_models_match_manifest(name, cls):
    manifest = json.loads((FIXTURES / name).read_text())
    tensors = manifest["tensors"]
    if isinstance(tensors, str):
        import ast
        tensors = ast.literal_eval(tensors)
    config = PointDiffusionTransformerConfig.from_dict(manifest["config"])
    with torch.device("meta"):
        module = cls(config)
    state = module.state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == {k: list(v) for k, v in tensors.items()}
    assert sum(p.numel() for p in module.parameters()) == manifest["num_parameters"]
    # and the pipeline's default configuration builds the same modules
    with torch.device("meta"):
        pe = PointE(PointEConfig())
    sub = pe.base if cls is CLIPImageGridPointDiffusionTransformer else pe.upsampler
    assert {k: tuple(v.shape) for k, v in sub.state_dict().items()} == \
        {k: tuple(v) for k, v in tensors.items()}
    assert sum(p.numel() for p in pe.clip.parameters()) == \
        manifest["clip_vit_l14_vision_num_parameters_not_included"]


# ----------------------------------------------------------------------------- diffusion
@pytest.mark.parametrize("stage,schedule", [("base", "cosine"), ("upsample", "linear")])
def test_diffusion_constants(ref, stage, schedule):
    tensors, _ = ref
    diffusion = GaussianDiffusion.from_schedule(schedule, 1024)
    for name, value in diffusion.constants().items():
        expected = tensors[f"diffusion.{stage}.{name}"].numpy()
        assert value.dtype == np.float64 and value.shape == (1024,)
        np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("index,stage", list(enumerate(STAGES)))
def test_karras_sigmas(ref, model, index, stage):
    tensors, _ = ref
    settings = model.config.stage(index)
    sigmas = karras_sigmas(4, settings["sigma_min"], settings["sigma_max"], settings["rho"])
    assert sigmas.dtype == torch.float32
    torch.testing.assert_close(sigmas, tensors[f"sampler.{stage}.sigmas"], atol=0, rtol=1e-6)
    torch.testing.assert_close(tensors[f"sampler.{stage}.noise.x_T"] * settings["sigma_max"],
                               tensors[f"sampler.{stage}.x_T_scaled"], atol=0, rtol=0)


def test_sigma_to_t_edges(model):
    diffusion = model.base_diffusion
    assert diffusion.sigma_to_t(1e-4) == 0
    assert diffusion.sigma_to_t(1e6) == 1023
    # exactly on a grid point: the index itself
    sigma = math.sqrt(1 / diffusion.alphas_cumprod[500] - 1)
    assert diffusion.sigma_to_t(sigma) in (499, 500)


# ----------------------------------------------------------------------------- sampler
def _denoiser(model, stage, tensors, trace=None):
    grid = tensors["clip.output.grid"]
    if stage == "base":
        return GuidedDenoiser(model.base, model.base_diffusion, {"grid": grid}, 3.0, True, trace)
    return GuidedDenoiser(model.upsampler, model.upsample_diffusion,
                          {"grid": grid, "low_res": tensors["sampler.base.output"]}, 3.0, True, trace)


def test_single_karras_step(ref, model):
    tensors, _ = ref
    k = {name[len("karras_step."):]: v for name, v in tensors.items() if name.startswith("karras_step.")}
    gamma = heun_gamma(3.0, 4)
    assert gamma == pytest.approx(float(k["gamma"]), abs=1e-15)
    trace = []
    with torch.no_grad():
        step = heun_step(_denoiser(model, "base", tensors, trace), k["x"], k["sigmas"][0],
                         k["sigmas"][1], gamma, k["eps"])
    torch.testing.assert_close(step.sigma_hat, k["sigma_hat"], atol=0, rtol=1e-6)
    torch.testing.assert_close(step.x_hat, k["x_hat"], atol=1e-4, rtol=1e-6)
    assert torch.equal(trace[0].t, k["t_1"]) and torch.equal(trace[1].t, k["t_2"])
    torch.testing.assert_close(trace[0].model_out, k["model_out_1"], atol=1e-4, rtol=0)
    torch.testing.assert_close(trace[1].model_out, k["model_out_2"], atol=1e-4, rtol=0)
    torch.testing.assert_close(step.denoised_1, k["denoised_1"], atol=1e-4, rtol=0)
    torch.testing.assert_close(step.x_2, k["x_2"], atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(step.denoised_2, k["denoised_2"], atol=1e-4, rtol=0)
    torch.testing.assert_close(step.x_out, k["x_out"], atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("stage", STAGES)
def test_every_denoiser_call(ref, model, stage):
    """Each call fed the reference's (x, sigma): timesteps exact, outputs within tolerance."""
    tensors, _ = ref
    trace = []
    denoiser = _denoiser(model, stage, tensors, trace)
    expected_t = {"base": [1019, 973, 987, 302, 403, 0, 0],
                  "upsample": [1023, 766, 766, 182, 182, 0, 0]}[stage]
    for j in range(7):
        prefix = f"sampler.{stage}.call.{j}."
        with torch.no_grad():
            denoised = denoiser(tensors[prefix + "x"], tensors[prefix + "sigma"])
        assert torch.equal(trace[-1].t, tensors[prefix + "t"]), j
        assert trace[-1].t.tolist() == [expected_t[j]] * 4
        torch.testing.assert_close(trace[-1].model_out, tensors[prefix + "model_out"], atol=1e-4, rtol=0)
        torch.testing.assert_close(denoised, tensors[prefix + "denoised"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("index,stage", list(enumerate(STAGES)))
def test_stage_outputs_from_reference_inputs(ref, model, index, stage):
    tensors, _ = ref
    low_res = None if stage == "base" else tensors["sampler.base.output"]
    trace = []
    out = model.sample_stage(index, tensors["clip.output.grid"],
                             NoiseSource.replaying(_noise(tensors, (stage,))), low_res=low_res,
                             trace=trace)
    assert len(trace) == 7
    for j, call in enumerate(trace):
        assert torch.equal(call.t, tensors[f"sampler.{stage}.call.{j}.t"])
    expected = tensors["sampler.base.output"] if stage == "base" else tensors["output.samples"][:, :, 64:]
    torch.testing.assert_close(out[:, :3], expected[:, :3], atol=1e-4, rtol=0)
    torch.testing.assert_close(out[:, 3:], expected[:, 3:], atol=2e-2, rtol=0)  # 0..255 units


def test_end_to_end_samples(ref, model):
    tensors, _ = ref
    noise = NoiseSource.replaying(_noise(tensors))
    samples = model.generate(_images(tensors), noise)
    assert noise.remaining == 0
    expected = tensors["output.samples"]
    assert samples.shape == expected.shape == (2, 6, 192)
    torch.testing.assert_close(samples[:, :3], expected[:, :3], atol=1e-2, rtol=0)
    torch.testing.assert_close(samples[:, 3:], expected[:, 3:], atol=1.0, rtol=0)
    coords, colors = samples_to_points(samples)
    np.testing.assert_allclose(coords, tensors["output.coords"].numpy(), atol=1e-2)
    assert colors.dtype == np.uint8
    assert np.abs(colors.astype(np.float32) / 255 - tensors["output.colors"].numpy()).max() <= 1 / 255 + 1e-6


# ----------------------------------------------------------------------------- noise, progress
def test_noise_source_replay_and_seed():
    replay = NoiseSource.replaying([torch.ones(2, 3)])
    with pytest.raises(RuntimeError, match="expected shape"):
        replay.randn((3, 2))
    replay = NoiseSource.replaying([torch.ones(2, 3)])
    assert torch.equal(replay.randn((2, 3)), torch.ones(2, 3))
    with pytest.raises(RuntimeError, match="exhausted"):
        replay.randn((2, 3))
    a, b, c = NoiseSource(5).randn((4, 4)), NoiseSource(5).randn((4, 4)), NoiseSource(6).randn((4, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_progress_per_step_and_stop(ref, model):
    tensors, _ = ref
    seen = []
    progress = Progress(lambda fraction, message: seen.append((fraction, message)))
    model.sample_from_grid(tensors["clip.output.grid"], NoiseSource(0), progress, karras_steps=3)
    assert len(seen) == 6 and [m for _, m in seen][0] == "Point-E base: Karras step 1/3"
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)

    stopper = Progress(lambda fraction, message: stopper.request_stop())
    with pytest.raises(Stopped):
        model.sample_from_grid(tensors["clip.output.grid"], NoiseSource(0), stopper, karras_steps=3)


# ----------------------------------------------------------------------------- several views
def test_multiview_conditioning(ref, model):
    tensors, _ = ref
    grid = tensors["clip.output.grid"]
    assert torch.equal(combine_views(grid, "fuse-samples"), grid)
    torch.testing.assert_close(combine_views(grid, "average-conditioning")[0], (grid[0] + grid[1]) / 2)
    concat = combine_views(grid, "concat-conditioning")
    assert concat.shape == (1, 64, 512)
    assert torch.equal(concat[0, :, :256], grid[0]) and torch.equal(concat[0, :, 256:], grid[1])
    with pytest.raises(ValueError, match="unknown multiview mode"):
        combine_views(grid, "vote")
    samples = model.sample_from_grid(concat, NoiseSource(1), karras_steps=2)
    assert samples.shape == (1, 6, 192) and torch.isfinite(samples).all()


# ----------------------------------------------------------------------------- fused attention
def test_default_fused_attention_within_reference_tolerance(ref, fast_model):
    """sdpa (the default) differs from the reference only by float32 rounding."""
    tensors, _ = ref
    assert fast_model.base.backbone.resblocks[0].attn.implementation == "sdpa"
    with torch.no_grad():
        base = fast_model.base(tensors["base.input.x_t"], tensors["base.input.t"],
                               tensors["clip.output.grid"])
        up = fast_model.upsampler(tensors["upsample.input.x_t"], tensors["upsample.input.t"],
                                  tensors["clip.output.grid"], tensors["upsample.input.low_res"])
    torch.testing.assert_close(base, tensors["base.output"], atol=1e-5, rtol=0)
    torch.testing.assert_close(up, tensors["upsample.output"], atol=1e-5, rtol=0)
    trace = []
    denoiser = _denoiser(fast_model, "upsample", tensors, trace)
    for j in range(7):
        prefix = f"sampler.upsample.call.{j}."
        with torch.no_grad():
            denoised = denoiser(tensors[prefix + "x"], tensors[prefix + "sigma"])
        assert torch.equal(trace[-1].t, tensors[prefix + "t"])
        torch.testing.assert_close(denoised, tensors[prefix + "denoised"], atol=2.5e-3, rtol=0)
    samples = fast_model.generate(_images(tensors), NoiseSource.replaying(_noise(tensors)))
    torch.testing.assert_close(samples[:, :3], tensors["output.samples"][:, :3], atol=1e-2, rtol=0)
    torch.testing.assert_close(samples[:, 3:], tensors["output.samples"][:, 3:], atol=1.0, rtol=0)
