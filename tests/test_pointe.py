"""Point-E conformance against the reference fixture (tiny random models, float32 CPU).

Fixture: tests/fixtures/pointe_tiny_reference.safetensors (see /work/shared/fixtures/README.md,
section Point-E) and the full-size state-dict manifests.

Tolerances hold on any CPU and thread count (README "Tolerances observed"): every single network
evaluation is held to FORWARD_ATOL; what one denoiser call computes from it is held to the network's
error propagated through the call's own coefficients (:func:`_denoised_atol`); a whole sampler run
(a stage or the pipeline) is chaotic (a 1e-7 relative change of one noise draw moves a stage by up
to 4.3e-3 xyz and 0.85 RGB, measured over 40 draws) and is compared within the README's end-to-end
allowance (1e-2 xyz, 1 RGB level).
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
                                PointEConfig, build_random, combine_views, heun_step, karras_sigmas,
                                openai_clip_to_transformers, preprocess,
                                samples_to_points)
from core.models.pointe.sampler import heun_gamma
from core.progress import Progress, Stopped
from tests.conftest import load_reference, prefixed

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "pointe_tiny_reference.safetensors"
STAGES = ("base", "upsample")
GUIDANCE = 3.0
# One network evaluation: float64 moves the forward outputs by <= 4.4e-7 (README) and the CLIP grid
# by 3.3e-6; ours and the reference's float32 rounding together stay under 1e-5.
FORWARD_ATOL = 1e-5
# A whole sampler run: the README's end-to-end allowance (output units: xyz, RGB in 0..255).
END_TO_END_XYZ, END_TO_END_RGB = 1e-2, 1.0
# float32 rounding of a handful of operations on values up to |v|, on each side: 2^-21 |v|.
ROUNDING = 2.0 ** -21


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


def test_configuration_outside_the_fixture_runs_on_portrait_and_landscape_images():
    """Other CLIP width/depth/heads/image/patch, other transformer widths/depths/heads and point
    counts; a portrait and a landscape picture."""
    config = PointEConfig(clip_image_size=32, clip_patch_size=8, clip_width=24, clip_layers=1,
                          clip_heads=3, clip_proj_dim=8, width=16, layers=1, heads=2, up_width=24,
                          up_layers=2, up_heads=3, base_points=8, up_points=16, karras_steps=2)
    model = build_random(config, seed=0)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (45, 30, 3), dtype=np.uint8), rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)]
    grid = model.condition(images)
    assert grid.shape == (2, 24, 16)                         # 4x4 patches of 8 px
    # one CLIP evaluation: the second picture alone gives the same grid row
    torch.testing.assert_close(model.condition(images[1:])[0], grid[1], atol=FORWARD_ATOL, rtol=0)
    samples = model.generate(images, NoiseSource(0)).samples
    assert samples.shape == (2, 6, 24) and torch.isfinite(samples).all()
    # no position embedding: permuting the points permutes the denoiser's output (one evaluation)
    x, t = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([5, 700])
    order = torch.randperm(8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model.base(x, t, grid)
        permuted = model.base(x[:, :, order], t, grid)
    assert out.shape == (2, 12, 8)
    torch.testing.assert_close(permuted, out[:, :, order], atol=FORWARD_ATOL, rtol=0)


# ----------------------------------------------------------------------------- CLIP
def test_preprocessing_reproduces_reference_pixels(ref):
    tensors, _ = ref
    pixels = preprocess(_images(tensors))
    assert pixels.shape == (2, 3, 224, 224)
    # PIL's bicubic is integer arithmetic; then one float32 (x - mean)/std
    torch.testing.assert_close(pixels, tensors["clip.input.pixel_values"], atol=1e-6, rtol=0)


def test_preprocessing_rejects_non_rgb():
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        preprocess([np.zeros((10, 10), np.uint8)])


def test_clip_grid_and_embed(ref, model):
    tensors, _ = ref
    with torch.no_grad():
        out = model.clip(tensors["clip.input.pixel_values"])
    grid, embed = out.grid, out.embed
    assert grid.shape == (2, 64, 256)
    # one network evaluation (float64 moves the grid by 3.3e-6, the unit-norm embed by 1.4e-7)
    torch.testing.assert_close(grid, tensors["clip.output.grid"], atol=FORWARD_ATOL, rtol=0)
    torch.testing.assert_close(embed, tensors["clip.output.embed"], atol=1e-6, rtol=0)
    # end to end from raw images (PIL's integer resize is exact; the same single evaluation)
    torch.testing.assert_close(model.condition(_images(tensors)), tensors["clip.output.grid"],
                               atol=FORWARD_ATOL, rtol=0)


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
        grid = clip(tensors["clip.input.pixel_values"]).grid
    torch.testing.assert_close(grid, tensors["clip.output.grid"], atol=FORWARD_ATOL, rtol=0)


# ----------------------------------------------------------------------------- transformers
def test_base_forward(ref, model):
    tensors, _ = ref
    with torch.no_grad():
        out = model.base(tensors["base.input.x_t"], tensors["base.input.t"], tensors["clip.output.grid"])
    torch.testing.assert_close(out, tensors["base.output"], atol=FORWARD_ATOL, rtol=0)  # one evaluation


def test_upsample_forward(ref, model):
    tensors, _ = ref
    with torch.no_grad():
        out = model.upsampler(tensors["upsample.input.x_t"], tensors["upsample.input.t"],
                              tensors["clip.output.grid"], tensors["upsample.input.low_res"])
    torch.testing.assert_close(out, tensors["upsample.output"], atol=FORWARD_ATOL, rtol=0)  # one evaluation
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
        # beta_0 = 1 - abar(1/T)/abar(0) ~ 4e-5 cancels: one libm ulp of cos moves it (and what
        # follows) by up to 2.2e-11 relative, so 1e-10; a wrong schedule is off by > 1e-3
        np.testing.assert_allclose(value, expected, rtol=1e-10, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("index,stage", list(enumerate(STAGES)))
def test_karras_sigmas(ref, model, index, stage):
    tensors, _ = ref
    settings = model.config.stage(index)
    sigmas = karras_sigmas(4, settings["sigma_min"], settings["sigma_max"], settings["rho"])
    assert sigmas.dtype == torch.float32
    # (hi + ramp (lo - hi))^7 in float32: 7x two roundings of the base plus pow's ulp < 1e-6
    torch.testing.assert_close(sigmas, tensors[f"sampler.{stage}.sigmas"], atol=0, rtol=1e-6)
    # one IEEE float32 product: exact on every CPU
    torch.testing.assert_close(tensors[f"sampler.{stage}.noise.x_T"] * settings["sigma_max"],
                               tensors[f"sampler.{stage}.x_T_scaled"], atol=0, rtol=0)


def test_sigma_to_t_edges(model):
    diffusion = model.base_diffusion
    assert diffusion.sigma_to_t(1e-4) == 0
    assert diffusion.sigma_to_t(1e6) == 1023
    # exactly on a grid point: the index itself (float32 abar may land just below it)
    sigma = math.sqrt(1 / diffusion.alphas_cumprod[500] - 1)
    assert diffusion.sigma_to_t(sigma) in (499, 500)


# ----------------------------------------------------------------------------- sampler
def _denoiser(model, stage, tensors, trace=None):
    grid = tensors["clip.output.grid"]
    if stage == "base":
        return GuidedDenoiser(model.base, model.base_diffusion, {"grid": grid}, 3.0, True, trace)
    return GuidedDenoiser(model.upsampler, model.upsample_diffusion,
                          {"grid": grid, "low_res": tensors["sampler.base.output"]}, 3.0, True, trace)


def _denoised_atol(diffusion, call, x, sigma, model_out, expected_out, guidance=GUIDANCE):
    """The error one guided denoiser call may carry, given its network's error (conditioning).

    D = (1 - g) x0_uncond + g x0_cond with x0 = clamp(a_t x_in - b_t eps), x_in = x / sqrt(sigma^2 + 1);
    clamp is 1-Lipschitz, so |dD| <= (2g - 1) (b_t |d eps| + float32 rounding of a_t x_in and b_t eps
    on both sides). b_t is 164 at t = 1019: there the network's 1e-6 becomes 1e-3.
    """
    t = int(call.t[0])
    a = float(diffusion.sqrt_recip_alphas_cumprod[t])
    b = float(diffusion.sqrt_recipm1_alphas_cumprod[t])
    x_in = x / (sigma[:, None, None].double() ** 2 + 1) ** 0.5
    eps_error = (model_out[:, :6] - expected_out[:, :6]).abs().max().item()
    terms = a * x_in.abs().max().item() + b * expected_out[:, :6].abs().max().item()
    return (2 * guidance - 1) * (b * eps_error + ROUNDING * terms)


def _check_call(model_out, denoised, diffusion, call, x, sigma, expected_out, expected_denoised):
    # one network evaluation: the per-call tolerance
    torch.testing.assert_close(model_out, expected_out, atol=FORWARD_ATOL, rtol=0)
    # what the call computes from it: the network's error through the call's coefficients
    atol = _denoised_atol(diffusion, call, x, sigma, model_out, expected_out)
    torch.testing.assert_close(denoised, expected_denoised, atol=atol, rtol=0)


def test_single_karras_step(ref, model):
    tensors, _ = ref
    k = {name[len("karras_step."):]: v for name, v in tensors.items() if name.startswith("karras_step.")}
    gamma = heun_gamma(3.0, 4)
    assert gamma == pytest.approx(float(k["gamma"]), abs=1e-15)
    # The step's arithmetic, fed the reference's denoiser outputs: float32 rounding only. x_2 is a
    # few operations on values up to |x_hat|; x_out adds (x_2 - D_2)/sigma_1 dt/2, which
    # magnifies x_2's rounding by |dt|/(2 sigma_1) (5.9 here).
    replayed = iter((k["denoised_1"], k["denoised_2"]))
    step = heun_step(lambda x, sigma: next(replayed), k["x"], k["sigmas"][0], k["sigmas"][1], gamma,
                     k["eps"])
    torch.testing.assert_close(step.sigma_hat, k["sigma_hat"], atol=0, rtol=1e-6)  # one product
    torch.testing.assert_close(step.x_hat, k["x_hat"], atol=1e-4, rtol=1e-6)  # x + eps sqrt(.): 2 roundings
    scale = k["x_hat"].abs().max().item()
    x2_atol = ROUNDING * scale
    torch.testing.assert_close(step.x_2, k["x_2"], atol=x2_atol, rtol=0)
    gain = abs(float(k["sigmas"][1] - k["sigma_hat"])) / (2 * float(k["sigmas"][1]))
    torch.testing.assert_close(step.x_out, k["x_out"], atol=(1 + gain) * x2_atol + ROUNDING * scale,
                               rtol=0)
    # The real denoiser in the step. Its first call starts from the reference's x_hat; its second
    # starts from our x_2, so it is a (two-call) sampler run: the second call is checked from the
    # reference's x_2 in test_every_denoiser_call (call 1 = this step's second call) and the chain
    # by the stage tests.
    assert torch.equal(tensors["sampler.base.call.1.x"], k["x_2"])
    trace = []
    with torch.no_grad():
        step = heun_step(_denoiser(model, "base", tensors, trace), k["x"], k["sigmas"][0],
                         k["sigmas"][1], gamma, k["eps"])
    # integer timesteps depend on sigma only (see test_every_denoiser_call): exact
    assert torch.equal(trace[0].t, k["t_1"]) and torch.equal(trace[1].t, k["t_2"])
    _check_call(trace[0].model_out, step.denoised_1, model.base_diffusion, trace[0], k["x_hat"],
                trace[0].sigma, k["model_out_1"], k["denoised_1"])
    # x_2 = x_hat + (x_hat - D_1)(sigma_1 - sigma_hat)/sigma_hat: D_1's error times < 1, plus rounding
    d1_error = (step.denoised_1 - k["denoised_1"]).abs().max().item()
    torch.testing.assert_close(step.x_2, k["x_2"], atol=d1_error + x2_atol, rtol=0)


@pytest.mark.parametrize("stage", STAGES)
def test_every_denoiser_call(ref, model, stage):
    """Each call fed the reference's (x, sigma): timesteps exact, outputs within tolerance."""
    tensors, _ = ref
    trace = []
    denoiser = _denoiser(model, stage, tensors, trace)
    diffusion = model.base_diffusion if stage == "base" else model.upsample_diffusion
    # The timestep depends on sigma alone (the schedule, not x); the fixture's interpolated indices
    # lie >= 0.14 from an integer and abar >= 3 % inside the table's ends, beyond float32's reach:
    # compared exactly.
    expected_t = {"base": [1019, 973, 987, 302, 403, 0, 0],
                  "upsample": [1023, 766, 766, 182, 182, 0, 0]}[stage]
    for j in range(7):
        prefix = f"sampler.{stage}.call.{j}."
        with torch.no_grad():
            denoised = denoiser(tensors[prefix + "x"], tensors[prefix + "sigma"])
        assert torch.equal(trace[-1].t, tensors[prefix + "t"]), j
        assert trace[-1].t.tolist() == [expected_t[j]] * 4
        _check_call(trace[-1].model_out, denoised, diffusion, trace[-1], tensors[prefix + "x"],
                    tensors[prefix + "sigma"], tensors[prefix + "model_out"], tensors[prefix + "denoised"])


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
    # A stage is a whole sampler run (7 chained calls, guided): README end-to-end allowance. Every
    # call on its own is held to the per-call tolerances in test_every_denoiser_call.
    torch.testing.assert_close(out[:, :3], expected[:, :3], atol=END_TO_END_XYZ, rtol=0)
    torch.testing.assert_close(out[:, 3:], expected[:, 3:], atol=END_TO_END_RGB, rtol=0)  # 0..255


