"""Shap-E conformance against the reference fixture (tiny random models, float32 CPU).

Fixture: tests/fixtures/shape_tiny_reference.safetensors and the four full-size state-dict
manifests (see /work/shared/fixtures/README.md, section Shap-E). Tolerances are the README's
suggested ones ("Tolerances observed"): CLIP and model outputs 1e-5; per-call ``denoised`` from
the stored ``x`` 1e-4; end-to-end latents with replayed noise 5e-4; decoder parameters 1e-5;
NeRF channels 0.02 (0..255) and transmittance / depth 1e-4 with replayed draws; SDF grid 1e-5;
mesh: same vertex and face counts, vertices and colours 1e-4 after matching; STF channels 0.05
where coverage agrees.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from core.models.pointe.clip_conditioning import openai_clip_to_transformers
from core.models.pointe.sampler import GuidedDenoiser, NoiseSource, karras_sigmas
from core.models.shape.config import (PUBLISHED_DECODER, PUBLISHED_IMAGE300M, PUBLISHED_TEXT300M,
                                      DecoderConfig, LatentDiffusionConfig, ShapEConfig)
from core.models.shape.decoder import ShapEDecoder, posenc_nerf
from core.models.shape.mesh import decode_mesh, sdf_fields
from core.models.shape.modeling_latent import SplitVectorDiffusion
from core.models.shape.modeling_shape import ShapE
from core.models.shape.rendering import (UniformSource, linear_to_srgb, pan_cameras, render_nerf,
                                         render_stf, srgb_to_linear)
from core.models.shape.tokens import PromptError, character_tokens, tokenize
from tests.conftest import load_reference, prefixed

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = "shape_tiny_reference.safetensors"
TAGS = ("image", "text")
FORWARD_ATOL = 1e-5
DENOISED_ATOL = 1e-4
END_TO_END_ATOL = 5e-4
PARAMS_ATOL = 1e-5
NERF_CHANNELS_ATOL = 0.02
NERF_ATOL = 1e-4
SDF_ATOL = 1e-5
MESH_ATOL = 1e-4
STF_ATOL = 0.05

pytestmark = pytest.mark.usefixtures("one_thread")


def _meta(metadata: dict, key: str):
    return json.loads(metadata[key])


@pytest.fixture(scope="module")
def ref():
    return load_reference(REFERENCE)


def _hf_clip(tensors: dict) -> dict:
    """transformers CLIP tensors with the sparse token embedding scattered into its full matrix."""
    state = prefixed(tensors, "clip.weights.hf.")
    rows, values = tensors["clip.weights.token_embedding.rows"], tensors["clip.weights.token_embedding.values"]
    full = torch.zeros(49408, values.shape[1])
    full[rows] = values
    state["text_model.embeddings.token_embedding.weight"] = full
    return state


@pytest.fixture(scope="module")
def model(ref):
    tensors, metadata = ref
    shape = ShapE(ShapEConfig.from_fixture_metadata(metadata)).eval()
    shape.text_model.load_state_dict(prefixed(tensors, "text.weights."), strict=True)
    shape.image_model.load_state_dict(prefixed(tensors, "image.weights."), strict=True)
    shape.decoder.load_state_dict(prefixed(tensors, "decoder.weights."), strict=True)
    clip = _hf_clip(tensors)
    shape.clip_vision.load_transformers_state_dict(clip)
    shape.clip_text.load_transformers_state_dict(clip)
    return shape


@pytest.fixture(scope="module")
def meta_weights(model, ref):
    with torch.no_grad():
        return model.decoder.bottleneck_to_params(ref[0]["decoder.input.latent"])


def _cond(tensors, tag):
    return tensors["clip.output.grid"] if tag == "image" else tensors["clip.output.text_embed"]


# ---------------------------------------------------------------------- configuration
def test_configuration_read_from_metadata(ref, model):
    _, metadata = ref
    config, text, image = model.config, _meta(metadata, "text_model_config"), _meta(metadata, "image_model_config")
    decoder = _meta(metadata, "decoder_config")
    assert model.text_model.config.width == text["inner"]["width"]
    assert model.image_model.config.layers == image["inner"]["layers"]
    assert model.text_model.config.latent_ctx == text["latent_ctx"]
    assert model.decoder.config.d_hidden == decoder["renderer"]["nerstf"]["d_hidden"]
    assert model.decoder.config.grid_size == decoder["renderer"]["grid_size"]
    assert model.decoder.config.background == tuple(float(v) for v in decoder["renderer"]["void"]["background"])
    assert config.karras_steps == _meta(metadata, "sampler")["karras_steps"]
    assert (config.text_guidance, config.image_guidance) == (15.0, 3.0)
    counts = _meta(metadata, "num_parameters")
    assert sum(p.numel() for p in model.image_model.parameters()) == counts["image"]
    assert sum(p.numel() for p in model.text_model.parameters()) == counts["text"]
    assert sum(p.numel() for p in model.decoder.parameters()) == counts["decoder"]


# ---------------------------------------------------------------------- CLIP
def test_clip_grid_and_text_embedding(ref, model):
    tensors, _ = ref
    with torch.no_grad():
        grid = model.clip_vision.grid(tensors["clip.input.pixel_values"])
        text = model.condition_text(tensors["clip.input.text_tokens"])
    torch.testing.assert_close(grid, tensors["clip.output.grid"], atol=FORWARD_ATOL, rtol=0)
    torch.testing.assert_close(text, tensors["clip.output.text_embed"], atol=FORWARD_ATOL, rtol=0)
    assert torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-6)


def test_preprocessing_reproduces_pixel_values(ref, model):
    from core.models.pointe.clip_conditioning import preprocess
    tensors, _ = ref
    images = [tensors["clip.input.image.0"].numpy(), tensors["clip.input.image.1"].numpy()]
    pixels = preprocess(images, model.config.clip_image_size)
    torch.testing.assert_close(pixels, tensors["clip.input.pixel_values"], atol=1e-5, rtol=0)


def test_openai_names_map_onto_transformers_names(ref):
    """The ``clip`` package's tensors (both towers) convert to exactly the transformers tensors."""
    tensors, _ = ref
    openai = prefixed(tensors, "clip.weights.openai.")
    hf = _hf_clip(tensors)
    rows, values = tensors["clip.weights.token_embedding.rows"], tensors["clip.weights.token_embedding.values"]
    openai["token_embedding.weight"] = torch.zeros(49408, values.shape[1]).index_copy(0, rows, values)
    converted = openai_clip_to_transformers(openai)
    assert set(converted) == set(hf)
    for name, tensor in hf.items():
        assert torch.equal(converted[name], tensor), name
    with pytest.raises(ValueError, match="unknown CLIP tensor"):
        openai_clip_to_transformers({"transformer.resblocks.0.bogus": torch.zeros(1)})


