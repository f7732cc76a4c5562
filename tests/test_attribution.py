"""Gradient attribution: finite differences, a linear toy with known weights, checkpointing,
bad input refused before running, the rollout comparison and the benchmark's tiny option."""
import numpy as np
import pytest
import torch

from core.errors import UserError
from core.studies import attribution as attr

pytestmark = pytest.mark.usefixtures("one_thread")

FRAME, PIXEL = 1, (20, 9)


@pytest.fixture(scope="module")
def tiny64():
    from core.models.vggt.method import random_tiny_model

    return random_tiny_model().double()


@pytest.fixture(scope="module")
def images64():
    return torch.rand(2, 3, 28, 42, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("target", ["point-distance", "depth"])
def test_attribution_equals_central_differences_on_the_tiny_model(tiny64, images64, target):
    result = attr.attribute(tiny64, images64, FRAME, PIXEL, target, layer=2)
    forward = attr.vggt_forward(tiny64, FRAME, target, 2, checkpoint=False)

    def y(images):
        with torch.no_grad():
            return float(forward(images)[0][PIXEL[1], PIXEL[0]])

    assert result.value == pytest.approx(y(images64), rel=1e-12)
    step = 1e-5
    # pixels of the other view and of the clicked view, inside and outside the clicked patch
    for view, channel, row, col in [(0, 0, 5, 7), (0, 2, 20, 30), (1, 1, 9, 20), (1, 0, 26, 3)]:
        plus, minus = images64.clone(), images64.clone()
        plus[view, channel, row, col] += step
        minus[view, channel, row, col] -= step
        estimate = (y(plus) - y(minus)) / (2 * step)
        assert abs(estimate) > 1e-8  # a pixel that matters, so the relative check is meaningful
        assert result.input_gradient[view, channel, row, col] == pytest.approx(estimate, rel=1e-4)
    # the maps are the stated functions of the gradient
    expected = np.abs((images64.numpy() * result.input_gradient).sum(axis=1))
    np.testing.assert_allclose(result.input_x_gradient, expected, rtol=1e-12)
    assert result.grad_cam.shape == result.token_gradient.shape == (2, 2, 3)


def _linear_toy(patch=2, rows=2, cols=3, weights_seed=0):
    """A linear 'network': patch tokens are the pixels of each patch (C = 3·p·p, no arithmetic),
    the layer's activations are the tokens times powers of two, and every output pixel's value is
    the same weighted sum of all activations (small integer weights), so float64 is exact."""
    rng = np.random.default_rng(weights_seed)
    s = 2
    c = 3 * patch * patch
    scale = torch.as_tensor(2.0 ** rng.integers(-2, 3, c))
    weights = torch.as_tensor(rng.integers(-3, 4, (s, rows * cols, c)).astype(np.float64))

    def forward(images):
        tokens = images.unfold(2, patch, patch).unfold(3, patch, patch)       # [S,3,rows,cols,p,p]
        tokens = tokens.permute(0, 2, 3, 1, 4, 5).reshape(s, rows * cols, c)  # [S,n,C]
        activations = tokens * scale
        value = (activations * weights).sum()
        return value.expand(rows * patch, cols * patch), tokens, activations

    return forward, scale, weights


def test_linear_toy_attribution_equals_the_known_weights_exactly():
    patch, rows, cols = 2, 2, 4  # 16 patches: the mean over them is exact in binary
    forward, scale, weights = _linear_toy(patch, rows, cols)
    rng = np.random.default_rng(1)
    images = torch.as_tensor(rng.integers(0, 8, (2, 3, rows * patch, cols * patch)) / 8.0)
    out = attr.gradient_attribution(forward, images, 0, (1, 2), (rows, cols))
    token_weights = (weights * scale).numpy()                 # ∂y/∂t per token and channel
    # the image gradient is the token weights put back at their pixels
    expected = token_weights.reshape(2, rows, cols, 3, patch, patch).transpose(0, 3, 1, 4, 2, 5)
    expected = expected.reshape(2, 3, rows * patch, cols * patch)
    assert np.array_equal(out["input_gradient"], expected)
    assert np.array_equal(out["input_x_gradient"], np.abs((images.numpy() * expected).sum(axis=1)))
    assert np.array_equal(out["token_gradient"], np.linalg.norm(token_weights, axis=-1).reshape(2, rows, cols))
    # Grad-CAM: ∂y/∂A = weights; α = their mean over all patches of all views
    activations = (images.unfold(2, patch, patch).unfold(3, patch, patch).permute(0, 2, 3, 1, 4, 5)
                   .reshape(2, rows * cols, -1) * scale).numpy()
    alpha = weights.numpy().reshape(-1, weights.shape[-1]).mean(axis=0)
    cam = np.maximum(activations @ alpha, 0).reshape(2, rows, cols)
    assert np.array_equal(out["grad_cam"], cam)
    assert out["value"] == float((activations * weights.numpy()).sum())


def test_grad_cam_keeps_the_positive_side_only():
    activations = np.array([[[[1.0, 2.0], [-3.0, 0.5]]]])       # [S=1, rows=1, cols=2, C=2]
    gradients = np.array([[[[1.0, 0.0], [3.0, 2.0]]]])          # α = (2, 1)
    assert np.array_equal(attr.grad_cam(activations, gradients), [[[4.0, 0.0]]])  # 2+2, ReLU(-6+0.5)


def test_checkpointing_gives_the_same_gradients(images64):
    from core.models.vggt.method import random_tiny_model

    model = random_tiny_model()
    images = images64.float()
    on = attr.attribute(model, images, FRAME, PIXEL, "point-x", layer=1, checkpoint=True)
    off = attr.attribute(model, images, FRAME, PIXEL, "point-x", layer=1, checkpoint=False)
    # float32: the recomputed segments run the same kernels, so agreement is to rounding (stated
    # tolerance: 1e-6 relative to the largest entry)
    for name in ("input_gradient", "grad_cam", "token_gradient"):
        a, b = getattr(on, name), getattr(off, name)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())
    assert on.value == pytest.approx(off.value, rel=1e-6)


