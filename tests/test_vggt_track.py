"""VGGT track head: conformance with the authors' reference (tiny fixture, VGGT-1B manifest), the
family of configurations, the FLOP model and bad input.

Tolerances are the fixture README's ("VGGT tracking head", Tolerances observed)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from core.errors import UserError
from core.models import weights
from core.models.vggt import VGGT, VGGTConfig, TrackCapture, TrackInputError, check_query_points
from core.models.vggt.checkpoints import model_from_state_dict
from core.models.vggt.flops import vggt_flops
from core.models.vggt.tracker import flow_embedding
from tests.conftest import load_reference, prefixed

FIXTURES = Path(__file__).parent / "fixtures"
PX = dict(rtol=0, atol=1e-3)          # tracks, track_list, iteration coordinates (pixels)
PROB = dict(rtol=0, atol=3e-5)        # vis, conf
FEAT = dict(rtol=0, atol=1e-3)        # track features, corr, update input (channels C..), delta
DENSE = dict(rtol=1e-4, atol=1e-5)    # feature maps, query features, camera/depth/points

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fixture():
    tensors, metadata = load_reference("vggt_track_tiny_reference.safetensors")
    return json.loads(metadata["config"]), tensors, metadata


@pytest.fixture(scope="module")
def tiny(fixture):
    config, tensors, _ = fixture
    model = VGGT(VGGTConfig(**config), with_track_head=True).eval()
    model.load_state_dict(prefixed(tensors, "weights."), strict=True)
    return model


@pytest.fixture(scope="module")
def run(tiny, fixture):
    tensors = fixture[1]
    capture = TrackCapture()
    with torch.inference_mode():
        out = tiny(tensors["input.images"], query_points=tensors["input.query_points"],
                   track_capture=capture)
    return out, capture.tensors


def test_config_is_the_fixtures_and_defaults_are_vggt_1b(fixture):
    assert VGGTConfig(**fixture[0]) == VGGTConfig.tiny()
    manifest = json.loads((FIXTURES / "vggt_1b_track_head_manifest.json").read_text())
    full = VGGTConfig()
    assert {k: getattr(full, k) for k in manifest["config"]} == manifest["config"]


def test_tracks_vis_conf_match_reference(run, fixture):
    out, _ = run
    tensors = fixture[1]
    assert out.track.shape == (1, 3, 5, 2) and out.vis.shape == out.conf.shape == (1, 3, 5)
    torch.testing.assert_close(out.track, tensors["output.track"], **PX)
    assert len(out.track_list) == 4 and out.track_list[-1] is out.track
    for i, track in enumerate(out.track_list):
        torch.testing.assert_close(track, tensors[f"output.track_list.{i}"], **PX)
    torch.testing.assert_close(out.vis, tensors["output.vis"], **PROB)
    torch.testing.assert_close(out.conf, tensors["output.conf"], **PROB)
    # frame 0 is the query itself, exactly
    assert torch.equal(out.track[:, 0], tensors["input.query_points"])
    for key in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf"):
        torch.testing.assert_close(getattr(out, key), tensors[f"output.{key}"], **DENSE)


def test_recorded_intermediates_match_reference(run, fixture):
    _, rec = run
    tensors = fixture[1]
    c = fixture[0]["track_features"]
    torch.testing.assert_close(rec["features"], tensors["output.track_features"], **DENSE)
    torch.testing.assert_close(rec["query_feat"], tensors["output.track_query_feat"], **DENSE)
    torch.testing.assert_close(rec["feats"], tensors["output.track_feats"], **FEAT)
    for i in range(4):
        ref = lambda name: tensors[f"output.track_{name}.{i}"]          # noqa: E731
        torch.testing.assert_close(rec[f"iter_coords.{i}"], ref("iter_coords"), **PX)
        torch.testing.assert_close(rec[f"iter_feats.{i}"], ref("iter_feats"), **FEAT)
        torch.testing.assert_close(rec[f"corr.{i}"], ref("corr"), **FEAT)
        torch.testing.assert_close(rec[f"update_delta.{i}"], ref("update_delta"), **FEAT)
        torch.testing.assert_close(rec[f"update_input.{i}"][..., c:], ref("update_input")[..., c:],
                                   **FEAT)
    # flow-embedding channels: iteration 0 directly (no displacement yet), later ones through the
    # embedding of the stored coordinates (they magnify coordinate differences ~1000-fold)
    torch.testing.assert_close(rec["update_input.0"][..., :c],
                               tensors["output.track_update_input.0"][..., :c], **FEAT)
    for i in range(1, 4):
        coords = tensors[f"output.track_iter_coords.{i}"]
        emb = flow_embedding(coords - coords[:, :1], c).transpose(1, 2)
        ours = rec[f"update_input.{i}"][..., :c] - flow_embedding(
            rec[f"iter_coords.{i}"] - rec[f"iter_coords.{i}"][:, :1], c).transpose(1, 2)
        torch.testing.assert_close(ours + emb, tensors[f"output.track_update_input.{i}"][..., :c],
                                   **FEAT)


def test_flow_embedding_layout():
    flow = torch.tensor([[0.25, -1.5]])
    emb = flow_embedding(flow, 16)
    k = torch.arange(4, dtype=torch.float32)
    omega = 4000.0 * k / 16
    expected = torch.stack((torch.sin(0.25 * omega), torch.cos(0.25 * omega)), -1).flatten()
    expected_y = torch.stack((torch.sin(-1.5 * omega), torch.cos(-1.5 * omega)), -1).flatten()
    torch.testing.assert_close(emb[0], torch.cat((expected, expected_y)))


def test_full_size_head_matches_manifest_and_checkpoint_count():
    manifest = json.loads((FIXTURES / "vggt_1b_track_head_manifest.json").read_text())
    full = json.loads((FIXTURES / "vggt_1b_state_dict_manifest.json").read_text())
    with torch.device("meta"):
        model = VGGT(VGGTConfig(), with_track_head=True)
    got = {f"track_head.{k}": tuple(v.shape) for k, v in model.track_head.state_dict().items()}
    assert got == {k: tuple(v) for k, v in manifest["tensors"].items()}
    assert sum(p.numel() for p in model.track_head.parameters()) == manifest["num_parameters"]
    assert model.parameter_count == full["num_parameters"] == 1_256_537_516
    whole = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert whole == {k: tuple(v) for k, v in full["tensors"].items()}


def _random_model(config: VGGTConfig, seed: int = 0) -> VGGT:
    torch.manual_seed(seed)
    model = VGGT(config, with_track_head=True).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape) * 0.05)
    return model


@pytest.mark.parametrize("views,h,w,n,iters", [(5, 70, 56, 1, 4), (2, 56, 70, 7, 2),
                                                 (1, 56, 70, 3, 1)])
def test_family_configurations_track(views, h, w, n, iters):
    config = dataclasses.replace(VGGTConfig.tiny(), track_features=24, track_corr_levels=3,
                                 track_corr_radius=2, track_hidden_size=48, track_depth=1,
                                 track_num_heads=4, track_num_virtual_tracks=5, track_iters=iters)
    model = _random_model(config)
    generator = torch.Generator().manual_seed(1)
    queries = torch.rand(n, 2, generator=generator) * torch.tensor([w - 0.5, h - 0.5])
    with torch.inference_mode():
        out = model(torch.rand(views, 3, h, w, generator=generator), query_points=queries,
                    heads=())
    assert out.track.shape == (1, views, n, 2) and out.vis.shape == out.conf.shape == (1, views, n)
    assert len(out.track_list) == iters and out.depth is None
    assert torch.equal(out.track[0, 0], queries)
    assert torch.isfinite(out.track).all()
    assert ((out.vis > 0) & (out.vis < 1) & (out.conf > 0) & (out.conf < 1)).all()


def test_frame_chunking_and_batch_do_not_change_tracks(tiny, fixture):
    tensors = fixture[1]
    images = tensors["input.images"].repeat(1, 3, 1, 1, 1)[:, :9]       # 9 frames > one chunk
    queries = tensors["input.query_points"]
    with torch.inference_mode():
        chunked = tiny(images, heads=(), query_points=queries, frames_chunk_size=8)
        whole = tiny(images, heads=(), query_points=queries, frames_chunk_size=None)
        batch = tiny(images.expand(2, -1, -1, -1, -1), heads=(), query_points=queries[0])
    torch.testing.assert_close(chunked.track, whole.track, rtol=0, atol=1e-4)
    torch.testing.assert_close(batch.track[1], whole.track[0], rtol=0, atol=1e-4)


def test_flop_model_matches_torch_flop_counter(tiny):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    config = tiny.config
    for views, h, w, n in ((1, 56, 70, 3), (3, 70, 56, 7)):
        queries = torch.rand(n, 2) * torch.tensor([w - 1, h - 1])
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            tiny(torch.rand(views, 3, h, w), query_points=queries)
        flops = vggt_flops(views, h, w, config, num_queries=n)
        assert flops["total"] == counter.get_total_flops()
        assert flops["track_head"] > 0
    assert vggt_flops(2, 56, 70, config)["track_head"] == 0.0


def test_checkpoint_loads_with_or_without_track_head(fixture):
    config, tensors, _ = fixture
    state = prefixed(tensors, "weights.")
    full = model_from_state_dict(dict(state), VGGTConfig(**config), with_track_head=True)
    assert full.parameter_count == sum(v.numel() for v in state.values())
    lean = model_from_state_dict(dict(state), VGGTConfig(**config))
    assert lean.track_head is None
    assert lean.parameter_count == sum(v.numel() for k, v in state.items()
                                       if not k.startswith("track_head."))
    bad = dict(state)
    bad["track_head.tracker.query_ref_token"] = torch.zeros(1, 2, 40)   # mis-shaped
    with pytest.raises(weights.BadCheckpoint, match="query_ref_token"):
        model_from_state_dict(bad, VGGTConfig(**config))                 # checked even if dropped
    missing = {k: v for k, v in state.items() if not k.startswith("track_head.")}
    with pytest.raises(weights.BadCheckpoint, match="track_head"):
        model_from_state_dict(missing, VGGTConfig(**config), with_track_head=True)


def test_bad_queries_raise_user_errors(tiny):
    images = torch.rand(1, 2, 3, 56, 70)
    cases = [(torch.tensor([[70.0, 3.0]]), "outside the 70x56 image"),
             (torch.tensor([[3.0, -0.6]]), "outside"),
             (torch.zeros(1, 3), r"\[N,2\] or \[B,N,2\]"),
             (torch.zeros(0, 2), "no query points"),
             (torch.tensor([[float("nan"), 1.0]]), "finite"),
             (torch.zeros(2, 1, 2), "batch 2")]
    for queries, message in cases:
        with pytest.raises(TrackInputError, match=message) as error:
            tiny(images, heads=(), query_points=queries)
        assert isinstance(error.value, UserError)
    with pytest.raises(TrackInputError, match="at most 32"):
        check_query_points(torch.zeros(33, 2), (56, 70), max_points=32)
    assert check_query_points(torch.zeros(33, 2), (56, 70)).shape == (1, 33, 2)  # model: any N
    with pytest.raises(TrackInputError, match="too small"):
        tiny(torch.rand(1, 3, 14, 28), heads=(), query_points=torch.zeros(1, 2))
    with pytest.raises(ValueError, match="without its track head"):
        VGGT(VGGTConfig.tiny())(images, query_points=torch.zeros(1, 2))


def test_position_lookup_equals_grid_sample_of_the_full_table():
    import torch.nn.functional as F
    from core.models.vggt.tracker import sincos_position
    h, w, d = 5, 7, 52
    omega = 1.0 / 10000.0 ** (torch.arange(d // 4, dtype=torch.float64) / (d // 4))
    half = lambda p: torch.cat((torch.sin(p[..., None] * omega), torch.cos(p[..., None] * omega)), -1)  # noqa: E731
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    table = torch.cat((half(xs), half(ys)), -1).permute(2, 0, 1)[None].float()   # [1, D, h, w]
    points = torch.tensor([[[0.0, 0.0], [6.0, 4.0], [2.3, 1.7], [7.9, -1.0], [-3.0, 4.6]]])
    grid = torch.stack((points[..., 0] / (w - 1), points[..., 1] / (h - 1)), -1) * 2 - 1
    expected = F.grid_sample(table, grid[:, None], mode="bilinear", padding_mode="border",
                             align_corners=True)[0, :, 0].T
    torch.testing.assert_close(sincos_position(points, h, w, d)[0], expected, rtol=0, atol=1e-6)