def test_prompt_tokens(ref):
    tensors, metadata = ref
    tokens = tensors["clip.input.text_tokens"]
    assert tokens[0, 0] == 49406 and (tokens[0] == 49407).sum() == 1
    # CLIP's byte tokens: the one-letter word "a" is "a</w>", the fixture's first BPE token
    assert character_tokens("a") == [int(tokens[0, 1])] == [320]
    row = tokenize("A  red chair ")[0]
    expected = [49406] + character_tokens("a") + character_tokens("red") + character_tokens("chair") + [49407]
    assert row[:len(expected)].tolist() == expected and not row[len(expected):].any()
    with pytest.raises(PromptError, match="empty"):
        tokenize("   ")
    long = "ab " * 40   # 80 character tokens
    with pytest.raises(PromptError, match="80 character tokens.*at most 75"):
        tokenize(long)
    assert tokenize("x" * 75).shape == (1, 77)


# ---------------------------------------------------------------------- latent diffusion
def test_exp_schedule_constants(ref, model):
    tensors, _ = ref
    for name, values in model.diffusion.constants().items():
        np.testing.assert_allclose(values, tensors[f"diffusion.{name}"].numpy(), rtol=1e-12, atol=0,
                                   err_msg=name)
    assert model.diffusion.betas == pytest.approx(1 - np.exp(-12 / 1024))


