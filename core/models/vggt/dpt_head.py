"""DPT dense head (Ranftl et al. 2021) as used by VGGT for depth and world points.

Reads the patch tokens of four trunk layers (``[B, S, P, 2C]``, patch tokens from index
``patch_start_idx``), reassembles them at 4x, 2x, 1x and 1/2x the patch grid, fuses them
coarse-to-fine (RefineNet blocks), upsamples to the input resolution and predicts
``output_dim`` channels per pixel: the first ``output_dim - 1`` are the value (depth through
``exp``, world points through ``sign(y)(exp|y| - 1)``), the last the confidence ``1 + exp(c)``.

Frames are processed in chunks (``frames_chunk_size``) so that the full-resolution feature
maps of only a few frames exist at a time.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def uv_grid(width: int, height: int, aspect_ratio: float, dtype: torch.dtype,
            device: torch.device) -> torch.Tensor:
    """``[height, width, 2]`` normalised (u, v) pixel coordinates: the grid spans
    ``aspect_ratio / d`` horizontally and ``1 / d`` vertically, ``d = sqrt(aspect^2 + 1)``,
    sampled at cell centres."""
    diag = (aspect_ratio ** 2 + 1) ** 0.5
    span_x, span_y = aspect_ratio / diag, 1 / diag
    xs = torch.linspace(-span_x * (width - 1) / width, span_x * (width - 1) / width, steps=width,
                        dtype=dtype, device=device)
    ys = torch.linspace(-span_y * (height - 1) / height, span_y * (height - 1) / height,
                        steps=height, dtype=dtype, device=device)
    uu, vv = torch.meshgrid(xs, ys, indexing="xy")
    return torch.stack((uu, vv), dim=-1)


def _sincos(dim: int, pos: torch.Tensor, omega_0: float = 100.0) -> torch.Tensor:
    """``[M, dim]`` = [sin(pos * w), cos(pos * w)], ``w_j = omega_0 ** (-j / (dim/2))``."""
    omega = torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0)
    omega = 1.0 / omega_0 ** omega
    angles = pos.reshape(-1).double()[:, None] * omega[None]
    return torch.cat((angles.sin(), angles.cos()), dim=1).float()


def grid_embedding(height: int, width: int, channels: int, aspect_ratio: float,
                   dtype: torch.dtype, device: torch.device, ratio: float = 0.1) -> torch.Tensor:
    """``[channels, height, width]`` sine-cosine embedding of the uv grid, times ``ratio``
    (first half of the channels encodes u, the second v)."""
    u, v = _grid_embedding_axes(height, width, channels, aspect_ratio, dtype, device, ratio)
    return torch.cat((u.expand(-1, height, -1), v.expand(-1, -1, width)))


def _grid_embedding_axes(height: int, width: int, channels: int, aspect_ratio: float,
                         dtype: torch.dtype, device: torch.device, ratio: float
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The two separable halves of :func:`grid_embedding`: ``u [channels/2, 1, width]`` (a
    function of the column only) and ``v [channels/2, height, 1]`` (of the row only), each value
    computed exactly as the full grid computes it, from ``width`` + ``height`` positions instead
    of ``height * width``."""
    if channels % 4:
        raise ValueError(f"the grid embedding needs channels divisible by 4, got {channels}")
    row = uv_grid(width, 1, aspect_ratio, dtype, device)[0, :, 0]        # u of each column
    column = uv_grid(1, height, aspect_ratio, dtype, device)[:, 0, 1]    # v of each row
    u = (_sincos(channels // 2, row) * ratio).to(dtype)                  # [width, C/2]
    v = (_sincos(channels // 2, column) * ratio).to(dtype)               # [height, C/2]
    return u.t()[:, None, :], v.t()[:, :, None]


def add_grid_embedding(x: torch.Tensor, aspect_ratio: float, ratio: float = 0.1) -> torch.Tensor:
    """``x [N, C, H, W] + grid_embedding(H, W, C, aspect_ratio)``, broadcast from its two
    separable halves (no ``[C, H, W]`` table, no per-pixel sines): the same values, bit for bit."""
    n, c, h, w = x.shape
    u, v = _grid_embedding_axes(h, w, c, aspect_ratio, x.dtype, x.device, ratio)
    if torch.is_grad_enabled() and x.requires_grad:   # out= has no autograd (attribution backprops here)
        return torch.cat((x[:, : c // 2] + u, x[:, c // 2:] + v), dim=1)
    out = torch.empty_like(x)
    torch.add(x[:, : c // 2], u, out=out[:, : c // 2])
    torch.add(x[:, c // 2:], v, out=out[:, c // 2:])
    return out


class ResidualConvUnit(nn.Module):
    """``relu(x) + conv2(relu(conv1(relu(x))))``.

    The reference applies an in-place ReLU to its input before the convolutions, so its skip
    connection carries ``relu(x)``, not ``x``; the conformance fixture confirms this.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class FusionBlock(nn.Module):
    """RefineNet fusion: ``out_conv(up(RCU2(x + RCU1(skip))))``, bilinear align_corners=True
    upsampling to ``size`` (or x2 when no size is given)."""

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.has_residual = has_residual
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            size = (x.shape[-2] * 2, x.shape[-1] * 2)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Scratch(nn.Module):
    """Container matching the checkpoint's ``scratch.*`` names."""

    def __init__(self, out_channels: tuple[int, ...], features: int, output_dim: int) -> None:
        super().__init__()
        self.layer1_rn = nn.Conv2d(out_channels[0], features, 3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(out_channels[1], features, 3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(out_channels[2], features, 3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(out_channels[3], features, 3, padding=1, bias=False)
        self.refinenet1 = FusionBlock(features)
        self.refinenet2 = FusionBlock(features)
        self.refinenet3 = FusionBlock(features)
        self.refinenet4 = FusionBlock(features, has_residual=False)
        self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, output_dim, 1))


def _inverse_log(y: torch.Tensor) -> torch.Tensor:
    return torch.sign(y) * torch.expm1(torch.abs(y))


class DPTHead(nn.Module):
    """Dense prediction head.

    Args:
        dim_in: token width (2C).
        output_dim: channels predicted per pixel including the confidence (depth 2, points 4).
        activation: ``exp`` (depth) or ``inv_log`` (points).
        features, out_channels, intermediate_layer_idx: sizes (VGGT-1B: 256,
            (256, 512, 1024, 1024), (4, 11, 17, 23)).
    """

    def __init__(self, dim_in: int, patch_size: int = 14, output_dim: int = 4,
                 activation: str = "inv_log", features: int = 256,
                 out_channels: tuple[int, ...] = (256, 512, 1024, 1024),
                 intermediate_layer_idx: tuple[int, ...] = (4, 11, 17, 23)) -> None:
        super().__init__()
        if activation not in ("exp", "inv_log"):
            raise ValueError(f"unknown activation {activation!r}")
        self.patch_size = patch_size
        self.activation = activation
        self.intermediate_layer_idx = tuple(intermediate_layer_idx)
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, oc, 1) for oc in out_channels)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1)])
        self.scratch = Scratch(tuple(out_channels), features, output_dim)

    def forward(self, layers: dict[int, torch.Tensor] | list[torch.Tensor], image_hw: tuple[int, int],
                patch_start_idx: int, frames_chunk_size: int | None = 8
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict per-pixel values.

        Args:
            layers: trunk outputs indexed by layer, each ``[B, S, P, 2C]``.
            image_hw: input image (H, W).
            patch_start_idx: index of the first patch token.
            frames_chunk_size: frames per chunk (None: all at once).

        Returns:
            ``(value [B, S, H, W, output_dim - 1], confidence [B, S, H, W])``.
        """
        first = layers[self.intermediate_layer_idx[0]]
        s = first.shape[1]
        step = s if not frames_chunk_size or frames_chunk_size >= s else frames_chunk_size
        values, confs = [], []
        for start in range(0, s, step):
            value, conf = self._forward_frames(layers, image_hw, patch_start_idx, start,
                                               min(s, start + step))
            values.append(value)
            confs.append(conf)
        if len(values) == 1:
            return values[0], confs[0]
        return torch.cat(values, dim=1), torch.cat(confs, dim=1)

    def _forward_frames(self, layers, image_hw, patch_start_idx, start, end):
        h, w = image_hw
        ph, pw = h // self.patch_size, w // self.patch_size
        feats = []
        for i, layer in enumerate(self.intermediate_layer_idx):
            x = layers[layer][:, start:end, patch_start_idx:]
            b, s = x.shape[:2]
            x = self.norm(x.reshape(b * s, ph * pw, x.shape[-1]))
            x = x.permute(0, 2, 1).reshape(b * s, -1, ph, pw)
            x = self.projects[i](x)
            x = add_grid_embedding(x, w / h)
            feats.append(self.resize_layers[i](x))
        sc = self.scratch
        l1, l2, l3, l4 = (sc.layer1_rn(feats[0]), sc.layer2_rn(feats[1]),
                          sc.layer3_rn(feats[2]), sc.layer4_rn(feats[3]))
        del feats
        out = sc.refinenet4(l4, size=l3.shape[2:])
        out = sc.refinenet3(out, l3, size=l2.shape[2:])
        out = sc.refinenet2(out, l2, size=l1.shape[2:])
        out = sc.refinenet1(out, l1)
        del l1, l2, l3, l4
        out = sc.output_conv1(out)
        out = F.interpolate(out, size=(ph * self.patch_size, pw * self.patch_size),
                            mode="bilinear", align_corners=True)
        out = add_grid_embedding(out, w / h)
        out = sc.output_conv2(out).permute(0, 2, 3, 1)
        value, conf = out[..., :-1], out[..., -1]
        value = torch.exp(value) if self.activation == "exp" else _inverse_log(value)
        conf = 1 + torch.exp(conf)
        return (value.reshape(b, s, *value.shape[1:]), conf.reshape(b, s, *conf.shape[1:]))
