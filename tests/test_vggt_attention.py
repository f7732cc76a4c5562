"""Global-attention capture (vs the fixture's full maps) and chunked attention rollout."""
from __future__ import annotations

import pytest
import torch

from core.models.vggt import VGGT, VGGTConfig, AttentionCapture, attention_rollout, token_index
from tests.conftest import load_vggt_reference

QUERIES = [0, 6, 24, 30, 52, 74]          # camera token, patches of frames 0..2, last token


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fixture():
    config, tensors = load_vggt_reference()
    model = VGGT(VGGTConfig(**config)).eval()
    model.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("weights.")})
    return model, tensors


@pytest.fixture(scope="module")
def captured(fixture):
    model, tensors = fixture
    capture = AttentionCapture(QUERIES, keep_qk=True)
    with torch.inference_mode():
        out = model(tensors["input.images"], capture=capture)
    return capture, out


def test_captured_rows_equal_reference_attention(captured, fixture):
    capture, _ = captured
    tensors = fixture[1]
    assert sorted(capture.rows) == [0, 1, 2, 3]
    for layer in range(4):
        full = tensors[f"output.global_attention.{layer}"]          # [1, heads, 75, 75]
        rows = capture.rows[layer]
        assert rows.shape == (1, 2, len(QUERIES), 75)
        torch.testing.assert_close(rows, full[:, :, QUERIES], rtol=0, atol=1e-5)


def test_capture_does_not_change_outputs_and_can_select_layers(captured, fixture):
    model, tensors = fixture
    capture = AttentionCapture([3], layers=[2])
    with torch.inference_mode():
        plain = model(tensors["input.images"])
        selected = model(tensors["input.images"], capture=capture)
    for key, value in vars(plain).items():
        if value is None:                           # track outputs: no query points given
            assert getattr(captured[1], key) is None and getattr(selected, key) is None, key
            continue
        assert torch.equal(value, getattr(captured[1], key)), key
        assert torch.equal(value, getattr(selected, key)), key
    assert list(capture.rows) == [2] and capture.qk == {}


def _dense_rollout(maps: list[torch.Tensor], queries: list[int], discard: float) -> torch.Tensor:
    """Reference rollout from full [N, N] maps: max over heads, per-row discard of the lowest
    values, (A + I) / 2, row normalisation, e_q^T A_L ... A_1."""
    product = None
    for full in maps:                                   # layer order 0..L-1
        a = full[0].amax(dim=0).double()
        n = a.shape[-1]
        drop = int(n * discard)
        if drop:
            order = a.argsort(dim=-1)
            a = a.scatter(-1, order[:, :drop], 0.0)
        a = (a + torch.eye(n, dtype=a.dtype)) / 2
        a = a / a.sum(-1, keepdim=True)
        product = a if product is None else a @ product   # A_l (A_{l-1} ... A_1)
    return product[queries].float()


@pytest.mark.parametrize("discard", [0.0, 0.5, 0.9])
def test_chunked_rollout_equals_dense_reference(captured, fixture, discard):
    capture, _ = captured
    maps = [fixture[1][f"output.global_attention.{i}"] for i in range(4)]
    expected = _dense_rollout(maps, QUERIES, discard)
    for chunk in (7, 75, 1000):
        got = attention_rollout(capture, discard_fraction=discard, chunk_size=chunk)
        assert got.shape == (1, len(QUERIES), 75)
        torch.testing.assert_close(got[0], expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(got.sum(-1), torch.ones(1, len(QUERIES)), rtol=0, atol=1e-5)


def test_rollout_errors_and_token_index():
    with pytest.raises(ValueError, match="keep_qk"):
        attention_rollout(AttentionCapture([0]))
    # frame 2, patch (row 1, col 3) of a 4x5 grid: 2 * 25 + 5 + 1 * 5 + 3
    assert token_index(2, 1, 3, grid_w=5, tokens_per_frame=25) == 63