@pytest.mark.parametrize("tag", TAGS)
def test_latent_transformer_forward(ref, model, tag):
    tensors, _ = ref
    with torch.no_grad():
        out = model.latent_model(tag)(tensors[f"{tag}.input.x_t"], tensors[f"{tag}.input.t"], _cond(tensors, tag))
    torch.testing.assert_close(out, tensors[f"{tag}.output"], atol=FORWARD_ATOL, rtol=0)


@pytest.mark.parametrize("tag", TAGS)
def test_every_denoiser_call_from_the_stored_x(ref, model, tag):
    tensors, metadata = ref
    sampler = _meta(metadata, "sampler")
    sigmas = karras_sigmas(sampler["karras_steps"], sampler["sigma_min"], sampler["sigma_max"], sampler["rho"])
    torch.testing.assert_close(sigmas, tensors[f"{tag}.sample.sigmas"], atol=0, rtol=1e-6)
    trace = []
    denoiser = GuidedDenoiser(model.latent_model(tag), model.diffusion, {"cond": _cond(tensors, tag)},
                              sampler["guidance_scale"][tag], True, trace=trace)
    calls = 2 * sampler["karras_steps"] - 1
    for j in range(calls):
        call = f"{tag}.sample.call.{j}."
        with torch.no_grad():
            denoised = denoiser(tensors[call + "x"], tensors[call + "sigma"])
        assert torch.equal(trace[-1].t, tensors[call + "t"]), j
        torch.testing.assert_close(trace[-1].model_out, tensors[call + "model_out"], atol=FORWARD_ATOL, rtol=0)
        torch.testing.assert_close(denoised, tensors[call + "denoised"], atol=DENOISED_ATOL, rtol=0)
    assert [int(tensors[f"{tag}.sample.call.{j}.t"][0]) for j in range(calls)] == [865, 484, 484, 27, 27, 0, 0]


