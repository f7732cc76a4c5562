"""Shap-E's latent decoder: latent -> the weights of an implicit function (NeRSTF MLP).

State dict names are ``vector_decoder.pt``'s (``params_proj.*``, ``renderer.*``); the
transmitter's decode path carries the same tensors under ``encoder.params_proj.*`` /
``renderer.*``.

- :class:`ChannelsParamsProj` (``bottleneck_to_params``): the latent ``[B, D]`` viewed as
  ``[B, latent_ctx, C]`` tokens; the tokens of meta layer i (one per weight row, layers in order)
  give that layer's weight ``[B, out_i, in_i]``: ``h[v, c] = sum_d tok[v, d] P[v, c, d]`` with
  ``P = proj.weight`` viewed ``[out_i, in_i, C]``, LayerNorm over c, then ``+ proj.bias`` viewed
  ``[out_i, in_i]``.
- :class:`NeRSTFMLP` (MLPNeRSTFModel): input ``[x, y, z, sin(2^k p_d), sin(2^k p_d + pi/2)]``
  (93 values, index 3k + d in each half, k = 0..14); layers 0..n_meta-1 use the latent's weights
  and the module's biases; layer ``insert_direction_at`` reads ``[h, 51 zeros]`` (no view
  directions, as the authors' notebooks render); swish after every layer but the last; 12
  outputs -> SDF (tanh), coarse / fine density (relu), STF / coarse NeRF / fine NeRF colour
  (sigmoid). Positions are in the object box [-1, 1]^3 (Shap-E's frame, z up).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import DIRECTION_CHANNELS, MLP_OUTPUTS, POSENC_OCTAVES, DecoderConfig


def posenc_nerf(points: torch.Tensor) -> torch.Tensor:
    """``[..., 3]`` -> ``[..., 93]``: the points, then sin(2^k p_d) and sin(2^k p_d + pi/2) for
    k = 0..14 (index 3k + d within each half)."""
    scales = 2.0 ** torch.arange(POSENC_OCTAVES, dtype=points.dtype, device=points.device)
    scaled = (points[..., None, :] * scales[:, None]).flatten(-2)           # [..., 45]
    return torch.cat([points, torch.sin(scaled), torch.sin(scaled + torch.pi / 2)], dim=-1)


class _Projection(nn.Module):
    """``proj`` (Linear d_latent -> out·in) and ``norm`` (LayerNorm over in) of one meta layer."""

    def __init__(self, rows: int, cols: int, d_latent: int, use_ln: bool) -> None:
        super().__init__()
        self.rows, self.cols = rows, cols
        self.proj = nn.Linear(d_latent, rows * cols)
        self.norm = nn.LayerNorm(cols, eps=1e-5) if use_ln else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens ``[B, rows, d]`` -> weight ``[B, rows, cols]``."""
        weight = self.proj.weight.view(self.rows, self.cols, -1)
        h = torch.einsum("bvd,vcd->bvc", tokens, weight)
        if self.norm is not None:
            h = self.norm(h)
        return h + self.proj.bias.view(self.rows, self.cols)


