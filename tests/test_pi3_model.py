"""π³ / Pi3X conformance: the tiny fixtures (the authors' reference outputs) from the raw pictures
through our preprocessing, the full-size manifests, permutation equivariance, other
configurations and the analytic FLOP count."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.models.pi3 import Pi3, Pi3Config, Pi3InputError, pi3_flops, preprocess_images, target_size
from core.models.pi3.modeling_pi3 import MULTIMODAL_PREFIXES
from tests.conftest import load_reference, prefixed

FIXTURES = Path(__file__).parent / "fixtures"
# README "π³ (Pi3)" / "Pi3X", Tolerances observed: float64 moves outputs and intermediates by
# <= 5.4e-6, attention order by <= 4.8e-6; "rtol 1e-4 with atol 1e-5 is safe for every output and
# intermediate". A convention error moves them by >= 1.4e-3 (FFN input), 0.1 (positions).
TOL = dict(rtol=1e-4, atol=1e-5)
OUTPUTS = ("points", "local_points", "conf", "camera_poses", "rays", "metric")
SCENARIOS = ("plain", "cond", "partial")

pytestmark = pytest.mark.usefixtures("one_thread")


def _load(name: str, variant: str, **changes):
    tensors, metadata = load_reference(name)
    config = Pi3Config.from_dict(json.loads(metadata["config"]), variant)
    model = Pi3(dataclasses.replace(config, **changes)).eval()
    state = prefixed(tensors, "weights.")
    if not model.config.multimodal and variant == "pi3x":
        state = {k: v for k, v in state.items() if not k.startswith(MULTIMODAL_PREFIXES)}
    model.load_state_dict(state, strict=True)
    return model, tensors, json.loads(metadata["config"])


@pytest.fixture(scope="module")
def pi3():
    return _load("pi3_tiny_reference.safetensors", "pi3")


@pytest.fixture(scope="module")
def pi3x():
    return _load("pi3x_tiny_reference.safetensors", "pi3x")


def _raw(tensors) -> list[np.ndarray]:
    return [tensors[f"input.raw_rgb.{i}"].numpy() for i in range(3)]


def _compare(out, tensors, prefix: str) -> int:
    checked = 0
    for key in sorted(prefixed(tensors, prefix)):
        expected = tensors[prefix + key]
        got = getattr(out, key) if key in OUTPUTS else out.intermediates[key]
        assert got.shape == expected.shape, key
        if expected.dtype in (torch.bool, torch.int64):
            assert torch.equal(got.cpu(), expected), key
        else:
            torch.testing.assert_close(got, expected, **TOL, msg=key)
        checked += 1
    return checked


def test_config_from_fixture_metadata_and_published_defaults(pi3, pi3x):
    for (_, _, values), variant in ((pi3, "pi3"), (pi3x, "pi3x")):
        config = Pi3Config.from_dict(values, variant)
        assert config == Pi3Config.tiny(variant)
        assert set(config.extra) == {"views", "raw_hw", "pixel_limit"}
    manifest = json.loads((FIXTURES / "pi3x_state_dict_manifest.json").read_text())
    full = Pi3Config(variant="pi3x")
    for key, value in manifest["published_sizes"].items():
        assert getattr(full, key) == (tuple(value) if isinstance(value, list) else value), key
    assert full.inject_after == {1: 0, 9: 1, 17: 2, 25: 3, 33: 4}
    assert Pi3Config.tiny("pi3x").inject_after == {1: 0, 9: 1}      # README: after blocks 1 and 9


def test_preprocessing_reproduces_the_reference_tensor(pi3, pi3x):
    for model, tensors, values in (pi3, pi3x):
        images, scales = preprocess_images(_raw(tensors), values["pixel_limit"])
        assert torch.equal(images[None], tensors["input.images"])    # README: PIL reproduces it exactly
        h, w = images.shape[-2:]
        assert scales == [(w / 100, h / 75)] * 3
    assert target_size(100, 75, 4000) == (70, 56) and target_size(100, 75, 2500) == (56, 42)
    # the published limit on 640x480: s = 0.911, k = round(41.65) = 42, m = round(31.24) = 31;
    # 588·434 = 255,192 > 255,000 and k/m = 1.355 > 4/3, so k = 41: 574 x 434
    assert target_size(640, 480) == (574, 434)


def test_pi3_reproduces_every_recorded_output_from_raw_pictures(pi3):
    model, tensors, values = pi3
    images, _ = preprocess_images(_raw(tensors), values["pixel_limit"])
    with torch.inference_mode():
        out = model(images, return_intermediates=True)
    assert out.rays is None and out.metric is None
    assert _compare(out, tensors, "output.") == 10


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pi3x_reproduces_every_recorded_output(pi3x, scenario):
    model, tensors, values = pi3x
    images, _ = preprocess_images(_raw(tensors), values["pixel_limit"])
    kwargs = {"plain": {},
              "cond": dict(intrinsics=tensors["input.intrinsics"], poses=tensors["input.poses"],
                           depths=tensors["input.depths"]),
              "partial": dict(rays=tensors["input.rays"], poses=tensors["input.poses"],
                              mask_add_ray=tensors["input.mask_add_ray"],
                              mask_add_pose=tensors["input.mask_add_pose"])}[scenario]
    with torch.inference_mode():
        out = model(images[None], return_intermediates=True, **kwargs)
    assert _compare(out, tensors, f"output.{scenario}.") == 18   # 6 outputs, 12 intermediates


def test_pi3x_without_conditioning_modules_equals_plain(pi3x):
    """README: ``plain`` is identical to the model after ``disable_multimodal()``."""
    _, tensors, _ = pi3x
    lean, _, _ = _load("pi3x_tiny_reference.safetensors", "pi3x", multimodal=False)
    assert not any(k.startswith(MULTIMODAL_PREFIXES) for k in lean.state_dict())
    with torch.inference_mode():
        out = lean(tensors["input.images"])
    for key in ("points", "conf", "camera_poses", "metric"):
        torch.testing.assert_close(getattr(out, key), tensors[f"output.plain.{key}"], **TOL)
    with pytest.raises(Pi3InputError, match="images only"):
        lean(tensors["input.images"], poses=tensors["input.poses"])


def test_bad_conditioning_is_refused_with_a_clear_message(pi3x):
    model, tensors, _ = pi3x
    images = tensors["input.images"]
    with pytest.raises(Pi3InputError, match=r"intrinsics must be \[1,3,3,3\].*got \[1, 2, 3, 3\]"):
        model(images, intrinsics=tensors["input.intrinsics"][:, :2])
    poses = tensors["input.poses"].clone()
    poses[0, 1, 0, 3] = float("nan")
    with pytest.raises(Pi3InputError, match="poses has 1 non-finite"):
        model(images, poses=poses)
    with pytest.raises(Pi3InputError, match=r"mask_add_pose must be \[B,S\]"):
        model(images, poses=tensors["input.poses"], mask_add_pose=torch.ones(3, dtype=torch.bool))
    with pytest.raises(Pi3InputError, match="multiples of the patch size"):
        model(torch.rand(1, 2, 3, 40, 56))
    with pytest.raises(Pi3InputError, match="at least one view"):
        model(torch.rand(1, 0, 3, 42, 56))


@pytest.mark.parametrize("variant", ("pi3", "pi3x"))
def test_full_size_names_and_shapes_equal_the_manifest(variant):
    manifest = json.loads((FIXTURES / f"{variant}_state_dict_manifest.json").read_text())
    with torch.device("meta"):
        model = Pi3(Pi3Config(variant=variant))
    got = {k: list(v.shape) for k, v in model.state_dict(keep_vars=True).items()}
    assert sorted(set(got) ^ set(manifest["tensors"])) == []
    assert {k: v for k, v in got.items() if manifest["tensors"][k] != v} == {}
    assert len(got) == manifest["num_tensors"]
    assert model.parameter_count == manifest["num_parameters"]          # buffers are not parameters
    assert sorted(n for n, _ in model.named_buffers()) == sorted(manifest["buffers"])
    if variant == "pi3x":
        with torch.device("meta"):
            lean = Pi3(Pi3Config(variant="pi3x", multimodal=False))
        dropped = set(manifest["tensors"]) - set(lean.state_dict())
        assert all(k.startswith(tuple(manifest["multimodal_prefixes"])) for k in dropped)
        assert len(dropped) == manifest["multimodal_num_tensors"]
        assert model.parameter_count - lean.parameter_count == manifest["multimodal_num_parameters"]


def test_permuting_the_views_permutes_pi3s_outputs(pi3):
    """No reference view: outputs of a permuted input are the permuted outputs, up to the common
    world frame (points and poses are compared in view 0's camera: one similarity apart)."""
    model, tensors, _ = pi3
    images = tensors["input.images"]
    order = [2, 0, 1]
    with torch.inference_mode():
        base, permuted = model(images), model(images[:, order])
    # README: permuting the views permutes the outputs within 4.3e-6
    for key in ("points", "local_points", "conf", "camera_poses"):
        torch.testing.assert_close(getattr(permuted, key), getattr(base, key)[:, order], **TOL)


def test_pi3x_conditioning_is_permutation_consistent_for_intrinsics(pi3x):
    """Per-view conditions move with their views (rays/intrinsics and depth carry no order)."""
    model, tensors, _ = pi3x
    order = [1, 2, 0]
    kwargs = dict(intrinsics=tensors["input.intrinsics"], depths=tensors["input.depths"])
    with torch.inference_mode():
        base = model(tensors["input.images"], **kwargs)
        permuted = model(tensors["input.images"][:, order],
                         **{k: v[:, order] for k, v in kwargs.items()})
    for key in ("local_points", "conf", "rays", "metric"):
        expected = getattr(base, key) if key == "metric" else getattr(base, key)[:, order]
        torch.testing.assert_close(getattr(permuted, key), expected, **TOL)


@pytest.mark.parametrize("variant", ("pi3", "pi3x"))
def test_another_configuration_runs_on_five_portrait_views(variant):
    """Other widths, depths and head counts; 5 views; portrait 70x42 (5x3 patches)."""
    config = Pi3Config(variant=variant, embed_dim=48, enc_depth=1, enc_heads=3, dec_depth=3,
                       dec_heads=3, head_embed_dim=24, head_heads=3, head_depth=1, head_out_dim=16,
                       cam_dim=12, pose_heads=2, conv_upsample=(8, 8), conv_last_channels=8,
                       conv_res_blocks=1, metric_embed_dim=8, metric_heads=2, metric_depth=1,
                       metric_out_dim=8, img_size=56)
    torch.manual_seed(0)
    model = Pi3(config).eval()
    kwargs = {}
    if variant == "pi3x":
        poses = torch.eye(4).repeat(1, 5, 1, 1)
        poses[0, :, 0, 3] = torch.arange(5.0)
        kwargs = dict(poses=poses, intrinsics=torch.tensor([[40.0, 0, 21], [0, 40, 35], [0, 0, 1]])
                      .expand(1, 5, 3, 3))
    with torch.inference_mode():
        out = model(torch.rand(5, 3, 70, 42), **kwargs)
    assert out.points.shape == out.local_points.shape == (1, 5, 70, 42, 3)
    assert out.conf.shape == (1, 5, 70, 42, 1) and out.camera_poses.shape == (1, 5, 4, 4)
    assert (out.local_points[..., 2] > 0).all()                       # z = exp(·)
    rotations = out.camera_poses[0, :, :3, :3]
    torch.testing.assert_close(rotations @ rotations.transpose(1, 2), torch.eye(3).expand(5, 3, 3),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotations), torch.ones(5), atol=1e-5, rtol=0)
    if variant == "pi3x":
        assert out.metric.shape == (1,) and (out.metric > 0).all()
        torch.testing.assert_close(out.rays.norm(dim=-1), torch.ones(1, 5, 70, 42))
    with pytest.raises(ValueError, match="divisible by 4"):
        Pi3Config(embed_dim=30, enc_heads=3)


