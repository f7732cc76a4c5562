"""DA3's DualDPT head: depth (+ confidence) and per-pixel rays (+ confidence) from four layers.

Names follow the checkpoints under ``model.head.``: ``norm`` (LayerNorm 2D), ``projects.k``
(1x1), ``resize_layers.{0,1,3}`` (transposed 4/4, transposed 2/2, identity, 3x3 stride 2),
``scratch.layer{1..4}_rn`` (3x3, no bias), two fusion chains ``scratch.refinenet{1..4}`` and
``scratch.refinenet{1..4}_aux``, ``scratch.output_conv1`` / ``output_conv2`` (depth) and
``scratch.output_conv1_aux.<l>`` / ``output_conv2_aux.<l>`` (rays, levels l = 0..3).

The reference builds one LayerNorm and puts it into all four ``output_conv2_aux.<l>`` levels
(``output_conv2_aux.<l>.2``: tied tensors, see :mod:`.checkpoints`), and runs the ray output
convolutions on all four fusion levels, keeping only the finest; the coarser three outputs are
never used, so this implementation does not compute them (same outputs, less work).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.models.vggt.dpt_head import add_grid_embedding

from .config import DA3Config

RAY_CHANNELS = 6  # direction xyz, camera centre xyz


class ResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` (the skip carries ``x`` itself)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """RefineNet fusion ``out_conv(up(RCU2(x + RCU1(skip))))``; bilinear, align_corners=True, to
    ``size`` (x2 when None)."""

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        size = tuple(size) if size is not None else (2 * x.shape[-2], 2 * x.shape[-1])
        return self.out_conv(F.interpolate(x, size=size, mode="bilinear", align_corners=True))


class _Slot(nn.Module):
    """A parameter-free placeholder keeping the checkpoint's Sequential indices."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class RayOutput(nn.Sequential):
    """``output_conv2_aux.<l>``: 3x3 conv F/2 -> 32, LayerNorm over channels (index 2, shared
    between levels), ReLU, 1x1 conv 32 -> 7. Indices 0..5 as the checkpoint's."""

    def __init__(self, in_channels: int, shared_norm: nn.LayerNorm) -> None:
        super().__init__()
        self.add_module("0", nn.Conv2d(in_channels, 32, 3, padding=1))
        self.add_module("1", _Slot())
        self.add_module("2", shared_norm)
        self.add_module("3", _Slot())
        self.add_module("4", nn.ReLU())
        self.add_module("5", nn.Conv2d(32, RAY_CHANNELS + 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self[0](x)
        x = self[2](x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self[5](F.relu(x))


def _ray_convs(features: int) -> nn.Sequential:
    """``output_conv1_aux.<l>``: five 3x3 convs F -> F/2 -> F -> F/2 -> F -> F/2, no activation."""
    half = features // 2
    widths = [features, half, features, half, features, half]
    return nn.Sequential(*(nn.Conv2d(widths[i], widths[i + 1], 3, padding=1) for i in range(5)))


class Scratch(nn.Module):
    """Container matching the checkpoint's ``head.scratch.*`` names."""

    def __init__(self, out_channels: tuple[int, ...], features: int) -> None:
        super().__init__()
        for k, oc in enumerate(out_channels):
            setattr(self, f"layer{k + 1}_rn", nn.Conv2d(oc, features, 3, padding=1, bias=False))
        for suffix in ("", "_aux"):
            for k in (1, 2, 3, 4):
                setattr(self, f"refinenet{k}{suffix}", FusionBlock(features, has_residual=k != 4))
        half = features // 2
        self.output_conv1 = nn.Conv2d(features, half, 3, padding=1)
        self.output_conv2 = nn.Sequential(nn.Conv2d(half, 32, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(32, 2, 1))
        self.output_conv1_aux = nn.ModuleList(_ray_convs(features) for _ in range(4))
        shared = nn.LayerNorm(32)
        self.output_conv2_aux = nn.ModuleList(RayOutput(half, shared) for _ in range(4))


@dataclass
class HeadOutput:
    """Dense predictions of one forward pass.

    Attributes:
        depth: ``[B, S, H, W]`` = exp(logit 0), up to the model's (arbitrary) scale.
        depth_conf: ``[B, S, H, W]`` = 1 + exp(logit 1).
        ray: ``[B, S, 8h, 8w, 6]`` per-pixel ray direction (xyz, world frame, not unit) and
            camera centre (xyz), at 8x the patch grid (not H x W).
        ray_conf: ``[B, S, 8h, 8w]`` = 1 + exp.
    """

    depth: torch.Tensor
    depth_conf: torch.Tensor
    ray: torch.Tensor
    ray_conf: torch.Tensor


class DualDPT(nn.Module):
    """The dual DPT head (``model.head``)."""

    def __init__(self, config: DA3Config) -> None:
        super().__init__()
        oc = config.head_out_channels
        self.patch_size = config.patch_size
        self.norm = nn.LayerNorm(config.head_dim_in, eps=1e-5)
        self.projects = nn.ModuleList(nn.Conv2d(config.head_dim_in, c, 1) for c in oc)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1)])
        self.scratch = Scratch(oc, config.head_features)

    def forward(self, feats: list[torch.Tensor], image_hw: tuple[int, int]) -> HeadOutput:
        """``feats``: 4 x ``[B, S, h·w, 2D]`` (see :class:`.backbone.BackboneOutput`)."""
        h, w = image_hw
        gh, gw = h // self.patch_size, w // self.patch_size
        b, s = feats[0].shape[:2]
        aspect = w / h
        levels = []
        for k, tokens in enumerate(feats):
            x = self.norm(tokens.reshape(b * s, gh * gw, -1))
            x = x.permute(0, 2, 1).reshape(b * s, -1, gh, gw)
            x = self.projects[k](x)
            x = add_grid_embedding(x, aspect)
            levels.append(self.resize_layers[k](x))
        sc = self.scratch
        l1, l2, l3, l4 = (sc.layer1_rn(levels[0]), sc.layer2_rn(levels[1]),
                          sc.layer3_rn(levels[2]), sc.layer4_rn(levels[3]))
        fused = []
        for suffix in ("", "_aux"):
            net = [getattr(sc, f"refinenet{k}{suffix}") for k in (1, 2, 3, 4)]
            out = net[3](l4, size=l3.shape[2:])
            out = net[2](out, l3, size=l2.shape[2:])
            out = net[1](out, l2, size=l1.shape[2:])
            fused.append(net[0](out, l1))
        main, aux = fused
        main = F.interpolate(sc.output_conv1(main), size=(h, w), mode="bilinear",
                             align_corners=True)
        main = add_grid_embedding(main, aspect)
        logits = sc.output_conv2(main)
        aux = sc.output_conv1_aux[3](aux)
        aux = add_grid_embedding(aux, aspect)
        rays = sc.output_conv2_aux[3](aux).permute(0, 2, 3, 1)
        rh, rw = rays.shape[1:3]
        return HeadOutput(
            depth=torch.exp(logits[:, 0]).reshape(b, s, h, w),
            depth_conf=(1 + torch.exp(logits[:, 1])).reshape(b, s, h, w),
            ray=rays[..., :RAY_CHANNELS].reshape(b, s, rh, rw, RAY_CHANNELS),
            ray_conf=(1 + torch.exp(rays[..., RAY_CHANNELS])).reshape(b, s, rh, rw))