@pytest.mark.parametrize("tag", TAGS)
def test_sample_latents_with_replayed_noise(ref, model, tag):
    tensors, metadata = ref
    steps = _meta(metadata, "sampler")["karras_steps"]
    noise = NoiseSource.replaying([tensors[f"{tag}.sample.noise.x_T"]]
                                  + [tensors[f"{tag}.sample.noise.eps.{i}"] for i in range(steps)])
    trace, calls = [], []
    out = model.sample_latents(tag, _cond(tensors, tag), noise, progress=calls.append, trace=trace)
    assert noise.remaining == 0 and calls == list(range(1, 2 * steps))
    torch.testing.assert_close(trace[0].x, tensors[f"{tag}.sample.x_T_scaled"], atol=0, rtol=0)
    assert [int(c.t[0]) for c in trace] == [int(tensors[f"{tag}.sample.call.{j}.t"][0]) for j in range(len(trace))]
    torch.testing.assert_close(out, tensors[f"{tag}.sample.output"], atol=END_TO_END_ATOL, rtol=0)
    # Shap-E returns the final x; the last step is an Euler step to 0, so it equals the last D
    torch.testing.assert_close(out, trace[-1].denoised, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------- decoder
def test_bottleneck_to_params(ref, meta_weights):
    tensors, _ = ref
    for i, weight in enumerate(meta_weights):
        torch.testing.assert_close(weight, tensors[f"decoder.output.params.nerstf.mlp.{i}.weight"],
                                   atol=PARAMS_ATOL, rtol=0)


def test_posenc_layout():
    p = torch.tensor([[0.1, -0.2, 0.3]])
    enc = posenc_nerf(p)[0]
    assert enc.shape == (93,) and torch.equal(enc[:3], p[0])
    k, d = 4, 2
    assert enc[3 + 3 * k + d] == pytest.approx(np.sin(2 ** k * 0.3), abs=1e-6)
    assert enc[48 + 3 * k + d] == pytest.approx(np.cos(2 ** k * 0.3), abs=1e-5)


def test_pan_cameras(ref):
    tensors, metadata = ref
    camera = _meta(metadata, "render_camera")
    cams = pan_cameras(camera["width"], camera["views_of_create_pan_cameras"], camera["x_fov"])
    for axis in ("origin", "x", "y", "z"):
        torch.testing.assert_close(getattr(cams, axis), tensors[f"render.camera.{axis}"], atol=1e-6, rtol=0)


def _nerf(ref, model, meta_weights):
    tensors, metadata = ref
    camera = _meta(metadata, "render_camera")
    cams = pan_cameras(camera["width"], camera["views_of_create_pan_cameras"], camera["x_fov"])
    draws = UniformSource(replay=[tensors["render.nerf.draw.coarse_u"], tensors["render.nerf.draw.pmf_u"],
                                  tensors["render.nerf.draw.fine_u"]])
    return render_nerf(model.decoder, meta_weights, cams, draws), draws


def test_nerf_render_with_replayed_draws(ref, model, meta_weights):
    tensors, _ = ref
    out, draws = _nerf(ref, model, meta_weights)
    assert draws.draws == 3
    expected = lambda k: tensors[f"render.nerf.output.{k}"][0]  # noqa: E731
    torch.testing.assert_close(out.ts_coarse, tensors["render.nerf.ts_coarse"][0, ..., 0], atol=NERF_ATOL, rtol=0)
    torch.testing.assert_close(out.ts_fine, tensors["render.nerf.ts_fine"][0, ..., 0], atol=NERF_ATOL, rtol=0)
    assert torch.equal(out.intersected, expected("intersected"))
    assert not out.intersected.all() and out.intersected.any()   # both kinds of rays are covered
    torch.testing.assert_close(out.channels, expected("channels"), atol=NERF_CHANNELS_ATOL, rtol=0)
    for key in ("transmittance", "depth", "distances", "t0", "t1"):
        torch.testing.assert_close(getattr(out, key), expected(key), atol=NERF_ATOL, rtol=0, msg=key)
    torch.testing.assert_close(out.raw_signed_distance, expected("raw_signed_distance"), atol=NERF_ATOL, rtol=0)
    torch.testing.assert_close(out.raw_density, expected("raw_density"), atol=1e-3, rtol=1e-4)
    diff = out.image_uint8.astype(int) - tensors["render.nerf.output.image_uint8"].numpy().astype(int)
    assert np.abs(diff).max() <= 1


def test_sdf_grid_and_mesh(ref, model, meta_weights):
    tensors, _ = ref
    fields = sdf_fields(model.decoder, meta_weights)
    torch.testing.assert_close(fields, tensors["mesh.fields"], atol=SDF_ATOL, rtol=0)
    mesh = decode_mesh(model.decoder, meta_weights)
    ref_vertices, ref_colors = tensors["mesh.vertices"].numpy(), tensors["mesh.vertex_colors"].numpy()
    assert mesh.vertices.shape == ref_vertices.shape and mesh.faces.shape == tuple(tensors["mesh.faces"].shape)
    # match vertices one to one (order-independent), then compare positions and colours
    tree = cKDTree(ref_vertices)
    distance, index = tree.query(mesh.vertices)
    assert len(np.unique(index)) == len(index)
    assert distance.max() <= MESH_ATOL
    np.testing.assert_allclose(mesh.linear_colors, ref_colors[index], atol=MESH_ATOL, rtol=0)
    # the surface is where the SDF changes sign: every vertex interpolates between the grid values
    assert mesh.faces.min() == 0 and mesh.faces.max() == len(mesh.vertices) - 1
    # sRGB -> linear of the STF colours, as vertex channels
    stf = model.decoder.field(torch.from_numpy(mesh.vertices)[None], meta_weights).channels_stf[0]
    np.testing.assert_allclose(srgb_to_linear(stf).detach().numpy(), mesh.linear_colors, atol=1e-6)


def test_stf_render_of_the_reference_mesh(ref):
    """The ray caster with the reference's mesh reproduces the reference's STF render (our own
    marching cubes triangulates some cells differently, see core/models/shape/mesh.py)."""
    tensors, metadata = ref
    camera = _meta(metadata, "render_camera")
    cams = pan_cameras(camera["width"], camera["views_of_create_pan_cameras"], camera["x_fov"])
    out = render_stf(tensors["mesh.vertices"], tensors["mesh.faces"], tensors["mesh.vertex_colors"], cams)
    expected_t = tensors["render.stf.output.transmittance"][0]
    agree = out.transmittance == expected_t
    assert agree.float().mean() >= 0.95
    covered = agree & (expected_t == 0)
    assert covered.sum() > 20
    diff = (out.channels - tensors["render.stf.output.channels"][0]).abs() * covered
    assert diff.max() <= STF_ATOL
    assert out.image_uint8.shape == tuple(tensors["render.stf.output.image_uint8"].shape)


def test_srgb_round_trip():
    c = torch.linspace(0, 1, 101)
    torch.testing.assert_close(linear_to_srgb(srgb_to_linear(c)), c, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------- full size
def _manifest(name: str) -> dict:
    return json.loads((FIXTURES / f"shape_{name}_state_dict_manifest.json").read_text())


def _shapes(module) -> dict:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name, published, kind", [("text300M", PUBLISHED_TEXT300M, "text"),
                                                   ("image300M", PUBLISHED_IMAGE300M, "image")])
