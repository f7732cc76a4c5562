"""CroCo shared layers: RoPE, patch embedding, DPT/linear heads, activations, preprocessing.

(Their geometry, Umeyama and the focal estimate, is tested in tests/test_geometry_torch.py.)"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.models.croco.dpt import DPTHead, LinearHead, activate_pointmap, add_tied_aliases, tied_aliases
from core.models.croco.layers import PatchEmbed
from core.models.croco.preprocess import prepare_image
from core.models.croco.rope import RoPE2D, patch_positions
from tests.conftest import load_reference


def _tensors(name: str, prefix: str = "") -> dict:
    return {k: v for k, v in load_reference(name)[0].items() if k.startswith(prefix)}


def test_rope_matches_explicit_pairwise_rotations():
    torch.manual_seed(0)
    d = 16  # head width: halves of 8, pairs (j, j+4) for j < 4
    tokens = torch.randn(1, 2, 5, d)
    pos = torch.tensor([[[0, 0], [1, 3], [4, 2], [7, 7], [2, 9]]])
    out = RoPE2D(100.0)(tokens, pos)
    expected = tokens.clone()
    for n in range(5):
        for axis in (0, 1):  # first half rotated by y, second by x
            p = float(pos[0, n, axis])
            base = axis * d // 2
            for j in range(d // 4):
                angle = p * 100.0 ** (-4 * j / d)
                a, b = tokens[0, :, n, base + j], tokens[0, :, n, base + j + d // 4]
                expected[0, :, n, base + j] = a * math.cos(angle) - b * math.sin(angle)
                expected[0, :, n, base + j + d // 4] = b * math.cos(angle) + a * math.sin(angle)
    # The module's angles (up to 9 rad) are float32 products of a float32 pow: one ulp of pow or cos
    # on another CPU moves an angle by <= 1.1e-6 rad, a pair of norm <= 5 by <= 5.5e-6 (even where the
    # rotated value is ~0); a wrong pairing or frequency is off by > 0.1.
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_rope_attention_logits_depend_only_on_relative_position():
    torch.manual_seed(1)
    rope = RoPE2D(100.0)
    q, k = torch.randn(1, 1, 1, 32), torch.randn(1, 1, 1, 32)
    def logit(pq, pk):
        return (rope(q, torch.tensor([[pq]])) * rope(k, torch.tensor([[pk]]))).sum()
    # logits ~8 from |q||k| ~ 32: float32 angle rounding (<= 1.1e-6 rad) moves them by <= 4e-5
    torch.testing.assert_close(logit([2, 3], [5, 1]), logit([6, 7], [9, 5]), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(logit([2, 3], [5, 1]), logit([2, 3], [1, 5]))


def test_patch_positions_are_row_major_y_x():
    pos = patch_positions(2, 3, 4)
    assert pos.shape == (2, 12, 2)
    assert pos[0, 5].tolist() == [1, 1] and pos[1, 11].tolist() == [2, 3] and pos[0, 3].tolist() == [0, 3]


def test_patch_embed_any_aspect_and_rejects_non_multiples():
    embed = PatchEmbed(16, 3, 8)
    tokens, pos = embed(torch.zeros(1, 3, 64, 48))  # portrait stays portrait: 4 rows x 3 columns
    assert tokens.shape == (1, 12, 8) and pos[0, -1].tolist() == [3, 2]
    with pytest.raises(ValueError, match="multiple of the patch size"):
        embed(torch.zeros(1, 3, 50, 64))


def test_dpt_head_state_dict_has_tied_aliases_sharing_storage():
    head = DPTHead(dim_tokens=[8, 6, 6, 6], hooks=[0, 1, 2, 3], layer_dims=[4, 4, 4, 4], feature_dim=8, last_dim=4)
    sd = head.state_dict()
    aliases = tied_aliases(head)
    assert len(aliases) == 4
    for alias, stored in aliases.items():
        assert alias in sd and stored in sd and sd[alias].data_ptr() == sd[stored].data_ptr()
    stored_only = {k: v for k, v in sd.items() if k not in aliases}
    filled = add_tied_aliases(head, stored_only)
    assert set(filled) == set(sd)
    out = head([torch.randn(2, 12, 8)] + [torch.randn(2, 12, 6)] * 3, (48, 64))
    assert out.shape == (2, 4, 48, 64)


def test_linear_head_is_a_pixel_shuffle_of_each_token():
    head = LinearHead(dim=1, patch_size=2, num_channels=4)
    with torch.no_grad():
        head.proj.weight.copy_(torch.arange(16.0).reshape(16, 1))
        head.proj.bias.zero_()
    tokens = torch.tensor([[[1.0], [10.0]]])  # a 1x2 patch grid of a 2x4 image
    out = head([tokens], (2, 4))
    assert out.shape == (1, 4, 2, 4)
    for c in range(4):
        for dy in range(2):
            for dx in range(2):
                row = c * 4 + dy * 2 + dx
                assert out[0, c, dy, dx] == row * 1.0
                assert out[0, c, dy, 2 + dx] == row * 10.0


def test_activation_exp_depth_and_conf():
    raw = torch.randn(2, 4, 3, 5)
    pts, conf = activate_pointmap(raw)
    p = raw[:, :3].permute(0, 2, 3, 1)
    torch.testing.assert_close(pts.norm(dim=-1), torch.expm1(p.norm(dim=-1)))
    torch.testing.assert_close(pts / pts.norm(dim=-1, keepdim=True), p / p.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(conf, 1 + raw[:, 3].exp())
    with pytest.raises(ValueError, match="bounded"):
        activate_pointmap(raw, ("exp", 0.0, 10.0))


@pytest.mark.parametrize("fixture,prefix,raw_key,img_key", [
    ("dust3r_tiny_reference.safetensors", "", "input.raw_rgb", "input.view1.img"),
    ("dust3r_tiny_reference.safetensors", "portrait.", "portrait.input.raw_rgb", "portrait.input.view1.img"),
    ("fast3r_tiny_reference.safetensors", "", "input.raw_rgb", "input.img"),
])
def test_preprocessing_matches_the_reference_loader(fixture, prefix, raw_key, img_key):
    t = _tensors(fixture)
    raw, expected = t[raw_key].numpy(), t[img_key]
    for i in range(expected.shape[0] if expected.ndim == 4 else expected.shape[0]):
        tensor, transform = prepare_image(raw[i], size=64)
        want = expected[i] if expected.ndim == 4 else expected[i, 0]
        # PIL's resize is integer arithmetic; then (rgb/255 - 0.5)/0.5 in float32: a few ulps of 1
        torch.testing.assert_close(tensor, want, rtol=0, atol=1e-6)
        assert transform.model_size == tuple(want.shape[-2:])


def test_square_images_are_cropped_to_4_3_and_sizes_follow_long_side():
    tensor, transform = prepare_image(np.zeros((100, 100, 3), np.uint8), size=64)
    assert tuple(tensor.shape) == (3, 48, 64)
    tensor, transform = prepare_image(np.zeros((300, 500, 3), np.uint8), size=512)
    assert transform.resized_size == (307, 512) and tuple(tensor.shape) == (3, 304, 512)
    assert transform.crop_offset == (0, 1)


def test_intrinsics_map_back_to_original_pixels():
    _, transform = prepare_image(np.zeros((300, 500, 3), np.uint8), size=64)
    k_model = np.array([[50.0, 0, 32], [0, 50.0, 19], [0, 0, 1]])
    k_orig = transform.intrinsics_to_original(k_model)
    sx, sy = transform.scale
    x0, y0 = transform.crop_offset
    point = np.array([0.3, -0.2, 2.0])
    u_model, v_model = (k_model @ point)[:2] / point[2]
    # model pixel -> resized pixel (+crop) -> original pixel (pixel centres at integers)
    u_expected = (u_model + x0 + 0.5) / sx - 0.5
    v_expected = (v_model + y0 + 0.5) / sy - 0.5
    u_orig, v_orig = (k_orig @ point)[:2] / point[2]
    assert abs(u_orig - u_expected) < 1e-9 and abs(v_orig - v_expected) < 1e-9
