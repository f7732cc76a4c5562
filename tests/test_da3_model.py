"""Depth Anything 3 any-view conformance against the reference fixture (tiny configuration),
the published checkpoints' names and shapes, and another configuration of the family.

Tolerances (tests/fixtures/README section "Depth Anything 3"): model outputs rtol 1e-4 with atol
1e-5 (2 threads, another attention path or float64 move them by <= 1.7e-5 absolute, <= 4.7e-6
relative); the ray decoder fed the stored rays and draws atol 1e-4 (extrinsics) / rtol 1e-3
(intrinsics), end to end 1e-3 / 1e-2 (it amplifies 1e-6 ray noise to 3.9e-5 / 3.7e-4).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.models.da3 import DA3Config, DepthAnything3
from core.models.da3.backbone import reference_view
from core.models.da3.checkpoints import model_from_state_dict, tied_aliases
from core.models.da3.config import UnsupportedDA3Model
from core.models.da3.processing import (align_to_known_poses, denormalize,
                                        normalize_extrinsics, preprocess_images, scale_intrinsics)
from core.models.da3.raypose import candidate_count, ransac_draws, rays_to_cameras
from core.models.weights import BadCheckpoint
from tests.conftest import FIXTURES, load_reference, prefixed

pytestmark = pytest.mark.usefixtures("one_thread")

OUT = {"rtol": 1e-4, "atol": 1e-5}
OUTPUTS = ("depth", "depth_conf", "ray", "ray_conf", "pose_enc", "extrinsics", "intrinsics")


@pytest.fixture(scope="module")
def reference():
    return load_reference("da3_tiny_reference.safetensors")


@pytest.fixture(scope="module")
def model(reference):
    tensors, metadata = reference
    config = DA3Config.from_dict(json.loads(metadata["config"]))
    return model_from_state_dict(prefixed(tensors, "weights."), config)


@pytest.fixture(scope="module")
def images(reference):
    tensors, metadata = reference
    x, transforms = preprocess_images(list(tensors["input.raw_rgb"].numpy()),
                                      json.loads(metadata["input"])["process_res"])
    return x[None], transforms


@pytest.fixture(scope="module")
def default_run(model, images):
    with torch.no_grad():
        return model(images[0])


def close(actual, expected, **tol):
    torch.testing.assert_close(actual.float(), expected.float(), **(tol or OUT))


def test_tiny_configuration_is_the_fixtures(reference, model):
    tensors, metadata = reference
    assert DA3Config.from_dict(json.loads(metadata["config"])).to_dict() == DA3Config.tiny().to_dict()
    assert sum(p.numel() for p in model.parameters()) == int(metadata["num_parameters"])
    # the file lacks the tied aliases; the strict loader filled them from level 0
    aliases = {k[len("weights."):]: v[len("weights."):]
               for k, v in json.loads(metadata["tied_aliases"]).items()}
    assert aliases == tied_aliases()
    state = model.state_dict()
    for alias, stored in aliases.items():
        assert f"weights.{alias}" not in tensors
        assert state[alias].data_ptr() == state[stored].data_ptr()


def test_preprocessing_reproduces_the_api_from_raw_pictures(reference, images):
    tensors, _ = reference
    x, transforms = images
    assert transforms[0].original_hw == (90, 120) and transforms[0].network_hw == (56, 70)
    torch.testing.assert_close(x, tensors["input.images"], rtol=0, atol=0)
    np.testing.assert_array_equal(denormalize(x[0]), tensors["api.processed_images"].numpy())


def test_default_inference_matches_every_recorded_output(reference, default_run):
    tensors, _ = reference
    out = default_run
    for name in OUTPUTS:
        close(getattr(out, name), tensors[f"output.{name}"])
    assert out.ray.shape[2:4] == (32, 40)            # 8 x the patch grid, not H x W
    for k in range(4):
        close(out.feats[k], tensors[f"output.backbone.feat.{k}"])
        close(out.cam_tokens[k], tensors[f"output.backbone.cam_token.{k}"])
    for i in (0, 9):                                  # feat_layer_9: reordered views (quirk)
        close(out.aux[i], tensors[f"output.aux.feat_layer_{i}"])


def test_reference_view_selection(reference, default_run):
    tensors, metadata = reference
    close(default_run.ref_cls_tokens, tensors["ref_select.cls_tokens"])
    assert int(default_run.ref_index) == int(tensors["ref_select.index"]) == 2
    tokens = tensors["ref_select.cls_tokens"]
    for strategy in ("first", "middle", "saddle_balanced"):
        assert int(reference_view(tokens, strategy)) == int(tensors[f"ref_select.index_{strategy}"])
    from core.models.da3.backbone import balance_scores
    scores = json.loads(metadata["ref_select"])["balance_scores_recomputed"]
    np.testing.assert_allclose(balance_scores(tokens)[0].numpy(), scores, rtol=1e-5)


def test_ray_decoder_replays_the_stored_draws(reference):
    tensors, _ = reference
    cams = rays_to_cameras(tensors["output.ray"], tensors["output.ray_conf"], (56, 70),
                           draws=tensors["raypose.ransac_sample_idx"])
    close(cams.extrinsics, tensors["raypose.extrinsics"], rtol=0, atol=1e-4)
    close(cams.intrinsics, tensors["raypose.intrinsics"], rtol=1e-3, atol=0)
    synth = rays_to_cameras(tensors["raypose_synth.ray"], tensors["raypose_synth.ray_conf"],
                            (56, 70), draws=tensors["raypose_synth.ransac_sample_idx"])
    close(synth.extrinsics, tensors["raypose_synth.extrinsics"], rtol=0, atol=1e-4)
    close(synth.intrinsics, tensors["raypose_synth.intrinsics"], rtol=1e-3, atol=0)


def test_ray_decoder_recovers_known_cameras_with_fresh_draws(reference):
    """Synthetic rays of known cameras: any draws recover them (centres 1e-3, focals 2e-4)."""
    tensors, _ = reference
    n_sample = candidate_count(32 * 40)
    assert n_sample == json.loads(reference[1]["ransac"])["n_sample"]
    generator = torch.Generator().manual_seed(123)
    cams = rays_to_cameras(tensors["raypose_synth.ray"], tensors["raypose_synth.ray_conf"],
                           (56, 70), generator=generator)
    assert cams.draws.shape == (100, 8) and int(cams.draws.max()) < n_sample
    again = rays_to_cameras(tensors["raypose_synth.ray"], tensors["raypose_synth.ray_conf"],
                            (56, 70), draws=cams.draws)
    torch.testing.assert_close(again.extrinsics, cams.extrinsics, rtol=0, atol=0)  # replayable
    c2w_r = cams.extrinsics[0, :, :, :3].transpose(1, 2)
    centres = -(c2w_r @ cams.extrinsics[0, :, :, 3:])[..., 0]
    torch.testing.assert_close(centres, tensors["raypose_synth.gt.center"], rtol=0, atol=1e-3)
    torch.testing.assert_close(c2w_r, tensors["raypose_synth.gt.R_c2w"], rtol=0, atol=1e-3)
    focal = torch.stack((cams.intrinsics[0, :, 0, 0] / 35, cams.intrinsics[0, :, 1, 1] / 28), -1)
    torch.testing.assert_close(focal, tensors["raypose_synth.gt.focal"], rtol=2e-4, atol=0)
    close(cams.extrinsics, tensors["raypose_synth.extrinsics"], rtol=0, atol=2e-4)
    close(cams.intrinsics, tensors["raypose_synth.intrinsics"], rtol=1e-3, atol=0)


def test_ray_pose_end_to_end(reference, model, images):
    tensors, _ = reference
    with torch.no_grad():
        out = model(images[0], use_ray_pose=True, ransac_draws=tensors["raypose.ransac_sample_idx"])
    assert out.pose_enc is None
    torch.testing.assert_close(out.ransac_draws, tensors["raypose.ransac_sample_idx"])
    close(out.extrinsics, tensors["raypose.extrinsics"], rtol=0, atol=1e-3)
    close(out.intrinsics, tensors["raypose.intrinsics"], rtol=1e-2, atol=0)


def test_pose_conditioned_inference_and_the_api_alignment(reference, model, images):
    tensors, _ = reference
    raw_k = tensors["cond.input.raw_intrinsics"].numpy()
    k_net = np.stack([scale_intrinsics(k, (90, 120), (56, 70), 70) for k in raw_k])
    np.testing.assert_allclose(k_net, tensors["cond.input.intrinsics"][0].numpy(), rtol=1e-6)
    normalised = normalize_extrinsics(tensors["cond.input.extrinsics"])
    close(normalised, tensors["cond.input.extrinsics_normalized"], rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        out = model(images[0], normalised, tensors["cond.input.intrinsics"])
    assert out.ref_index is None                     # no reference selection with cameras
    close(out.cam_enc_pose_encoding, tensors["cond.output.cam_enc_pose_encoding"])
    close(out.cam_enc_tokens, tensors["cond.output.cam_token"])
    for name in OUTPUTS:
        close(getattr(out, name), tensors[f"cond.output.{name}"])
    for k in range(4):
        close(out.feats[k], tensors[f"cond.output.backbone.feat.{k}"])
        close(out.cam_tokens[k], tensors[f"cond.output.backbone.cam_token.{k}"])
    for i in (0, 9):
        close(out.aux[i], tensors[f"cond.output.aux.feat_layer_{i}"])
    alignment = align_to_known_poses(tensors["cond.input.raw_extrinsics"].numpy(),
                                     out.extrinsics[0].numpy())
    np.testing.assert_allclose(alignment.scale, tensors["cond.api.umeyama_scale"].numpy()[0],
                               rtol=1e-5)
    np.testing.assert_allclose(alignment.rotation, tensors["cond.api.umeyama_rotation"].numpy(),
                               atol=1e-4)
    np.testing.assert_allclose(alignment.translation,
                               tensors["cond.api.umeyama_translation"].numpy(), atol=1e-5)
    np.testing.assert_allclose(alignment.aligned_extrinsics,
                               tensors["cond.api.aligned_extrinsics"].numpy(), atol=1e-4)
    np.testing.assert_allclose(out.depth[0].numpy() / alignment.scale,
                               tensors["cond.api.depth"].numpy(), rtol=2e-5)


@pytest.mark.parametrize("variant", ["small", "base"])
def test_full_size_names_and_shapes_equal_the_manifest(variant):
    manifest = json.loads((FIXTURES / f"da3_{variant}_state_dict_manifest.json").read_text())
    config = DA3Config.small() if variant == "small" else DA3Config.base()
    assert DA3Config.from_hub_config(manifest["config"]).to_dict() == config.to_dict()
    with torch.device("meta"):
        model = DepthAnything3(config)
    state = model.state_dict()
    stored = {k: list(v.shape) for k, v in state.items() if k not in manifest["tied_aliases"]}
    assert stored == {k: list(v) for k, v in manifest["tensors"].items()}
    assert len(state) == manifest["num_state_dict_entries"] and manifest["tied_aliases"] == tied_aliases()
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"]
    for module, count in manifest["parameters_by_module"].items():
        sub = model.get_submodule(module)
        assert sum(p.numel() for p in sub.parameters()) == count, module


def test_unsupported_checkpoints_are_refused_by_name():
    with pytest.raises(UnsupportedDA3Model, match="DA3-SMALL and DA3-BASE"):
        DA3Config.from_hub_config({"model_name": "da3-giant"})
    large = {"net": {"name": "vitl"}, "head": {}, "cam_dec": {}}
    with pytest.raises(UnsupportedDA3Model, match="out of scope"):
        DA3Config.from_hub_config(large)
    assert DA3Config.from_hub_config({"model_name": "da3-base"}).embed_dim == 768


def test_a_checkpoint_of_another_model_names_the_offending_tensors():
    state = {"aggregator.patch_embed.cls_token": torch.zeros(1, 1, 32)}
    with pytest.raises(BadCheckpoint, match=r"missing \(e\.g\. model\..*unexpected \(e\.g\. "
                                            r"aggregator\.patch_embed\.cls_token"):
        model_from_state_dict(state, DA3Config.tiny())


def _random(config: DA3Config, seed: int = 0) -> DepthAnything3:
    torch.manual_seed(seed)
    model = DepthAnything3(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model


def test_another_configuration_five_portrait_views():
    config = DA3Config(embed_dim=48, num_heads=4, depth=7, alt_start=3, qknorm_start=4,
                       rope_start=3, out_layers=(1, 3, 5, 6), head_features=24,
                       head_out_channels=(12, 24, 48, 48), cam_enc_trunk_depth=1,
                       cam_enc_num_heads=3, export_feat_layers=(2,))
    model = _random(config)
    x = torch.randn(1, 5, 3, 98, 56)                 # portrait, 7 x 4 patches
    with torch.no_grad():
        out = model(x)
        first = model(x[:, [int(out.ref_index)] + [v for v in range(5) if v != int(out.ref_index)]],
                      ref_view_strategy="first")
    assert out.depth.shape == (1, 5, 98, 56) and out.ray.shape == (1, 5, 56, 32, 6)
    assert out.extrinsics.shape == (1, 5, 3, 4) and out.aux[2].shape == (1, 5, 7, 4, 48)
    assert torch.isfinite(out.depth).all() and (out.depth_conf >= 1).all()
    # the reference view goes first, then the outputs are put back in input order: running the
    # reordered views with "first" gives the same predictions, permuted
    order = [int(out.ref_index)] + [v for v in range(5) if v != int(out.ref_index)]
    torch.testing.assert_close(first.depth, out.depth[:, order], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first.extrinsics, out.extrinsics[:, order], rtol=1e-4, atol=1e-5)
    # known cameras go through the camera encoder (3 heads of width 16)
    e = torch.eye(4).repeat(1, 5, 1, 1)
    e[0, :, 0, 3] = torch.arange(5.0)
    k = torch.tensor([[60.0, 0, 28], [0, 60, 49], [0, 0, 1]]).repeat(1, 5, 1, 1)
    with torch.no_grad():
        conditioned = model(x, normalize_extrinsics(e), k)
    assert conditioned.cam_enc_tokens.shape == (1, 5, 48) and conditioned.ref_index is None
    assert not torch.allclose(conditioned.depth, out.depth)


def test_ransac_draws_come_from_the_generator():
    a = ransac_draws(384, torch.Generator().manual_seed(5))
    b = ransac_draws(384, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert a.shape == (100, 8) and all(len(set(row.tolist())) == 8 for row in a)
