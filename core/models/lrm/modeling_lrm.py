"""OpenLRM v1.1: image -> triplanes -> NeRF renders / density grid.

``LRM(config)`` carries the published checkpoints' parameter names (``encoder.model.*``,
``camera_embedder.*``, ``pos_embed``, ``transformer.*``, ``upsampler.*``, ``synthesizer.decoder.*``)
so ``load_state_dict(strict=True)`` works on ``model.safetensors`` of
``zxhezexin/openlrm-{obj,mix}-{small,base,large}-1.1``.

Pipeline (shapes for batch N):
    image ``[N,3,S,S]`` in [0,1] -> encoder -> image_feats ``[N,1+(S/p)²,E]`` (patch p = 14);
    source camera ``[N,16]`` -> camera_embeddings ``[N,camera_embed_dim]``;
    learned tokens ``pos_embed [1,3·r²,D]`` -> transformer(cross-attn to image_feats,
    modulated by the camera) -> tokens ``[N,3·r²,D]`` (token = plane·r² + row·r + col);
    ConvTranspose2d(k2,s2) per plane -> planes ``[N,3,triplane_dim,2r,2r]``.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from .config import LRMConfig
from .encoder import Dinov2Encoder
from .outputs import FieldOutput, RenderOutput
from .renderer import RenderSettings, render_views
from .synthesizer import TriplaneSynthesizer
from .transformer import CameraEmbedder, TransformerDecoder

log = logging.getLogger(__name__)


class LRM(nn.Module):
    """OpenLRM v1.1 model (see module docstring). Weights are initialised by :meth:`init_weights`."""

    def __init__(self, config: LRMConfig | None = None) -> None:
        super().__init__()
        config = config or LRMConfig()
        self.config = config
        self.encoder = Dinov2Encoder(config.encoder_feat_dim, config.encoder_depth, config.encoder_heads,
                                     config.encoder_patch_size, config.encoder_img_size,
                                     config.encoder_num_registers)
        self.camera_embedder = CameraEmbedder(16, config.camera_embed_dim)
        self.pos_embed = nn.Parameter(torch.empty(1, 3 * config.triplane_low_res ** 2, config.transformer_dim))
        self.transformer = TransformerDecoder(config.transformer_layers, config.transformer_heads,
                                              config.transformer_dim, config.encoder_feat_dim,
                                              config.camera_embed_dim)
        self.upsampler = nn.ConvTranspose2d(config.transformer_dim, config.triplane_dim, kernel_size=2, stride=2)
        self.synthesizer = TriplaneSynthesizer(config.triplane_dim)
        self.render_settings = RenderSettings(config.depth_resolution, config.depth_resolution_importance)
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Random initialisation in the authors' style (for random-weight runs and benchmarks)."""
        def normal(t: torch.Tensor, std: float) -> None:
            t.copy_(torch.randn(t.shape, generator=generator) * std)

        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                normal(module.weight, 0.02)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.MultiheadAttention):
                for p in module.parameters(recurse=False):
                    normal(p, p.shape[-1] ** -0.5)
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
        vit = self.encoder.model
        normal(vit.pos_embed, 0.02)
        normal(vit.cls_token, 1e-6)
        if vit.register_tokens is not None:
            normal(vit.register_tokens, 1e-6)
        for block in vit.blocks:
            block.ls1.gamma.fill_(1.0)
            block.ls2.gamma.fill_(1.0)
        normal(self.pos_embed, self.config.transformer_dim ** -0.5)

    # ------------------------------------------------------------------ stages
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """``[N,3,H,W]`` in [0,1] -> image_feats ``[N,1+(H/p)·(W/p),E]`` ([CLS, patches row-major]),
        p = ``encoder_patch_size`` (14); inference feeds squares of ``source_size``."""
        return self.encoder(image)

    def embed_camera(self, camera: torch.Tensor) -> torch.Tensor:
        """``[N,16]`` -> ``[N,camera_embed_dim]``."""
        return self.camera_embedder(camera)

    def forward_transformer(self, image_feats: torch.Tensor, camera_embeddings: torch.Tensor) -> torch.Tensor:
        """-> tokens ``[N,3·r²,D]`` after the final LayerNorm."""
        x = self.pos_embed.expand(image_feats.shape[0], -1, -1)
        return self.transformer(x, image_feats, camera_embeddings)

    def upsample(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens ``[N,3·r²,D]`` -> planes ``[N,3,C,2r,2r]``."""
        n, r = tokens.shape[0], self.config.triplane_low_res
        x = tokens.reshape(n, 3, r, r, -1).permute(0, 1, 4, 2, 3).reshape(n * 3, -1, r, r)
        x = self.upsampler(x)
        return x.reshape(n, 3, *x.shape[-3:])

    def forward_planes(self, image: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        """image ``[N,3,S,S]`` in [0,1], source camera ``[N,16]`` -> planes ``[N,3,C,2r,2r]``."""
        feats = self.encode(image)
        tokens = self.forward_transformer(feats, self.embed_camera(camera))
        return self.upsample(tokens)

    def forward(self, image: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        return self.forward_planes(image, camera)

    # ------------------------------------------------------------------ queries
    def render(self, planes: torch.Tensor, cameras: torch.Tensor, resolution: int,
               bg_color: float | torch.Tensor = 1.0, **kwargs) -> RenderOutput:
        """Render ``cameras [N,M,25]`` of ``planes [N,3,C,H,W]`` at ``resolution²``.

        See :func:`renderer.render_views` for the outputs and the injectable random draws.
        """
        return render_views(self.synthesizer, planes, cameras, resolution, self.render_settings,
                            bg_color=bg_color, **kwargs)

    def query_grid(self, planes: torch.Tensor, grid_size: int, chunk: int = 2 ** 18) -> FieldOutput:
        """Activated density ``sigma [N,G,G,G,1]`` and ``rgb [N,G,G,G,3]`` on ``linspace(-1,1,G)³`` (x,y,z)."""
        return self.synthesizer.query_grid(planes, grid_size, chunk=chunk)

    def query_points(self, planes: torch.Tensor, points: torch.Tensor, chunk: int = 2 ** 18) -> FieldOutput:
        """Activated density ``[N,P,1]`` and ``rgb [N,P,3]`` at canonical-frame ``points [N,P,3]``."""
        return self.synthesizer.query_points(planes, points, chunk=chunk)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