def test_full_size_latent_models_match_manifests(name, published, kind):
    manifest = _manifest(name)
    clip_dim = 768 if kind == "text" else 1024
    config = LatentDiffusionConfig.from_reference(manifest["config"], clip_dim)
    assert config == LatentDiffusionConfig.from_reference(published, clip_dim)
    with torch.device("meta"):
        module = SplitVectorDiffusion(config)
    assert _shapes(module) == manifest["tensors"]
    assert sum(p.numel() for p in module.parameters()) == manifest["num_parameters"]


def test_full_size_decoder_matches_manifests():
    manifest = _manifest("decoder")
    config = DecoderConfig.from_reference(manifest["config"])
    assert config == DecoderConfig.from_reference(PUBLISHED_DECODER)
    with torch.device("meta"):
        decoder = ShapEDecoder(config)
    assert _shapes(decoder) == manifest["tensors"]
    assert sum(p.numel() for p in decoder.parameters()) == manifest["num_parameters"]
    assert sum(b.numel() for b in decoder.buffers()) == manifest["num_buffers"]
    # the transmitter's decode path holds the same tensors under encoder.params_proj / renderer
    transmitter = _manifest("transmitter")["tensors"]
    decode_path = {k[len("encoder."):] if k.startswith("encoder.params_proj.") else k: v
                   for k, v in transmitter.items()
                   if k.startswith(("encoder.params_proj.", "renderer."))}
    assert decode_path == manifest["tensors"]


