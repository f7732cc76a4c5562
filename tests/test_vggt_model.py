"""VGGT conformance: the tiny fixture (authors' reference outputs) and the VGGT-1B manifest."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from core.geometry_torch import quaternion_to_matrix
from core.models.vggt import (VGGT, VGGTConfig, extrinsics_intrinsics_to_pose_encoding,
                              pose_encoding_to_extrinsics_intrinsics)
from core.models.vggt.flops import vggt_flops
from tests.conftest import load_vggt_reference

FIXTURES = Path(__file__).parent / "fixtures"
MANIFEST = FIXTURES / "vggt_1b_state_dict_manifest.json"
OUTPUTS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")
# One forward pass, on any CPU and thread count: the README's comparison for the camera, depth and
# point outputs ("VGGT tracking head", Tolerances observed: rtol 1e-4, atol 1e-5).
TOL = dict(rtol=1e-4, atol=1e-5)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fixture():
    return load_vggt_reference()


@pytest.fixture(scope="module")
def tiny(fixture):
    config, tensors = fixture
    model = VGGT(VGGTConfig(**config)).eval()
    state = {k[len("weights."):]: v for k, v in tensors.items() if k.startswith("weights.")}
    model.load_state_dict(state, strict=True)
    return model


@pytest.fixture(scope="module")
def reference_run(tiny, fixture):
    with torch.inference_mode():
        return tiny(fixture[1]["input.images"])


def test_config_accepts_fixture_keys_and_defaults_are_vggt_1b(fixture):
    config = VGGTConfig(**fixture[0])     # this fixture predates the track keys (defaults kept)
    assert config == dataclasses.replace(VGGTConfig.tiny(), **{
        f.name: f.default for f in dataclasses.fields(VGGTConfig) if f.name.startswith("track_")})
    full = VGGTConfig()
    assert (full.embed_dim, full.depth, full.num_heads, full.dino_depth) == (1024, 24, 16, 24)
    assert full.dpt_intermediate_layer_idx == (4, 11, 17, 23)
    assert VGGTConfig.from_dict({**fixture[0], "unknown_key": 1}).extra == {"unknown_key": 1}


def test_tiny_model_reproduces_reference_outputs(reference_run, fixture):
    tensors = fixture[1]
    for key in OUTPUTS:
        expected = tensors[f"output.{key}"]
        assert getattr(reference_run, key).shape == expected.shape, key
        torch.testing.assert_close(getattr(reference_run, key), expected, **TOL, msg=key)


def test_extrinsics_and_intrinsics_match_reference(reference_run, fixture):
    tensors = fixture[1]
    hw = tuple(tensors["input.images"].shape[-2:])
    extrinsic, intrinsic = pose_encoding_to_extrinsics_intrinsics(reference_run.pose_enc, hw)
    # a closed-form map of pose_enc (quaternion -> matrix, FoV -> focal): pose_enc's tolerance
    torch.testing.assert_close(extrinsic, tensors["output.extrinsic"], **TOL)
    torch.testing.assert_close(intrinsic, tensors["output.intrinsic"], **TOL)
    homogeneous, _ = pose_encoding_to_extrinsics_intrinsics(reference_run.pose_enc, hw, True)
    assert homogeneous.shape == (1, 3, 4, 4)
    torch.testing.assert_close(homogeneous[..., :3, :], extrinsic)
    assert torch.equal(homogeneous[..., 3, :], torch.tensor([0.0, 0, 0, 1]).expand(1, 3, 4))


def test_unbatched_input_chunking_and_head_subsets_agree(tiny, fixture, reference_run):
    images = fixture[1]["input.images"]
    with torch.inference_mode():
        unbatched = tiny(images[0], frames_chunk_size=1)
        depth_only = tiny(images, heads=("depth",))
        camera_only = tiny(images, heads=("camera",))
    # the same forward pass in other batch layouts: another BLAS may block them differently, so the
    # per-evaluation tolerance (a chunking bug mixes frames and moves outputs by > 1e-2)
    for key in OUTPUTS:
        torch.testing.assert_close(getattr(unbatched, key), getattr(reference_run, key), **TOL)
    assert {k for k in OUTPUTS if getattr(depth_only, k) is not None} == {"depth", "depth_conf"}
    assert {k for k in OUTPUTS if getattr(camera_only, k) is not None} == {"pose_enc"}
    torch.testing.assert_close(depth_only.depth, reference_run.depth, **TOL)
    torch.testing.assert_close(camera_only.pose_enc, reference_run.pose_enc, **TOL)


def test_aggregator_keeps_only_requested_layers(tiny, fixture):
    images = fixture[1]["input.images"]
    with torch.inference_mode():
        everything = tiny.aggregator(images)
        lean = tiny.aggregator(images, keep_layers={1, 3})
    assert sorted(everything) == [0, 1, 2, 3] and sorted(lean) == [1, 3]
    assert everything[3].shape == (1, 3, 25, 64)           # [B, S, P, 2C]
    for layer in (1, 3):
        assert torch.equal(lean[layer], everything[layer])
    full = VGGT.__new__(VGGT)
    full.config = VGGTConfig()
    assert VGGT.layers_needed(full, ("camera",)) == {23}
    assert VGGT.layers_needed(full, ("depth", "camera")) == {4, 11, 17, 23}


def test_configuration_outside_the_fixture_runs_on_portrait_views():
    """Other width, depths, heads, registers, patch (7) and position grid (4x4); portrait 35x21."""
    config = VGGTConfig(img_size=28, patch_size=7, embed_dim=24, depth=2, num_heads=3,
                        num_register_tokens=2, dino_depth=1, dino_num_heads=3, camera_trunk_depth=1,
                        camera_num_heads=3, camera_iterations=2, dpt_features=8,
                        dpt_out_channels=(4, 8, 8, 8), dpt_intermediate_layer_idx=(0, 0, 1, 1))
    torch.manual_seed(0)
    model = VGGT(config).eval()
    with torch.inference_mode():
        out = model(torch.rand(1, 2, 3, 35, 21))
    assert out.pose_enc.shape == (1, 2, 9)
    assert out.depth.shape == (1, 2, 35, 21, 1) and out.world_points.shape == (1, 2, 35, 21, 3)
    assert out.depth_conf.shape == out.world_points_conf.shape == (1, 2, 35, 21)
    assert (out.depth > 0).all() and (out.depth_conf > 1).all()  # exp and 1 + exp activations
    _, intrinsic = pose_encoding_to_extrinsics_intrinsics(out.pose_enc, (35, 21))
    assert intrinsic[..., 0, 2].eq(10.5).all() and intrinsic[..., 1, 2].eq(17.5).all()  # (W/2, H/2)


def test_bad_inputs_raise_value_error(tiny):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        tiny(torch.rand(2, 3, 50, 70))
    with pytest.raises(ValueError, match=r"\[S,3,H,W\]"):
        tiny(torch.rand(2, 4, 56, 70))
    with pytest.raises(ValueError, match="at least one view"):
        tiny(torch.rand(1, 0, 3, 56, 70))
    with pytest.raises(ValueError, match="unknown head"):
        tiny(torch.rand(1, 3, 56, 70), heads=("track",))


def test_full_size_model_matches_published_manifest():
    manifest = json.loads(MANIFEST.read_text())
    expected = {k: tuple(v) for k, v in manifest["tensors"].items()
                if not k.startswith("track_head.")}
    with torch.device("meta"):
        model = VGGT(VGGTConfig())
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(got) ^ set(expected)) == []
    assert {k: v for k, v in got.items() if expected[k] != v} == {}
    track = sum(torch.Size(v).numel() for k, v in manifest["tensors"].items()
                if k.startswith("track_head."))
    assert model.parameter_count == manifest["num_parameters"] - track   # built without the head
    with torch.device("meta"):
        assert VGGT(VGGTConfig(), with_track_head=True).parameter_count == \
            manifest["num_parameters"] == 1_256_537_516


def test_pose_encoding_round_trip():
    generator = torch.Generator().manual_seed(0)
    quat = torch.randn(5, 4, generator=generator)
    rotation = quaternion_to_matrix(quat)
    torch.testing.assert_close(rotation @ rotation.transpose(-1, -2), torch.eye(3).expand(5, 3, 3),
                               atol=1e-5, rtol=0)
    encoding = torch.cat((torch.randn(5, 3, generator=generator), quat / quat.norm(dim=-1,
                          keepdim=True), torch.rand(5, 2, generator=generator) + 0.5), -1)
    extrinsics, intrinsics = pose_encoding_to_extrinsics_intrinsics(encoding, (392, 518))
    back = extrinsics_intrinsics_to_pose_encoding(extrinsics, intrinsics, (392, 518))
    sign = torch.sign(back[:, 6:7] * encoding[:, 6:7])     # q and -q are the same rotation
    torch.testing.assert_close(back[:, 3:7] * sign, encoding[:, 3:7], atol=1e-5, rtol=0)
    torch.testing.assert_close(back[:, [0, 1, 2, 7, 8]], encoding[:, [0, 1, 2, 7, 8]],
                               atol=1e-5, rtol=0)


def test_flop_count_matches_torch_flop_counter():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    config = VGGTConfig.tiny()
    model = VGGT(config).eval()
    for views, h, w in ((1, 56, 70), (3, 42, 56)):
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(torch.rand(views, 3, h, w))      # math attention: its matmuls are counted
        assert vggt_flops(views, h, w, config)["total"] == counter.get_total_flops()
    full = vggt_flops(8, 518, 518)
    assert full["global_attention"] == pytest.approx(4 * vggt_flops(4, 518, 518)["global_attention"])


def test_grid_embedding_is_the_per_pixel_sine_cosine_of_the_uv_grid():
    """The separable construction equals the embedding computed pixel by pixel from the uv grid
    (sin/cos in float64 at frequencies 100^(-j/(C/4)), u in the first half of the channels, v in the
    second, times 0.1), bit for bit, and adding it in place of a table changes no bit either."""
    import math

    from core.models.vggt.dpt_head import add_grid_embedding, grid_embedding, uv_grid

    height, width, channels = 5, 7, 8
    grid = uv_grid(width, height, width / height, torch.float32, "cpu")
    quarter = channels // 4
    expected = torch.empty(channels, height, width)
    for y in range(height):
        for x in range(width):
            for half, coordinate in enumerate(grid[y, x].tolist()):
                for j in range(quarter):
                    angle = coordinate * (1.0 / 100.0 ** (j / quarter))
                    expected[half * 2 * quarter + j, y, x] = float(torch.tensor(math.sin(angle)).float()) * 0.1
                    expected[half * 2 * quarter + quarter + j, y, x] = float(torch.tensor(math.cos(angle)).float()) * 0.1
    table = grid_embedding(height, width, channels, width / height, torch.float32, "cpu")
    assert table.shape == (channels, height, width)
    # expected rounds sin/cos x 0.1 once in float64, the model twice in float32: within 2 ulp of 0.1
    torch.testing.assert_close(table, expected, rtol=0, atol=2 * 7.5e-9)
    features = torch.randn(2, channels, height, width)
    assert torch.equal(add_grid_embedding(features, width / height), features + table)
    features.requires_grad_(True)
    summed = add_grid_embedding(features, width / height)
    summed.sum().backward()
    assert torch.equal(summed, features + table) and torch.equal(features.grad, torch.ones_like(features))
    with pytest.raises(ValueError, match="divisible by 4"):
        grid_embedding(3, 3, 6, 1.0, torch.float32, "cpu")


def test_rotary_table_matches_the_rotate_half_formula_with_and_without_autograd():
    """RoPE as written in the paper's reference (t cos + rotate_half(t) sin per axis half, with
    rotate_half pairing channel j with j + d/4) against the table's fused in-place form; the
    autograd path is the formula itself, and the repeated table rotates each copy alike."""
    from core.models.vggt.layers import RotaryTable

    generator = torch.Generator().manual_seed(0)
    positions = torch.randint(0, 9, (11, 2), generator=generator)
    head_dim = 16
    table = RotaryTable(positions, head_dim, 100.0)
    t = torch.randn(2, 3, 11, head_dim, generator=generator)
    inv_freq = 1.0 / (100.0 ** (torch.arange(0, head_dim // 2, 2).float() / (head_dim // 2)))

    def rotate(x, pos):
        angles = pos[:, None].float() * inv_freq[None]
        cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
        first, second = x.chunk(2, dim=-1)
        return x * cos + torch.cat((-second, first), dim=-1) * sin

    expected = torch.cat((rotate(t[..., : head_dim // 2], positions[:, 0]),
                          rotate(t[..., head_dim // 2:], positions[:, 1])), dim=-1)
    # one product rounded once (fused multiply-add) instead of twice: |t| |sin| ulp at most
    tolerance = 2 * float(t.abs().max()) * torch.finfo(torch.float32).eps
    torch.testing.assert_close(table.apply(t), expected, rtol=0, atol=tolerance)
    with torch.enable_grad():
        leaf = t.clone().requires_grad_(True)
        torch.testing.assert_close(table.apply(leaf), expected, rtol=0, atol=tolerance)
    doubled = table.repeat(2)
    twice = torch.cat((t, t), dim=2)
    torch.testing.assert_close(doubled.apply(twice), torch.cat((expected, expected), dim=2), rtol=0, atol=tolerance)