@pytest.mark.parametrize("variant", ("pi3", "pi3x"))
def test_flop_count_matches_torch_flop_counter(variant):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    config = Pi3Config.tiny(variant)
    torch.manual_seed(0)
    model = Pi3(config).eval()
    cases = [(1, 56, 70, (), {}), (3, 42, 56, (), {})]
    if variant == "pi3x":
        poses = torch.eye(4).repeat(1, 3, 1, 1)
        poses[0, :, 0, 3] = torch.arange(3.0)
        cases.append((3, 42, 56, ("intrinsics", "poses", "depth"), dict(
            intrinsics=torch.tensor([[30.0, 0, 28], [0, 30, 21], [0, 0, 1]]).expand(1, 3, 3, 3),
            poses=poses, depths=torch.rand(1, 3, 42, 56))))
    for views, h, w, given, kwargs in cases:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(torch.rand(1, views, 3, h, w), **kwargs)   # math attention: matmuls counted
        assert pi3_flops(views, h, w, config, given)["total"] == counter.get_total_flops()
    full = pi3_flops(8, 518, 518, Pi3Config(variant=variant))
    assert full["decoder_all_attention"] == pytest.approx(
        4 * pi3_flops(4, 518, 518, Pi3Config(variant=variant))["decoder_all_attention"])
