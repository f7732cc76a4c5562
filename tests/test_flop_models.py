"""Analytic FLOP models (each method's ``flops`` hook and the per-stage models behind it) against
PyTorch's FLOP counter on the tiny configurations.

``torch.utils.flop_counter.FlopCounterMode`` counts matrix products, convolutions (plain and
transposed) and, with the math attention backend, attention's two batched matmuls: exactly what
the analytic models count (2 FLOPs per multiply-accumulate). The element-wise work both leave
out (norms, softmax, GELU, RoPE, upsampling) is the same on both sides, so the counts must be
equal; the only approximate comparison is DA3's, whose model leaves out its reference-view
similarity and 4x4 pose products (< 1e-5 of the total, see tests/test_da3_method.py).
VGGT's and π³'s models are checked in their own test files (test_vggt_model.py,
test_pi3_model.py). LRM's model covers its network up to the triplanes (rendering's per-ray MLPs
are not counted).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from core.models import registry


def counted(fn) -> int:
    """FLOPs torch's counter sees in ``fn()`` (no autograd, math attention)."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_dust3r_encode_once_inference_costs_what_its_flop_hook_says():
    """The hook counts one encoder pass per distinct view and decoders + heads per ordered pair:
    checked on the encode-once inference itself for 1, 2 and 3 views (3 views: 6 pairs, 3
    encodings), on landscape and portrait pictures (odd token grids included)."""
    from core.models.dust3r.inference import predict_pairs

    method = registry.get("dust3r")
    options = method.parse_options({"weights": "random-tiny"})
    model = method.load(options, "cpu")
    for n, height, width in ((1, 30, 40), (2, 30, 40), (3, 40, 30), (3, 50, 90)):
        h, w = method.network_hw(options, height, width)
        images = [torch.rand(3, h, w) * 2 - 1 for _ in range(n)]
        pairs = method.pairs(n, options)
        flops = counted(lambda: predict_pairs(model, images, pairs, batch_size=2))
        assert method.flops(options, n, height, width) == flops


def test_dust3r_reference_forward_matches_the_per_stage_model():
    """The reference forward (both images of every pair encoded) against ``dust3r_flops`` with
    ``encoder_passes = 2 * pairs``; the encoder share is what encode-once saves."""
    from core.models.dust3r.config import DUSt3RConfig
    from core.models.dust3r.flops import dust3r_flops
    from core.models.dust3r.modeling_dust3r import DUSt3R

    config = DUSt3RConfig.tiny()
    torch.manual_seed(0)
    model = DUSt3R(config).eval()
    for batch, h, w in ((2, 48, 64), (1, 80, 48)):
        flops = counted(lambda: model(torch.rand(batch, 3, h, w), torch.rand(batch, 3, h, w)))
        stages = dust3r_flops(2 * batch, batch, h, w, config)
        assert stages["total"] == flops
        assert stages["encoder"] == pytest.approx(
            2 * batch * dust3r_flops(1, 0, h, w, config)["encoder"])


def test_fast3r_forward_matches_its_flop_model_and_hook():
    from core.models.fast3r.flops import fast3r_flops

    method = registry.get("fast3r")
    options = method.parse_options({"weights": "random-tiny"})
    model = method.load(options, "cpu")
    config = method.network_config(options)
    for views, h, w in ((1, 48, 64), (3, 80, 48)):
        flops = counted(lambda: model([torch.rand(1, 3, h, w) for _ in range(views)]))
        assert fast3r_flops(views, h, w, config)["total"] == flops
    hook_h, hook_w = method.network_hw(options, 30, 40)
    assert method.flops(options, 2, 30, 40) == fast3r_flops(2, hook_h, hook_w, config)["total"]
    # the fusion attention is the only quadratic term: 4x for twice the views at one size
    big = fast3r_flops(8, 384, 512)
    assert big["fusion_attention"] == pytest.approx(4 * fast3r_flops(4, 384, 512)["fusion_attention"])
    assert big["encoder"] == pytest.approx(2 * fast3r_flops(4, 384, 512)["encoder"])


