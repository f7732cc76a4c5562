"""Analytic FLOP count of 3D-LMNet's inference (conv image encoder + fully connected decoder).

Counts 2 FLOPs per multiply-accumulate of every convolution and linear layer, as
``torch.utils.flop_counter.FlopCounterMode`` does; BatchNorm, ReLU, softplus are left out. The
DINOv2 image-encoder variant is not covered.
"""
from __future__ import annotations

from .config import LMNetConfig


def lmnet_flops(config: LMNetConfig, batch: int = 1) -> dict[str, float]:
    """FLOPs of ``LMNet(config).forward`` on ``batch`` pictures of ``config.image_size`` pixels.

    Returns:
        dict ``image_encoder`` (convolutions and the FC layer), ``decoder`` and ``total``.
    Raises ``ValueError`` for the ``dinov2`` image encoder.
    """
    if config.image_encoder != "conv":
        raise ValueError(f"no FLOP model for the {config.image_encoder!r} image encoder (conv only)")
    encoder, channels, size = 0.0, 3, config.image_size
    for out_channels, kernel, stride in config.conv_layers:
        size = (size + 2 * (kernel // 2) - kernel) // stride + 1
        encoder += 2.0 * size * size * channels * out_channels * kernel * kernel
        channels = out_channels
    out_dim = config.latent_dim * (2 if config.probabilistic else 1)
    encoder += 2.0 * channels * size * size * out_dim
    widths = (config.latent_dim, *config.decoder_channels, config.num_points * 3)
    decoder = sum(2.0 * a * b for a, b in zip(widths, widths[1:]))
    out = {"image_encoder": batch * encoder, "decoder": batch * decoder}
    out["total"] = out["image_encoder"] + out["decoder"]
    return out