# ---------------------------------------------------------------------- other configurations
def _other_config() -> ShapEConfig:
    text = json.loads(json.dumps(PUBLISHED_TEXT300M))
    text.update(d_latent=32 * 12, latent_ctx=32)
    text["inner"].update(width=24, layers=3, heads=3)
    image = json.loads(json.dumps(PUBLISHED_IMAGE300M))
    image.update(d_latent=32 * 12, latent_ctx=32)
    image["inner"].update(width=24, layers=1, heads=4)
    decoder = json.loads(json.dumps(PUBLISHED_DECODER))
    decoder.update(latent_ctx=32, d_latent=12)
    decoder["renderer"].update(grid_size=12, n_coarse_samples=5, n_fine_samples=7)
    decoder["renderer"]["nerstf"].update(d_hidden=8, n_hidden_layers=5)
    return ShapEConfig(clip_image_size=28, clip_width=16, clip_layers=1, clip_heads=2, clip_text_width=16,
                       clip_text_layers=1, clip_text_heads=2, clip_embed_dim=8, text_model=text,
                       image_model=image, decoder=decoder, karras_steps=3, s_churn=2.0)


def test_another_configuration_samples_decodes_and_renders():
    from core.models.shape.modeling_shape import build_random
    model = build_random(_other_config(), seed=3)
    assert len(model.decoder.renderer.nerstf.mlp) == 6
    images = [np.full((40, 30, 3), 128, np.uint8), np.zeros((28, 28, 3), np.uint8), np.eye(30, dtype=np.uint8)[..., None].repeat(3, -1) * 255]
    grid = model.condition_images(images)
    assert grid.shape == (3, 16, 4)
    text = model.condition_text(torch.cat([tokenize("a cat"), tokenize("a dog"), tokenize("a cup")]))
    for mode, cond in (("image", grid), ("text", text)):
        noise, trace = NoiseSource(5), []
        latents = model.sample_latents(mode, cond, noise, trace=trace)
        assert latents.shape == (3, 384) and noise.draws == 1 + 3 and len(trace) == 5
        # churn > 0 raises sigma above the schedule on the first step
        assert float(trace[0].sigma[0]) > 160.0
        # the Euler step to 0 returns the last D up to float32 rounding of x_hat (which a random
        # model with churn drives far from the data: a few ulps of its largest value)
        rounding = 4 * 2.0 ** -23 * float(trace[-1].x.abs().max())
        torch.testing.assert_close(latents, trace[-1].denoised, atol=rounding, rtol=0)
        unguided = model.sample_latents(mode, cond, NoiseSource(5), guidance_scale=1.0, s_churn=0.0)
        assert not torch.allclose(unguided, latents)
    meta = model.decoder.bottleneck_to_params(latents)
    assert [tuple(w.shape) for w in meta] == [(3, 8, 93), (3, 8, 8), (3, 8, 8), (3, 8, 8)]
    # batched field = per-latent field
    points = torch.rand(1, 50, 3) * 2 - 1
    batched = model.decoder.field(points.expand(3, -1, -1), meta).signed_distance
    single = model.decoder.field(points, [w[1:2] for w in meta]).signed_distance
    torch.testing.assert_close(batched[1:2], single, atol=1e-6, rtol=0)
    first = [w[:1] for w in meta]
    nerf = render_nerf(model.decoder, first, pan_cameras(6, [0, 5]), UniformSource(0), ray_batch=20)
    assert nerf.channels.shape == (2, 6, 6, 3) and nerf.raw_density.shape == (2, 6, 6, 12)
    assert ((nerf.transmittance >= 0) & (nerf.transmittance <= 1)).all()
    assert decode_mesh(model.decoder, first).fields.shape == (14, 14, 14)


def test_full_size_pipeline_parameter_counts():
    """The published sizes on the meta device: the manifests' counts, and CLIP ViT-L/14's towers as
    the README gives them (text 123,650,305 with logit_scale, which the text tower alone lacks)."""
    with torch.device("meta"):
        model = ShapE(ShapEConfig())
    counts = model.parameter_counts()
    assert counts["text300M"] == _manifest("text300M")["num_parameters"]
    assert counts["image300M"] == _manifest("image300M")["num_parameters"]
    assert counts["decoder"] == _manifest("decoder")["num_parameters"]
    assert counts["clip_vision"] == 303_966_208 and counts["clip_text"] == 123_650_305 - 1
