"""Conformance of core.models.lrm (OpenLRM v1.1) with the authors' reference outputs.

Fixture: tests/fixtures/lrm_tiny_reference.safetensors (tiny random model run by the reference
code; README "LRM" section). Tolerances hold on any CPU and thread count: a float32 rerun differs
from the reference by its own rounding plus the reference's, each about what a float64 rerun
moves (README: <= 1.4e-6 for features and planes, 8e-7 for renders, 6.9e-6 for the density grid,
whose values reach 8.3), so ATOL 1e-5 everywhere and SIGMA_ATOL 2e-5 for the density. The mesh
is compared where marching cubes is stable: no grid value lies near the iso-level (checked), and
each vertex within what the density tolerance moves it along its edge.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.models.lrm import LRM, LRMConfig, orbit_cameras, preset, source_camera
from core.models.lrm.mesh import extract_mesh
from core.models.lrm.preprocess import preprocess_image
from core.models.lrm.renderer import auto_near_far, camera_rays, ray_box_limits
from tests.conftest import load_reference

FIXTURES = Path(__file__).parent / "fixtures"
ATOL = 1e-5
SIGMA_ATOL = 2e-5  # 2 x the README's float64 deviation of grid_sigma (6.9e-6), rounded up


@pytest.fixture(scope="module")
def ref():
    return load_reference("lrm_tiny_reference.safetensors")


@pytest.fixture(scope="module")
def model(ref):
    tensors, meta = ref
    m = LRM(LRMConfig.from_dict(json.loads(meta["config"]))).eval()
    m.load_state_dict({k[len("weights."):]: v for k, v in tensors.items() if k.startswith("weights.")},
                      strict=True)
    return m


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    assert tuple(actual.shape) == tuple(expected.shape)
    err = (actual.float() - expected.float()).abs().max().item()
    assert err <= atol, f"max abs error {err:.3g} > {atol}"


def test_config_and_parameter_count(ref, model):
    _, meta = ref
    cfg = model.config
    assert (cfg.encoder_depth, cfg.encoder_heads, cfg.encoder_num_registers) == (2, 2, 4)
    assert cfg.depth_resolution == 8 and cfg.depth_resolution_importance == 8
    assert model.num_parameters == int(meta["num_parameters"]) == 152796


def test_preprocessing_matches_reference(ref):
    t, _ = ref
    # one bicubic resize of [0,1] values: a few float32 ulps (6e-8 each)
    close(preprocess_image(t["input.image_rgba_uint8"].numpy(), 56), t["input.image"], 1e-6)


def test_canonical_cameras(ref):
    t, meta = ref
    assert torch.equal(source_camera(2.0), t["input.source_camera"])
    orbit = orbit_cameras(int(meta["render_orbit_views"]))
    close(orbit[None, :2], t["input.render_cameras"], 1e-6)  # cos/sin of values <= 2: ulps of 2.4e-7


@torch.no_grad()
def test_encoder_camera_transformer_planes(ref, model):
    """Each stage is one evaluation fed the reference's inputs: ATOL (float64 moves them <= 1.4e-6)."""
    t, _ = ref
    close(model.encode(t["input.image"]), t["output.image_feats"])
    close(model.embed_camera(t["input.source_camera"]), t["output.camera_embeddings"])
    close(model.forward_transformer(t["output.image_feats"], t["output.camera_embeddings"]),
          t["output.transformer_tokens"])
    close(model.upsample(t["output.transformer_tokens"]), t["output.planes"])
    # end to end from the raw RGBA picture
    x = preprocess_image(t["input.image_rgba_uint8"].numpy(), 56)
    close(model.forward_planes(x, t["input.source_camera"]), t["output.planes"])


@torch.no_grad()
def _render(t, model, **kwargs):
    return model.render(t["output.planes"], t["input.render_cameras"], 16, t["input.render_bg_colors"],
                        coarse_jitter=t["input.render_coarse_jitter"],
                        importance_u=t["input.render_importance_u"], return_samples=True, **kwargs)


