"""The 3D-LMNet model: point auto-encoder + image encoder matched in the latent space."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import LMNetConfig
from .decoder import PointDecoder
from .dgcnn import DGCNNEncoder
from .image_encoder import ConvImageEncoder
from .pointnet import PointNetEncoder


class LMNet(nn.Module):
    """3D-LMNet.

    Stage 1 trains ``point_encoder`` + ``decoder`` as an auto-encoder (Chamfer); stage 2
    trains ``image_encoder`` to predict the frozen encoder's code (latent matching). At test
    time ``decoder(image_encoder(image))`` gives the point cloud in the object-centred
    canonical frame of the training shapes (y up, unit box).
    """

    def __init__(self, config: LMNetConfig) -> None:
        super().__init__()
        self.config = config
        if config.point_encoder == "pointnet":
            self.point_encoder = PointNetEncoder(config.pointnet_channels, config.latent_dim)
        else:
            self.point_encoder = DGCNNEncoder(config.dgcnn_channels, config.latent_dim, config.dgcnn_k)
        self.decoder = PointDecoder(config.latent_dim, config.decoder_channels, config.num_points)
        out_dim = config.latent_dim * (2 if config.probabilistic else 1)
        if config.image_encoder == "conv":
            self.image_encoder = ConvImageEncoder(config.conv_layers, config.image_size, out_dim)
        else:
            from .dino_encoder import DinoImageEncoder
            self.image_encoder = DinoImageEncoder(config.dinov2, out_dim, config.dinov2_trainable_blocks)

    # ----------------------------------------------------------------- stage 1
    def encode_points(self, points: torch.Tensor) -> torch.Tensor:
        """``points [B,N,3] -> code [B,latent_dim]``."""
        return self.point_encoder(points)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """``code [B,latent_dim] -> points [B,num_points,3]``."""
        return self.decoder(code)

    def autoencode(self, points: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode_points(points))

    # ----------------------------------------------------------------- stage 2
    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``images [B,3,S,S]`` in [0,1] -> (mean code ``[B,D]``, sigma ``[B,D]`` or None).

        Sigma (probabilistic variant only) is ``softplus`` of the second half of the output.
        """
        out = self.image_encoder(images)
        if not self.config.probabilistic:
            return out, None
        mean, raw = out.chunk(2, dim=-1)
        return mean, F.softplus(raw) + 1e-6

    def sample_code(self, mean: torch.Tensor, sigma: torch.Tensor | None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """``mean + sigma * eps`` (eps ~ N(0, I) from ``generator``), or ``mean`` when deterministic."""
        if sigma is None:
            return mean
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device="cpu").to(mean.device)
        return mean + sigma * eps

    def forward(self, images: torch.Tensor, sample: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``images [B,3,S,S] -> points [B,num_points,3]`` (the mean code unless ``sample``)."""
        mean, sigma = self.encode_image(images)
        code = self.sample_code(mean, sigma, generator) if sample else mean
        return self.decode(code)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