def test_end_to_end_samples(ref, model):
    tensors, _ = ref
    noise = NoiseSource.replaying(_noise(tensors))
    samples = model.generate(_images(tensors), noise).samples
    assert noise.remaining == 0
    expected = tensors["output.samples"]
    assert samples.shape == expected.shape == (2, 6, 192)
    # the whole pipeline (two sampler runs, stage 2 fed our stage 1): README end-to-end allowance
    torch.testing.assert_close(samples[:, :3], expected[:, :3], atol=END_TO_END_XYZ, rtol=0)
    torch.testing.assert_close(samples[:, 3:], expected[:, 3:], atol=END_TO_END_RGB, rtol=0)
    coords, colors = samples_to_points(samples)
    np.testing.assert_allclose(coords, tensors["output.coords"].numpy(), atol=END_TO_END_XYZ)
    assert colors.dtype == np.uint8
    # README: colours move by at most one level (1/255) when the run moves
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
    samples = model.sample_from_grid(concat, NoiseSource(1), karras_steps=2).samples
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
    # single evaluations: the per-call tolerance
    torch.testing.assert_close(base, tensors["base.output"], atol=FORWARD_ATOL, rtol=0)
    torch.testing.assert_close(up, tensors["upsample.output"], atol=FORWARD_ATOL, rtol=0)
    trace = []
    denoiser = _denoiser(fast_model, "upsample", tensors, trace)
    for j in range(7):
        prefix = f"sampler.upsample.call.{j}."
        with torch.no_grad():
            denoised = denoiser(tensors[prefix + "x"], tensors[prefix + "sigma"])
        assert torch.equal(trace[-1].t, tensors[prefix + "t"])
        _check_call(trace[-1].model_out, denoised, fast_model.upsample_diffusion, trace[-1],
                    tensors[prefix + "x"], tensors[prefix + "sigma"], tensors[prefix + "model_out"],
                    tensors[prefix + "denoised"])
    # a whole pipeline run: the README's end-to-end allowance
    samples = fast_model.generate(_images(tensors), NoiseSource.replaying(_noise(tensors))).samples
    torch.testing.assert_close(samples[:, :3], tensors["output.samples"][:, :3], atol=END_TO_END_XYZ,
                               rtol=0)
    torch.testing.assert_close(samples[:, 3:], tensors["output.samples"][:, 3:], atol=END_TO_END_RGB,
                               rtol=0)