def test_render_replays_reference(ref, model):
    """One render from the reference's planes and random draws (float64 moves it <= 8e-7): ATOL."""
    t, _ = ref
    out = _render(t, model)
    close(out.depths_coarse, t["output.render_depths_coarse"])
    close(out.depths_fine, t["output.render_depths_fine"])
    for key in ("images_rgb", "images_depth", "images_weight"):
        close(getattr(out, key), t[f"output.{key}"])


def test_render_chunking_is_invisible(ref, model):
    """Near/far quirk and depth clamp are per call, so ray chunks must not change anything."""
    t, _ = ref
    whole, parts = _render(t, model), _render(t, model, chunk_rays=100)
    # Row blocks of the same evaluation: another BLAS may block them differently (depths reach 3.7,
    # 1 ulp = 2.4e-7), so the per-evaluation ATOL; a near/far or clamp taken per chunk moves
    # depths by whole sample spacings (~0.1).
    for key in ("images_rgb", "images_depth", "images_weight", "depths_fine"):
        close(getattr(parts, key), getattr(whole, key))


@torch.no_grad()
def test_render_seeded(ref, model):
    t, _ = ref
    def go(seed):
        return model.render(t["output.planes"], t["input.render_cameras"], 16, 1.0,
                            generator=torch.Generator().manual_seed(seed)).images_rgb
    assert torch.equal(go(3), go(3))
    assert not torch.equal(go(3), go(4))


def test_grid_query(ref, model):
    t, _ = ref
    grid = model.query_grid(t["output.planes"], 16)
    close(grid.sigma, t["output.grid_sigma"], SIGMA_ATOL)  # float64 moves sigma (up to 8.3) by 6.9e-6
    close(grid.rgb, t["output.grid_rgb"])


def test_mesh_matches_reference_order_independently(ref, model):
    from scipy.spatial import cKDTree
    t, _ = ref
    grid_size, level = 16, 3.0
    sigma = model.query_grid(t["output.planes"], grid_size).sigma
    ref_sigma = t["output.grid_sigma"][0, ..., 0].double().numpy()
    # Marching cubes decides inside/outside per grid value: stable only if no value lies within the
    # density tolerance of the iso-level (here the closest is 4.7e-4 away). Then the topology is
    # the reference's exactly, on any CPU.
    assert np.abs(ref_sigma - level).min() > 10 * SIGMA_ATOL
    mesh = extract_mesh(model, t["output.planes"], grid_size, level, sigma=sigma)
    ref_v = t["output.mesh_vertices"].numpy()
    ref_f = t["output.mesh_faces"].numpy()
    assert mesh.vertices.shape == ref_v.shape and mesh.faces.shape == ref_f.shape
    dist, index = cKDTree(mesh.vertices).query(ref_v)
    assert len(np.unique(index)) == len(ref_v)  # one-to-one
    # A vertex sits on a grid edge at (level - s0)/(s1 - s0): errors of SIGMA_ATOL at both ends move
    # it by <= SIGMA_ATOL/|s1 - s0| of an edge (2/(G - 1) long), plus float32 rounding of a
    # coordinate <= 1 on each side (2^-20).
    cell = (ref_v.astype(np.float64) + 1) / 2 * (grid_size - 1)
    rows, axis = np.arange(len(cell)), np.abs(cell - np.round(cell)).argmax(axis=1)  # fractional one
    lo = np.round(cell).astype(int)
    lo[rows, axis] = np.minimum(np.floor(cell[rows, axis]), grid_size - 2)
    hi = lo.copy()
    hi[rows, axis] += 1
    gap = np.abs(ref_sigma[tuple(hi.T)] - ref_sigma[tuple(lo.T)])
    assert ((ref_sigma[tuple(lo.T)] - level) * (ref_sigma[tuple(hi.T)] - level) < 0).all()  # crossing edges
    assert (dist <= 2 / (grid_size - 1) * SIGMA_ATOL / gap + 2.0 ** -20).all()
    # colours: one decoder evaluation at the reference's vertices (ATOL), and ours are that
    # evaluation at our own vertices
    with torch.no_grad():
        at_ref = model.query_points(t["output.planes"], torch.from_numpy(ref_v)[None]).rgb[0]
        at_ours = model.query_points(t["output.planes"], torch.from_numpy(mesh.vertices)[None]).rgb[0]
    close(at_ref, t["output.mesh_vertex_colors"])
    assert np.array_equal(mesh.colors, at_ours.numpy())

    def canonical(faces):  # rotate each triangle so its smallest index leads (keeps winding)
        shift = faces.argmin(axis=1)
        rows = np.arange(len(faces))[:, None]
        return {tuple(f) for f in faces[rows, (shift[:, None] + np.arange(3)) % 3]}

    assert canonical(index[ref_f]) == canonical(mesh.faces)