class ChannelsParamsProj(nn.Module):
    """``params_proj``: projections named ``nerstf__mlp__<i>__weight``."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        if not config.use_ln:
            raise ValueError("only the published params_proj with LayerNorm is supported")
        self.shapes = config.meta_shapes()
        self.projections = nn.ModuleDict({
            f"nerstf__mlp__{i}__weight": _Projection(rows, cols, config.d_latent, config.use_ln)
            for i, (rows, cols) in enumerate(self.shapes)})
        self.latent_ctx, self.d_latent = config.latent_ctx, config.d_latent

    def forward(self, latent: torch.Tensor) -> list[torch.Tensor]:
        """latent ``[B, latent_ctx·d_latent]`` -> meta weights ``[B, out_i, in_i]`` per layer."""
        tokens = latent.view(latent.shape[0], self.latent_ctx, self.d_latent)
        out, start = [], 0
        for i, (rows, _) in enumerate(self.shapes):
            out.append(self.projections[f"nerstf__mlp__{i}__weight"](tokens[:, start:start + rows]))
            start += rows
        return out


@dataclass(frozen=True, eq=False)
class FieldOutput:
    """The implicit function at ``[B, N, 3]`` points (float32).

    Attributes:
        signed_distance: ``[B, N, 1]`` tanh SDF (inside > 0).
        density_coarse / density_fine: ``[B, N, 1]`` relu densities (per unit length, box units).
        channels_stf / channels_coarse / channels_fine: ``[B, N, 3]`` colours in [0, 1] (sRGB).
    """

    signed_distance: torch.Tensor
    density_coarse: torch.Tensor
    density_fine: torch.Tensor
    channels_stf: torch.Tensor
    channels_coarse: torch.Tensor
    channels_fine: torch.Tensor


class NeRSTFMLP(nn.Module):
    """``renderer.nerstf``: ``mlp.<i>`` Linear layers; layers < n_meta keep only their bias as
    parameters (their ``weight`` is a buffer in the checkpoint, replaced by the latent's)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        h = config.d_hidden
        layers = []
        for i in range(config.n_hidden_layers + 1):
            d_in = config.input_channels if i == 0 else h
            if i == config.insert_direction_at:
                d_in += DIRECTION_CHANNELS
            d_out = MLP_OUTPUTS if i == config.n_hidden_layers else h
            layers.append(nn.Linear(d_in, d_out))
        self.mlp = nn.ModuleList(layers)
        for i in range(config.n_meta_layers):   # trainable_meta false: the weight is a buffer
            weight = self.mlp[i].weight.data
            del self.mlp[i].weight
            self.mlp[i].register_buffer("weight", weight)

    def forward(self, points: torch.Tensor, meta: list[torch.Tensor]) -> FieldOutput:
        """points ``[B, N, 3]`` in the box, meta weights ``[B, out_i, in_i]`` -> :class:`FieldOutput`."""
        h = posenc_nerf(points)
        last = len(self.mlp) - 1
        for i, layer in enumerate(self.mlp):
            if i == self.config.insert_direction_at:
                h = torch.cat([h, h.new_zeros(*h.shape[:-1], DIRECTION_CHANNELS)], dim=-1)
            if i < self.config.n_meta_layers:
                h = torch.einsum("bni,boi->bno", h, meta[i]) + layer.bias
            else:
                h = layer(h)
            if i < last:
                h = F.silu(h)
        return FieldOutput(
            signed_distance=torch.tanh(h[..., 0:1]), density_coarse=F.relu(h[..., 1:2]),
            density_fine=F.relu(h[..., 2:3]), channels_stf=torch.sigmoid(h[..., 3:6]),
            channels_coarse=torch.sigmoid(h[..., 6:9]), channels_fine=torch.sigmoid(h[..., 9:12]))


class NeRSTFRenderer(nn.Module):
    """``renderer``: the MLP (``nerstf``) and the void background buffer (``void.background``
    ``[3]`` = background / 255)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.nerstf = NeRSTFMLP(config)
        self.void = nn.Module()
        self.void.register_buffer("background",
                                  torch.tensor(config.background, dtype=torch.float32) / 255.0)


class ShapEDecoder(nn.Module):
    """``ChannelsDecoder``: ``params_proj`` and ``renderer`` (names of ``vector_decoder.pt``)."""

    def __init__(self, config: DecoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DecoderConfig()
        self.params_proj = ChannelsParamsProj(config)
        self.renderer = NeRSTFRenderer(config)

    def bottleneck_to_params(self, latent: torch.Tensor) -> list[torch.Tensor]:
        """latent ``[B, D]`` -> the meta layers' weights ``[B, out_i, in_i]``."""
        return self.params_proj(latent)

    def field(self, points: torch.Tensor, meta: list[torch.Tensor],
              chunk: int = 2 ** 16) -> FieldOutput:
        """The implicit function at ``[B, N, 3]`` points, evaluated in chunks of points."""
        if points.shape[1] <= chunk:
            return self.renderer.nerstf(points, meta)
        parts = [self.renderer.nerstf(points[:, s:s + chunk], meta)
                 for s in range(0, points.shape[1], chunk)]
        return FieldOutput(*(torch.cat([getattr(p, name) for p in parts], dim=1)
                             for name in FieldOutput.__dataclass_fields__))
