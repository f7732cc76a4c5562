"""3D-LMNet modules, losses, data loading and resumable training (tiny configurations)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from core.models import weights
from core.models.lmnet import LMNet, LMNetConfig, tiny_config
from core.models.lmnet import data as lm_data
from core.models.lmnet import procedural
from core.models.lmnet.decoder import PointDecoder
from core.models.lmnet.dgcnn import DGCNNEncoder, edge_features, knn_indices
from core.models.lmnet.image_encoder import ConvImageEncoder
from core.models.lmnet.losses import (chamfer_loss, diversity_loss, latent_matching_loss, repulsion_loss,
                                      view_ambiguity)
from core.models.lmnet.pointnet import PointNetEncoder
from core.models.lmnet.train import TrainOptions, Trainer


def _grads_ok(module: torch.nn.Module) -> None:
    for name, p in module.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


# --------------------------------------------------------------------------- modules
def test_point_modules_shapes_and_gradients():
    torch.manual_seed(0)
    points = torch.rand(2, 64, 3)
    for encoder in (PointNetEncoder((16, 32), 24), DGCNNEncoder((16, 16), 24, k=5)):
        code = encoder(points)
        assert code.shape == (2, 24)
        # permutation invariance (max-pool; k-NN graphs are order independent). The k-NN choices are
        # stable: here the 5th and 6th squared distances differ by >= 4.6e-5 in both graphs, 40x
        # their float32 rounding; what is left is per-point rounding, which a point's column in
        # another BLAS block may change: atol 1e-5 on codes of order 1
        perm = torch.randperm(64)
        encoder.eval()
        assert torch.allclose(encoder(points), encoder(points[:, perm]), atol=1e-5)
        encoder.train()
        encoder(points).square().sum().backward()
        _grads_ok(encoder)
    decoder = PointDecoder(24, (32,), 100)
    out = decoder(torch.rand(3, 24))
    assert out.shape == (3, 100, 3)
    out.sum().backward()
    _grads_ok(decoder)


def test_conv_image_encoder_shapes_and_gradients():
    enc = ConvImageEncoder(((8, 3, 2), (16, 3, 2), (16, 5, 2)), 64, 10)
    out = enc(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 10)
    assert enc.fc.in_features == 16 * 8 * 8
    out.square().sum().backward()
    _grads_ok(enc)


@pytest.mark.parametrize("variant", ["original", "dgcnn"])
def test_lmnet_forward_and_probabilistic(variant):
    torch.manual_seed(0)
    model = LMNet(tiny_config(variant, probabilistic=True))
    images = torch.rand(2, 3, 64, 64)
    mean, sigma = model.encode_image(images)
    assert mean.shape == sigma.shape == (2, 32) and (sigma > 0).all()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a, b = model(images, sample=True, generator=g1), model(images, sample=True, generator=g2)
    assert a.shape == (2, 256, 3) and torch.equal(a, b)  # seeded sampling is reproducible
    assert not torch.equal(a, model(images))             # the mean differs from a sample
    loss = latent_matching_loss(model.sample_code(mean, sigma, g1), torch.zeros(2, 32)) \
        + diversity_loss(sigma, torch.tensor([0.0, 180.0]), 0.2) + model.autoencode(torch.rand(2, 256, 3)).square().mean()
    loss.backward()
    _grads_ok(model)


def test_configuration_outside_the_tiny_ones_on_a_portrait_photo():
    """Other widths, depths, point counts and conv stack; a portrait photo through the
    preprocessing (object framed in a square) and both point encoders."""
    from core.models.lmnet.inference import preprocess

    photo = np.full((90, 50, 3), 255, np.uint8)
    photo[20:80, 10:40] = (180, 40, 40)                     # a tall object on white
    x = torch.from_numpy(preprocess(photo, image_size=40))[None]
    assert x.shape == (1, 3, 40, 40)
    for encoder in ("pointnet", "dgcnn"):
        config = LMNetConfig(num_points=50, latent_dim=12, point_encoder=encoder, pointnet_channels=(8, 12, 16),
                             dgcnn_channels=(8, 12), dgcnn_k=4, encoder_points=30, decoder_channels=(24, 24),
                             image_size=40, conv_layers=((6, 5, 2), (10, 3, 3), (12, 3, 1)))
        torch.manual_seed(0)
        model = LMNet(config).eval()
        assert model.image_encoder.fc.in_features == 12 * 7 * 7   # 40 -> 20 -> 7 -> 7
        with torch.no_grad():
            points = model(torch.cat([x, torch.rand(1, 3, 40, 40)]))
            code = model.encode_points(torch.rand(2, 30, 3))
        assert points.shape == (2, 50, 3) and code.shape == (2, 12)
        with torch.no_grad():  # eval-mode batch norm: items are independent (one evaluation)
            assert torch.allclose(model(x)[0], points[0], atol=1e-5)


def test_dinov2_encoder_trainable_blocks_and_loading(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = LMNet(tiny_config("original", image_encoder="dinov2"))
    enc = model.image_encoder
    out = enc(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 32)
    out.square().sum().backward()
    blocks = enc.backbone.encoder.layer
    assert all(p.grad is None for p in enc.backbone.embeddings.parameters())
    assert all(p.grad is None for p in blocks[0].parameters())           # frozen (3 blocks, last 2 train)
    assert all(p.grad is not None for p in blocks[1].parameters())
    assert all(p.grad is not None for p in blocks[2].parameters())
    assert all(p.grad is not None for p in enc.head.parameters())
    # A published-style file (HF names, optional "dinov2." prefix) loads; a wrong one names its tensors.
    other = LMNet(tiny_config("original", image_encoder="dinov2")).image_encoder.backbone
    save_file({"dinov2." + k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "d.safetensors"))
    enc.load_backbone(tmp_path / "d.safetensors")
    assert torch.equal(enc.backbone.embeddings.cls_token, other.embeddings.cls_token)
    bad = {k: v for k, v in other.state_dict().items() if "layer.2." not in k}
    save_file({k: v.contiguous() for k, v in bad.items()}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(weights.BadCheckpoint, match=r"missing \(e\.g\. encoder\.layer\.2\."):
        enc.load_backbone(tmp_path / "bad.safetensors")
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path / "empty"))
    with pytest.raises(weights.MissingWeights, match="python -m core weights fetch lmnet-dinov2-small"):
        enc.load_pretrained("facebook/dinov2-small")


def test_config_errors_and_round_trip():
    config = LMNetConfig.for_variant("dgcnn")
    assert config.variant == "dgcnn" and config.num_points == 2048 and config.latent_dim == 512
    assert LMNetConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown variant 'pointe'"):
        LMNetConfig.for_variant("pointe")
    with pytest.raises(ValueError, match="unknown LMNetConfig key"):
        LMNetConfig.from_dict({"latent": 3})
    # The published conv encoder on the meta device: 128 -> 4x4x512 -> FC 512.
    with torch.device("meta"):
        model = LMNet(LMNetConfig())
    assert model.image_encoder.fc.in_features == 512 * 4 * 4
    assert model.decoder.layers[-1].out_features == 2048 * 3


# --------------------------------------------------------------------------- graph and losses
def test_knn_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 40))
    idx = knn_indices(torch.from_numpy(x), 6).numpy()
    for b in range(2):
        pts = x[b].T
        d = ((pts[:, None] - pts[None]) ** 2).sum(-1)
        expected = np.argsort(d, axis=1, kind="stable")[:, :6]
        assert np.array_equal(np.sort(idx[b], axis=1), np.sort(expected, axis=1))
        assert np.array_equal(idx[b][:, 0], np.arange(40))  # each point is its own nearest
    feats = edge_features(torch.from_numpy(x), 6).numpy()  # [B,2C,N,k]
    i, j = 7, 3
    nb = idx[1, i, j]
    assert np.allclose(feats[1, :5, i, j], x[1, :, nb] - x[1, :, i])
    assert np.allclose(feats[1, 5:, i, j], x[1, :, i])


def test_repulsion_loss_matches_direct_computation():
    rng = np.random.default_rng(1)
    pts = rng.random((2, 30, 3))
    k, h = 3, 0.2
    total = []
    for b in range(2):
        for i in range(30):
            d = sorted(np.linalg.norm(pts[b, i] - pts[b, j]) for j in range(30) if j != i)[:k]
            total += [-di * np.exp(-di ** 2 / h ** 2) for di in d]
    value = repulsion_loss(torch.from_numpy(pts), k, h).item()
    assert value == pytest.approx(np.mean(total), rel=1e-6)
    # within the repulsion range (neighbour distances < h / sqrt(2)), spreading the points lowers the loss
    wide = 2.0
    assert repulsion_loss(torch.from_numpy(pts * 1.5), k, wide).item() < repulsion_loss(torch.from_numpy(pts), k, wide).item()


def test_chamfer_loss_value_and_gradient():
    rng = np.random.default_rng(2)
    p = torch.from_numpy(rng.random((2, 50, 3))).requires_grad_(True)
    q = torch.from_numpy(rng.random((2, 70, 3)))
    loss = chamfer_loss(p, q)
    d = ((p[:, :, None] - q[:, None]) ** 2).sum(-1)
    dense = d.min(2).values.mean() + d.min(1).values.mean()
    assert loss.item() == pytest.approx(dense.item(), rel=1e-10)
    (g1,) = torch.autograd.grad(loss, p)
    (g2,) = torch.autograd.grad(dense, p)
    assert torch.allclose(g1, g2)
    assert chamfer_loss(q, q).item() == 0.0


def test_latent_and_diversity_losses():
    a, b = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, 0.0]])
    assert latent_matching_loss(a, b, "l1").item() == pytest.approx(1.5)
    assert latent_matching_loss(a, b, "l2").item() == pytest.approx(2.5)
    amb = view_ambiguity(torch.tensor([0.0, 90.0, 180.0, 270.0]))
    assert torch.allclose(amb, torch.tensor([0.0, 0.5, 1.0, 0.5]), atol=1e-6)
    sigma = torch.tensor([[0.1, 0.3], [0.2, 0.2]])
    expected = np.mean([(0.1 - 0) ** 2, (0.3 - 0) ** 2, (0.2 - 0.4) ** 2, (0.2 - 0.4) ** 2])
    assert diversity_loss(sigma, torch.tensor([0.0, 180.0]), 0.4).item() == pytest.approx(expected)


# --------------------------------------------------------------------------- data
def _fake_r2n2(root, points_root=None):
    """Two shapes of one synset in the real 3D-R2N2 layout: RGBA renders with metadata."""
    rng = np.random.default_rng(3)
    keys = []
    for m in ("a1b2", "c3d4"):
        folder = root / "03001627" / m / "rendering"
        folder.mkdir(parents=True)
        for v in range(3):
            rgba = np.zeros((137, 137, 4), np.uint8)
            rgba[40:90, 50:100] = [200, 10, 10, 255]
            Image.fromarray(rgba).save(folder / f"{v:02d}.png")
        (folder / "rendering_metadata.txt").write_text(
            "".join(f"{30.0 * v} 25.5 0 0.8 25\n" for v in range(3)))
        target = (points_root or root) / "03001627" / m
        target.mkdir(parents=True, exist_ok=True)
        np.save(target / "pointcloud_2048.npy", rng.random((2048, 3)).astype(np.float32))
        keys.append(f"03001627/{m}")
    return keys


def test_r2n2_loader_on_real_layout(tmp_path):
    keys = _fake_r2n2(tmp_path / "ShapeNetRendering", tmp_path / "ShapeNet_pointclouds")
    entries = lm_data.list_models(tmp_path / "ShapeNetRendering", points_root=tmp_path / "ShapeNet_pointclouds")
    assert [e.key for e in entries] == keys
    meta = entries[0].metadata()
    assert meta.shape == (3, 5) and meta[2, 0] == 60.0 and meta[0, 1] == 25.5
    image = lm_data.load_rendering(entries[0].rendering(1))
    assert image.shape == (137, 137, 3) and (image[0, 0] == 255).all()   # transparent -> white
    assert (image[60, 60] == [200, 10, 10]).all()
    x = lm_data.crop_to_tensor_array(image)
    assert x.shape == (3, 128, 128) and x.max() <= 1.0
    data = lm_data.ShapeImageSet(entries, views=[0, 2])
    assert data.images.shape == (2, 2, 137, 137, 3) and data.points.shape == (2, 2048, 3)
    assert np.array_equal(data.azimuths[0], [0.0, 60.0])
    (tmp_path / "ShapeNetRendering" / "splits.json").write_text(json.dumps({"train": keys[:1], "test": keys[1:]}))
    assert [e.key for e in lm_data.list_models(tmp_path / "ShapeNetRendering", "test",
                                               points_root=tmp_path / "ShapeNet_pointclouds")] == keys[1:]
    with pytest.raises(lm_data.DataError, match="pointcloud_2048.npy"):
        lm_data.list_models(tmp_path / "ShapeNetRendering")    # clouds live elsewhere: named clearly
    with pytest.raises(lm_data.DataError, match="split 'val' not in"):
        lm_data.list_models(tmp_path / "ShapeNetRendering", "val")


def test_procedural_shapes_points_and_render():
    for category in procedural.CATEGORIES:
        parts = procedural.make_shape(category, 5)
        pts = procedural.surface_points(parts, 2048, 0)
        assert pts.shape == (2048, 3) and pts.dtype == np.float32
        assert np.abs(pts).max() <= 0.5 + 1e-5            # unit box at the origin
        assert (pts.max(0) - pts.min(0)).max() > 0.97
        hidden = np.zeros(len(pts), bool)
        for p in parts:
            hidden |= p.inside(pts, eps=1e-3)
        assert not hidden.any()                            # no samples inside the solid
    rgba = procedural.ShapeRenderer(procedural.make_shape("mug", 1), 1).render(30, 20, 2.5)
    assert rgba.shape == (137, 137, 4)
    assert (rgba[0, 0] == [255, 255, 255, 0]).all() and rgba[68, 68, 3] == 255
    assert procedural.make_shape("chair", 3)[0].centre == procedural.make_shape("chair", 3)[0].centre


# --------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmnet_data")
    spec = procedural.DatasetSpec(per_category=3, categories=("chair", "mug"), views=2)
    splits = procedural.write_dataset(root, spec)
    assert {k: len(v) for k, v in splits.items()} == {"train": 2, "val": 2, "test": 2}
    return root


def _options(data, out, **kw):
    base = dict(data=str(data), out=str(out), variant="original", size="tiny", ae_steps=1, latent_steps=1,
                batch_size=2, latent_batch_size=2, log_every=1, val_every=1, checkpoint_every=1,
                val_views=(0, 1), threads=1)
    return TrainOptions(**{**base, **kw})


def test_two_step_training_resumes_bit_identical(tiny_data, tmp_path):
    straight = Trainer(_options(tiny_data, tmp_path / "a"))
    straight.run(resume=False)
    first = Trainer(_options(tiny_data, tmp_path / "b", stop_after=1))
    first.run(resume=False)
    assert first.step == 1
    halted = {k: v.clone() for k, v in first.model.state_dict().items()}
    resumed = Trainer(_options(tiny_data, tmp_path / "b"))
    resumed.run(resume=True)
    assert resumed.step == 2
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # step 2 (stage 2) changed the image encoder only
    assert not torch.equal(halted["image_encoder.fc.weight"], b["image_encoder.fc.weight"])
    assert torch.equal(halted["decoder.layers.0.weight"], b["decoder.layers.0.weight"])
    out = tmp_path / "b"
    rows = (out / "train_log.csv").read_text().splitlines()
    assert rows[0].startswith("stage,step,loss") and [r.split(",")[:2] for r in rows[1:]] == [["ae", "1"], ["latent", "2"]]
    assert json.loads((out / "run.json").read_text())["model"]["latent_dim"] == 32
    assert (out / "model.safetensors").is_file() and any((out / "tb").iterdir())