@pytest.mark.parametrize("name", ["da3-small", "da3-base"])
def test_da3_hook_counts_the_forward_at_the_processed_size(name):
    from core.models.da3.processing import preprocess_images

    method = registry.get(name)
    options = method.parse_options({"weights": "random-tiny", "process_res": 70})
    model = method.load(options, "cpu")
    pictures = [np.zeros((60, 90, 3), np.uint8)] * 2
    x, _ = preprocess_images(pictures, options.process_res)
    flops = counted(lambda: model(x[None], export_feat_layers=()))
    assert method.flops(options, 2, 60, 90) == pytest.approx(flops, rel=1e-5)


def test_lrm_triplane_network_matches_its_flop_model():
    """Encoder, camera modulation, transformer and upsampler of the tiny configuration at two
    picture sizes and batches (the counter runs with autograd on: under no_grad its module
    tracker fails on the expanded position embedding)."""
    import dataclasses

    from core.models.lrm.cameras import source_camera
    from core.models.lrm.config import tiny_config
    from core.models.lrm.flops import lrm_flops
    from core.models.lrm.modeling_lrm import LRM

    for config in (tiny_config(), dataclasses.replace(tiny_config(), source_size=70)):
        torch.manual_seed(0)
        model = LRM(config).eval()
        for batch in (1, 2):
            with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
                model.forward_planes(torch.rand(batch, 3, config.source_size, config.source_size),
                                     source_camera(config.source_cam_dist, batch))
            assert lrm_flops(config, batch)["total"] == counter.get_total_flops()


@pytest.mark.parametrize("attention", ["sdpa", "reference"])
def test_pointe_denoiser_calls_match_their_flop_model(attention):
    """Both denoisers (the upsampler with its low-res point tokens) at batch 1 and 2, with both
    attention implementations (the reference one: chunked einsums)."""
    from core.models.pointe.config import PointDiffusionTransformerConfig as Config
    from core.models.pointe.flops import denoiser_flops
    from core.models.pointe.modeling_transformer import (CLIPImageGridPointDiffusionTransformer,
                                                         CLIPImageGridUpsamplePointDiffusionTransformer)

    base = Config(n_ctx=20, width=32, layers=2, heads=2, clip_grid_dim=24, attention=attention)
    up = Config(name="CLIPImageGridUpsamplePointDiffusionTransformer", n_ctx=30, cond_ctx=20, width=32,
                layers=2, heads=2, clip_grid_dim=24, attention=attention)
    torch.manual_seed(0)
    base_model = CLIPImageGridPointDiffusionTransformer(base).eval()
    up_model = CLIPImageGridUpsamplePointDiffusionTransformer(up).eval()
    for batch in (1, 2):
        t = torch.zeros(batch, dtype=torch.int64)
        grid = torch.rand(batch, 24, 9)
        assert denoiser_flops(base, batch, 9)["total"] == counted(
            lambda: base_model(torch.rand(batch, 6, 20), t, grid))
        assert denoiser_flops(up, batch, 9)["total"] == counted(
            lambda: up_model(torch.rand(batch, 6, 30), t, grid, torch.rand(batch, 6, 20)))


def test_lmnet_inference_matches_its_flop_model():
    from core.models.lmnet.config import LMNetConfig, tiny_config
    from core.models.lmnet.flops import lmnet_flops
    from core.models.lmnet.modeling import LMNet

    for config in (tiny_config(), tiny_config(probabilistic=True)):
        torch.manual_seed(0)
        model = LMNet(config).eval()
        for batch in (1, 3):
            flops = counted(lambda: model(torch.rand(batch, 3, config.image_size, config.image_size)))
            assert lmnet_flops(config, batch)["total"] == flops
    with pytest.raises(ValueError, match="conv only"):
        lmnet_flops(LMNetConfig(image_encoder="dinov2"))


def test_every_learned_multi_view_method_has_a_flop_model():
    """The scaling study fits time against the ``flops`` hook of every multi-view method (the
    single-view generators have per-stage models instead: LRM, Point-E and LMNet above)."""
    for name in ("vggt", "pi3", "pi3x", "da3-small", "da3-base", "dust3r", "fast3r"):
        method = registry.get(name)
        options = method.parse_options({"weights": "random-tiny"})
        assert method.flops(options, 2, 64, 64) > 0, name
