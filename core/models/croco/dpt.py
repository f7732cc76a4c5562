"""DPT pointmap head of DUSt3R/Fast3R, the linear head of ``_linear`` checkpoints, output activations.

Parameter names follow the published checkpoints (``dpt.act_postprocess``, ``dpt.scratch``,
``dpt.head``; ``proj`` for the linear head). ``dpt.scratch.layer_rn.<i>`` is the same module as
``dpt.scratch.layer<i+1>_rn`` (tied): the module's ``state_dict`` carries both names, the
published safetensors files only the second (see :func:`add_tied_aliases`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Pixels per token of the DPT head, whatever its widths: its finest reassembled layer is 4x the
# token grid, the last fusion block doubles it and the output conv doubles it again. Encoders
# with another patch size need the linear head.
DPT_PATCH_SIZE = 16


class ResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` with 3x3 convolutions."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """``out_conv(up2(RCU2(x + RCU1(skip))))``; bilinear x2 upsampling with ``align_corners=True``."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Interpolate(nn.Module):
    """Bilinear x2 upsampling (``align_corners=True``); a parameter-free slot in ``dpt.head``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class Scratch(nn.Module):
    """3x3 bias-free projections to ``feature_dim`` and the four fusion blocks."""

    def __init__(self, layer_dims: list[int], feature_dim: int) -> None:
        super().__init__()
        for i, dim in enumerate(layer_dims):
            setattr(self, f"layer{i + 1}_rn", nn.Conv2d(dim, feature_dim, 3, padding=1, bias=False))
        # The reference also lists the same four convolutions here; the state_dict has both names.
        self.layer_rn = nn.ModuleList([getattr(self, f"layer{i + 1}_rn") for i in range(len(layer_dims))])
        for i in range(len(layer_dims)):
            setattr(self, f"refinenet{i + 1}", FusionBlock(feature_dim))


class DPTAdapter(nn.Module):
    """Dense prediction from four token layers.

    Args:
        dim_tokens: widths of the four hooked token layers (``[enc, dec, dec, dec]``).
        hooks: indices of the hooked layers in the token list.
        layer_dims: channel widths after ``act_postprocess`` (published ``[96,192,384,768]``).
        feature_dim: fusion width (published 256).
        last_dim: width before the output conv (published 128).
        num_channels: output channels (4: xyz + confidence).
        patch_size: tokens are patches of ``patch_size`` pixels.
    """

    def __init__(self, dim_tokens: list[int], hooks: list[int], layer_dims: list[int],
                 feature_dim: int = 256, last_dim: int = 128, num_channels: int = 4,
                 patch_size: int = 16) -> None:
        super().__init__()
        self.hooks = list(hooks)
        self.patch_size = patch_size
        d = layer_dims
        self.act_postprocess = nn.ModuleList([
            nn.Sequential(nn.Conv2d(dim_tokens[0], d[0], 1), nn.ConvTranspose2d(d[0], d[0], 4, stride=4)),
            nn.Sequential(nn.Conv2d(dim_tokens[1], d[1], 1), nn.ConvTranspose2d(d[1], d[1], 2, stride=2)),
            nn.Sequential(nn.Conv2d(dim_tokens[2], d[2], 1)),
            nn.Sequential(nn.Conv2d(dim_tokens[3], d[3], 1), nn.Conv2d(d[3], d[3], 3, stride=2, padding=1)),
        ])
        self.scratch = Scratch(layer_dims, feature_dim)
        self.head = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim // 2, 3, padding=1),
            Interpolate(),
            nn.Conv2d(feature_dim // 2, last_dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(last_dim, num_channels, 1),
        )

    def forward(self, tokens: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        """``tokens``: list of ``[B, N, C_l]`` (N = (H/p)(W/p), row-major) -> ``[B, num_channels, H, W]``."""
        h, w = image_size
        rows, cols = h // self.patch_size, w // self.patch_size
        layers = []
        for i, hook in enumerate(self.hooks):
            t = tokens[hook]
            b, n, c = t.shape
            if n != rows * cols:
                raise ValueError(f"{n} tokens do not tile a {rows}x{cols} patch grid")
            x = t.transpose(1, 2).reshape(b, c, rows, cols)
            x = self.act_postprocess[i](x)
            layers.append(self.scratch.layer_rn[i](x))
        path = self.scratch.refinenet4(layers[3])[:, :, :layers[2].shape[2], :layers[2].shape[3]]
        path = self.scratch.refinenet3(path, layers[2])
        path = self.scratch.refinenet2(path, layers[1])
        path = self.scratch.refinenet1(path, layers[0])
        return self.head(path)


class DPTHead(nn.Module):
    """Pointmap head: ``dpt`` adapter returning the raw 4-channel map (activation separate)."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.dpt = DPTAdapter(**kwargs)

    def forward(self, tokens: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        return self.dpt(tokens, image_size)


class LinearHead(nn.Module):
    """Head of the ``_linear`` checkpoints: ``proj`` Linear(dec, 4*p*p) on the last token layer.

    Row ``c*p*p + dy*p + dx`` of the output is channel ``c`` of pixel ``(dy, dx)`` of the token's
    patch (a pixel shuffle by ``p``).
    """

    def __init__(self, dim: int, patch_size: int = 16, num_channels: int = 4) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(dim, num_channels * patch_size ** 2)

    def forward(self, tokens: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        h, w = image_size
        p = self.patch_size
        x = self.proj(tokens[-1])  # [B, N, 4*p*p]
        b = x.shape[0]
        x = x.transpose(1, 2).reshape(b, -1, h // p, w // p)
        return F.pixel_shuffle(x, p)


def activate_pointmap(raw: torch.Tensor, depth_mode=("exp", -float("inf"), float("inf")),
                      conf_mode=("exp", 1.0, float("inf"))) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Raw head map -> (points, confidence).

    Args:
        raw: ``[B, 4, H, W]`` (channels 0-2 the direction/size code p, channel 3 the confidence code c).
        depth_mode: ``(mode, vmin, vmax)``; ``exp``: ``p/|p| * expm1(|p|)``, ``square``: ``p*|p|``,
            ``linear``: ``p``. Only unbounded ranges are supported, as published.
        conf_mode: ``(mode, vmin, vmax)``; ``exp``: ``vmin + min(exp(c), vmax - vmin)``;
            ``sigmoid``: ``vmin + (vmax - vmin)*sigmoid(c)``; None for no confidence.

    Returns:
        ``pts3d [B, H, W, 3]`` and ``conf [B, H, W]`` (or None).
    """
    fmap = raw.permute(0, 2, 3, 1)
    xyz = fmap[..., :3]
    mode, vmin, vmax = depth_mode
    if float(vmin) != -float("inf") or float(vmax) != float("inf"):
        raise ValueError(f"bounded depth_mode {depth_mode} is not supported")
    if mode == "linear":
        pts = xyz
    else:
        norm = xyz.norm(dim=-1, keepdim=True)
        unit = xyz / norm.clip(min=1e-8)
        if mode == "exp":
            pts = unit * torch.expm1(norm)
        elif mode == "square":
            pts = unit * norm.square()
        else:
            raise ValueError(f"unknown depth_mode {mode!r}")
    conf = None
    if conf_mode is not None:
        cmode, cmin, cmax = conf_mode
        c = fmap[..., 3]
        if cmode == "exp":
            conf = float(cmin) + c.exp().clip(max=float(cmax) - float(cmin))
        elif cmode == "sigmoid":
            conf = (float(cmax) - float(cmin)) * torch.sigmoid(c) + float(cmin)
        else:
            raise ValueError(f"unknown conf_mode {cmode!r}")
    return pts, conf


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """``{alias: stored name}`` for every ``...scratch.layer_rn.<i>.weight`` in ``model``'s state_dict."""
    out = {}
    for name in model.state_dict(keep_vars=True):
        marker = ".scratch.layer_rn."
        if marker in name:
            prefix, rest = name.split(marker)
            index, leaf = rest.split(".", 1)
            out[name] = f"{prefix}.scratch.layer{int(index) + 1}_rn.{leaf}"
    return out


def add_tied_aliases(model: nn.Module, state: dict) -> dict:
    """A copy of ``state`` with the tied alias names filled in from their stored twins (if absent)."""
    state = dict(state)
    for alias, stored in tied_aliases(model).items():
        if alias not in state and stored in state:
            state[alias] = state[stored]
    return state