def test_checkpointed_trunk_keeps_less_for_backward(images64):
    from core.models.vggt.method import random_tiny_model

    model = random_tiny_model()
    images = images64.float()[None].requires_grad_(True)
    kept = {}
    for flag in (False, True):
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.aggregator(images, keep_layers={3}, checkpoint=flag)
        kept[flag] = total[0]
    assert kept[True] < kept[False] / 2


def test_memory_estimate_follows_its_stated_model():
    from core.models.vggt import VGGTConfig

    config = VGGTConfig()
    one = attr.memory_estimate(config, 8, 392, 518)
    tokens = 1 + 4 + 28 * 37
    t = 8 * tokens * 1024 * 4
    assert one.parts["trunk"] == 24 * t + 2 * 22 * t  # every pair's input + one recomputed pair
    assert one.parts["dpt head"] == 3 * 256 * 392 * 518 * 4
    off = attr.memory_estimate(config, 8, 392, 518, checkpoint=False)
    assert off.parts["trunk"] == 2 * 24 * 22 * t and off.total_bytes > 3 * one.total_bytes
    assert attr.memory_estimate(config, 16, 392, 518).total_bytes > one.total_bytes
    assert 4 * 2**30 < one.total_bytes < 12 * 2**30  # with the 4.7 GB model: within 16 GB


def test_bad_input_is_refused_before_running(tiny64, images64, monkeypatch):
    ran = []
    monkeypatch.setattr(attr, "gradient_attribution", lambda *args, **kwargs: ran.append(1))
    with pytest.raises(UserError, match=r"pixel \(42, 9\) is outside the 42x28 network image"):
        attr.attribute(tiny64, images64, 0, (42, 9))
    with pytest.raises(UserError, match=r"pixel \(3, -1\) is outside"):
        attr.attribute(tiny64, images64, 0, (3, -1))
    with pytest.raises(UserError, match=r"layer 4 is out of range: the trunk has layers 0\.\.3"):
        attr.attribute(tiny64, images64, 0, (3, 3), layer=4)
    with pytest.raises(UserError, match="unknown attribution target 'normal'"):
        attr.attribute(tiny64, images64, 0, (3, 3), target="normal")
    with pytest.raises(UserError, match="view 2 is out of range"):
        attr.attribute(tiny64, images64, 2, (3, 3))

    class Memory:
        available = 1000

    monkeypatch.setattr("psutil.virtual_memory", lambda: Memory())
    needed = attr.memory_estimate(tiny64.config, 2, 28, 42, dtype_bytes=8).total_bytes
    assert needed > Memory.available
    with pytest.raises(UserError, match=r"needs about \d+\.\d MiB beyond the loaded model \(.*\) but only 0\.0 MiB is free"):
        attr.attribute(tiny64, images64, 0, (3, 3))
    assert not ran