def test_ray_box_limits_independent():
    origins = torch.tensor([[[0.0, -2.0, 0.0]] * 3])
    d = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.96, 0.28], [0.8, 0.6, 0.0]]])
    near, far, hit = ray_box_limits(origins, d)
    assert hit[0].tolist() == [True, True, False]
    # slabs by hand: ray 0 crosses y=-1..1 at t=1..3; ray 1 at t=1/0.96..3/0.96 (z stays inside)
    assert near[0, :2].tolist() == pytest.approx([1.0, 1 / 0.96])
    assert far[0, :2].tolist() == pytest.approx([3.0, 3 / 0.96])
    # ray 2 leaves the x slab (t=1.25) before entering the y slab (t=1/0.6): a miss.
    # The reference quirk: misses get [min near, max near] over the hitting rays.
    n, f = auto_near_far(origins, d)
    assert n[0, 2].item() == pytest.approx(1.0) and f[0, 2].item() == pytest.approx(1 / 0.96)


@torch.no_grad()
def test_views_missing_the_box_render_background(model):
    cams = orbit_cameras(4)[:1].clone()
    cams[0, [3, 7, 11]] = torch.tensor([5.0, 5.0, 5.0])  # moved away: looks past the box
    planes = torch.randn(1, 3, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    out = model.render(planes, cams[None], 8, 0.25, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.images_rgb).all()
    assert torch.allclose(out.images_rgb, torch.tensor(0.25)) and (out.images_weight == 0).all()


def test_camera_rays_centre_pixel_looks_at_origin():
    cams = orbit_cameras(4)
    origins, dirs = camera_rays(cams, 2)  # 2x2: the centre lies between the four pixels
    mean_dir = torch.nn.functional.normalize(dirs.mean(dim=1), dim=-1)
    to_origin = torch.nn.functional.normalize(-origins[:, 0], dim=-1)
    assert torch.allclose(mean_dir, to_origin, atol=1e-6)
    # image row 0 looks up (+z) more than the last row
    assert (dirs[:, 0, 2] > dirs[:, 2, 2]).all()


def _manifest(name):
    return json.loads((FIXTURES / name).read_text())


@pytest.mark.parametrize("variant,name", [("base", "openlrm_mix_base_1_1_state_dict_manifest.json"),
                                          ("small", "openlrm_mix_small_1_1_state_dict_manifest.json")])
def test_full_size_names_and_shapes(variant, name):
    manifest = _manifest(name)
    cfg = LRMConfig.from_dict(manifest["config"])
    assert cfg.model_dict() == {**manifest["config"], "encoder_freeze": cfg.encoder_freeze}
    for config in (cfg, preset(variant)):
        with torch.device("meta"):
            m = LRM(config)
        shapes = {k: list(v.shape) for k, v in m.state_dict().items()}
        assert shapes == manifest["tensors"]
        assert sum(p.numel() for p in m.parameters()) == manifest["num_parameters"]
        assert len(shapes) == manifest["num_tensors"]


def test_large_preset_uses_separate_projections():
    with torch.device("meta"):
        m = LRM(preset("large"))
    names = dict(m.named_parameters())
    assert list(names["transformer.layers.0.cross_attn.k_proj_weight"].shape) == [1024, 768]
    assert "transformer.layers.0.cross_attn.in_proj_weight" not in names
    assert "transformer.layers.15.norm3.mlp.1.weight" in names
    assert list(names["upsampler.weight"].shape) == [1024, 80, 2, 2]
    assert m.render_settings.depth_resolution == 64


def test_encoder_name_fills_in_sizes_and_never_vetoes_given_ones():
    small = LRMConfig(encoder_model_name="dinov2_vits14_reg", encoder_feat_dim=None)
    assert (small.encoder_feat_dim, small.encoder_depth, small.encoder_heads, small.encoder_patch_size,
            small.encoder_num_registers) == (384, 12, 6, 14, 4)
    # a given size wins over the one the name implies
    wider = LRMConfig(encoder_feat_dim=384, encoder_heads=6)
    assert (wider.encoder_feat_dim, wider.encoder_depth, wider.encoder_heads) == (384, 12, 6)
    assert LRMConfig(encoder_model_name="dinov2_vitb14").encoder_num_registers == 0
    # a name outside the table: what it implies (patch, registers) is filled in, the rest must be given
    odd = LRMConfig(encoder_model_name="dinov2_tiny14_reg_h", encoder_feat_dim=24, encoder_depth=1,
                    encoder_heads=3)
    assert (odd.encoder_patch_size, odd.encoder_num_registers) == (14, 4)
    with pytest.raises(ValueError, match="does not imply encoder_feat_dim, encoder_depth, encoder_heads"):
        LRMConfig(encoder_model_name="dinov2_tiny14_reg_h")
    with pytest.raises(ValueError, match="encoder_patch_size"):
        LRMConfig(encoder_model_name="my_encoder", encoder_feat_dim=24, encoder_depth=1, encoder_heads=3)
    with pytest.raises(ValueError, match="at least 4 coarse samples"):
        LRMConfig(rendering_samples_per_ray=6)  # 3 coarse samples leave the importance pdf empty


@torch.no_grad()
def test_configuration_outside_the_fixture_runs_on_a_portrait_image():
    """Other widths, depths, heads, patch, registers and plane sizes; encoder width != transformer
    width (separate key/value projections); a portrait 35x21 input (5x3 patches of 7)."""
    config = LRMConfig(camera_embed_dim=12, rendering_samples_per_ray=10, transformer_dim=24,
                       transformer_layers=1, transformer_heads=3, triplane_low_res=3, triplane_dim=4,
                       encoder_model_name="dinov2_tiny14_reg_h", encoder_feat_dim=20, encoder_depth=1,
                       encoder_heads=5, encoder_patch_size=7, encoder_num_registers=2, encoder_img_size=28)
    torch.manual_seed(0)
    model = LRM(config).eval()
    assert "transformer.layers.0.cross_attn.k_proj_weight" in dict(model.named_parameters())
    images = torch.rand(2, 3, 35, 21)
    cameras = source_camera(2.0).expand(2, -1)
    feats = model.encode(images)
    assert feats.shape == (2, 1 + 5 * 3, 20)
    planes = model(images, cameras)
    assert planes.shape == (2, 3, 4, 6, 6)
    # the batch items are independent: the second alone gives the same planes (one evaluation: ATOL)
    close(model(images[1:], cameras[1:])[0], planes[1])
    out = model.render(planes[:1], orbit_cameras(2)[None], 4, 1.0, generator=torch.Generator().manual_seed(0))
    assert out.images_rgb.shape == (1, 2, 3, 4, 4)
    weight = out.images_weight
    assert ((weight >= 0) & (weight <= 1 + 1e-6)).all()  # accumulated opacity
