"""Configuration of 3D-LMNet and its improved variants."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# The original 128x128 image encoder (3D-LMNet / PSGN-style): (out_channels, kernel, stride).
PUBLISHED_CONV_LAYERS = (
    (32, 3, 1), (32, 3, 1), (64, 3, 2), (64, 3, 1), (64, 3, 1), (128, 3, 2), (128, 3, 1),
    (128, 3, 1), (256, 3, 2), (256, 3, 1), (256, 3, 1), (512, 3, 2), (512, 3, 1), (512, 3, 1),
    (512, 5, 2),
)

VARIANTS = ("original", "dgcnn")


@dataclass
class LMNetConfig:
    """3D-LMNet: point auto-encoder + image encoder matched in the latent space.

    Defaults are the published full-size model (PointNet AE with a 512-d code, FC decoder to
    2,048 points, the 128x128 conv image encoder, deterministic L1 latent matching).

    Attributes:
        num_points: points decoded per shape (output ``[B,num_points,3]``).
        latent_dim: size of the shape code.
        point_encoder: ``pointnet`` (1-D convs + max-pool) or ``dgcnn`` (k-NN edge convolutions).
        pointnet_channels: PointNet 1-D conv widths before the ``latent_dim`` bottleneck.
        dgcnn_channels: EdgeConv widths (their concatenation feeds a 1-D conv to ``latent_dim``).
        dgcnn_k: neighbours per point in the EdgeConv graphs (the point itself included).
        encoder_points: points fed to the point encoder (a random subset when fewer than given).
        decoder_channels: hidden widths of the FC decoder (then ``num_points*3``).
        image_encoder: ``conv`` (the original) or ``dinov2`` (transformers ``Dinov2Model`` +
            projection head).
        image_size: square input side of the conv encoder (the 137x137 render centre-cropped).
        conv_layers: ``(out_channels, kernel, stride)`` of the conv encoder, then an FC layer.
        dinov2: ``Dinov2Config`` keyword arguments (``{}`` = dinov2-small's configuration).
        dinov2_trainable_blocks: last N transformer blocks (and the final norm) left trainable.
        probabilistic: predict a mean and a sigma per code dimension (the paper's
            probabilistic latent matching) instead of one code.
        matching_loss: ``l1`` or ``l2`` latent matching.
        diversity_weight / diversity_alpha: weight and scale of the azimuth-dependent
            diversity loss (probabilistic only).
        repulsion_weight / repulsion_k / repulsion_h: optional k-NN repulsion loss on decoded
            points (0 = off).
    """

    num_points: int = 2048
    latent_dim: int = 512
    point_encoder: str = "pointnet"
    pointnet_channels: tuple = (64, 128, 128, 256)
    dgcnn_channels: tuple = (64, 64, 128, 256)
    dgcnn_k: int = 20
    encoder_points: int = 2048
    decoder_channels: tuple = (256, 256)
    image_encoder: str = "conv"
    image_size: int = 128
    conv_layers: tuple = PUBLISHED_CONV_LAYERS
    dinov2: dict = field(default_factory=dict)
    dinov2_trainable_blocks: int = 2
    probabilistic: bool = False
    matching_loss: str = "l1"
    diversity_weight: float = 5.5
    diversity_alpha: float = 0.2
    repulsion_weight: float = 0.0
    repulsion_k: int = 4
    repulsion_h: float = 0.03

    def __post_init__(self) -> None:
        self.pointnet_channels = tuple(int(c) for c in self.pointnet_channels)
        self.dgcnn_channels = tuple(int(c) for c in self.dgcnn_channels)
        self.decoder_channels = tuple(int(c) for c in self.decoder_channels)
        self.conv_layers = tuple(tuple(int(v) for v in layer) for layer in self.conv_layers)
        if self.point_encoder not in ("pointnet", "dgcnn"):
            raise ValueError(f"point_encoder must be pointnet or dgcnn, got {self.point_encoder!r}")
        if self.image_encoder not in ("conv", "dinov2"):
            raise ValueError(f"image_encoder must be conv or dinov2, got {self.image_encoder!r}")
        if self.matching_loss not in ("l1", "l2"):
            raise ValueError(f"matching_loss must be l1 or l2, got {self.matching_loss!r}")

    @property
    def variant(self) -> str:
        """``original`` (PointNet AE) or ``dgcnn`` (DGCNN AE), by the point encoder."""
        return "original" if self.point_encoder == "pointnet" else "dgcnn"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "LMNetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown LMNetConfig key(s): {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def for_variant(cls, variant: str, **overrides) -> "LMNetConfig":
        """The published-size configuration of ``original`` (PointNet AE) or ``dgcnn``."""
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose {' or '.join(VARIANTS)}")
        base = {"point_encoder": "pointnet" if variant == "original" else "dgcnn"}
        if variant == "dgcnn":
            base["encoder_points"] = 1024
        return cls(**{**base, **overrides})


# Small configuration trained here on a shared 2-core CPU (the shipped checkpoints): same
# architecture families; narrower image encoder, 512 encoder input points, a smaller DGCNN.
SHIPPED_CONV_LAYERS = ((16, 3, 2), (16, 3, 1), (32, 3, 2), (32, 3, 1), (64, 3, 2), (64, 3, 1),
                       (128, 3, 2), (128, 3, 2))


def shipped_config(variant: str) -> LMNetConfig:
    """The configuration of the checkpoint trained here for ``variant``."""
    extra = {"conv_layers": SHIPPED_CONV_LAYERS, "encoder_points": 512}
    if variant == "dgcnn":
        extra.update(dgcnn_k=10, dgcnn_channels=(32, 32, 64, 128))
    return LMNetConfig.for_variant(variant, **extra)


def tiny_config(variant: str = "original", image_encoder: str = "conv", probabilistic: bool = False
                ) -> LMNetConfig:
    """A tiny configuration for tests and the ``random-tiny`` weights."""
    dinov2 = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
              "intermediate_size": 64, "image_size": 56, "patch_size": 14}
    return LMNetConfig.for_variant(
        variant, num_points=256, latent_dim=32, pointnet_channels=(16, 32), dgcnn_channels=(16, 16, 32),
        dgcnn_k=8, encoder_points=256, decoder_channels=(64,), image_encoder=image_encoder,
        image_size=64, conv_layers=((8, 3, 2), (16, 3, 2), (32, 3, 2)), dinov2=dinov2,
        probabilistic=probabilistic)