def test_too_many_track_queries_are_refused_before_running():
    from core.studies.attention import track_points

    class Untouchable:
        def __call__(self, *args, **kwargs):
            raise AssertionError("the model ran")

    inputs = np.zeros((2, 3, 28, 42), np.float32)
    with pytest.raises(UserError, match="at most 32 points can be tracked at once, got 33"):
        track_points(Untouchable(), inputs, 0, np.ones((33, 2)))
    with pytest.raises(UserError, match=r"query \(42, 1\) is outside the 42x28 network image"):
        track_points(Untouchable(), inputs, 0, [[1, 1], [42, 1]])
    with pytest.raises(UserError, match="click at least one point"):
        track_points(Untouchable(), inputs, 0, np.zeros((0, 2)))


def test_spearman_against_a_hand_count():
    # ranks (1,2,3,4) vs (1,3,2,4): d² = 0+1+1+0 = 2, ρ = 1 - 6·2/(4·15) = 0.8
    assert attr.spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 30, 20, 40])) == pytest.approx(0.8)
    assert np.isnan(attr.spearman(np.zeros(4), np.arange(4.0)))  # a constant map has no ranking
    rho = attr.rank_correlations(np.arange(8.0).reshape(2, 2, 2), -np.arange(8.0).reshape(2, 2, 2))
    assert rho == pytest.approx([-1.0, -1.0])


def test_session_attribution_with_rollout_comparison(sample_scene):
    from core.studies.attention import capture_session

    session = capture_session(sample_scene, [0, 14], weights="random-tiny")
    estimate = attr.session_estimate(session)
    result = attr.session_attribution(session, 1, (250, 200), "depth", layer=1)
    assert result.estimate == estimate and result.grid == session.grid
    s, h, w = result.input_x_gradient.shape
    assert (s, h, w) == (2,) + session.images.shape[1:3]
    assert result.upsampled(result.grad_cam).shape == (2, h, w)
    pooled = result.pooled(result.input_x_gradient)
    assert pooled.sum() == pytest.approx(result.input_x_gradient[:, :session.grid[0] * 14, :session.grid[1] * 14].sum())
    compared = attr.compare_with_rollout(session, result, session.layers[0], session.layers[-1], 0.5)
    token = session.token_for_pixel(1, 250, 200)
    assert np.array_equal(compared["rollout"], session.rollout(token, session.layers[0], session.layers[-1], 0.5))
    for name, values in compared["correlations"].items():
        expected = [attr.spearman(a, b) for a, b in zip(result.maps()[name], compared["rollout"])]
        np.testing.assert_array_equal(values, expected)
        assert all(np.isnan(v) or -1 <= v <= 1 for v in values)


def test_attribution_benchmark_tiny_option(sample_scene):
    from core.bench import run
    from core.store.cache import REPO_ROOT

    (row,) = run("attribution", ["--scene", str(REPO_ROOT / "sample_data" / "toy"), "--weights", "random-tiny",
                                 "--views", "2"])
    assert row["bench"] == "attribution" and row["views"] == 2 and (row["height"], row["width"]) == (392, 518)
    assert row["view_ids"] == sample_scene.uniform_views(2) and row["checkpointing"]
    assert row["peak_rss_bytes"] >= row["model_rss_bytes"] and row["attribution_seconds"] > 0
    from core.models.vggt import VGGTConfig

    assert row["estimated_bytes"] == attr.memory_estimate(VGGTConfig.tiny(), 2, 392, 518).total_bytes
