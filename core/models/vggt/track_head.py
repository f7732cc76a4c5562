"""VGGT's track head: a DPT feature extractor and the iterative :class:`~.tracker.Tracker`.

``TrackHead(...)(layers, image_hw, patch_start_idx, query_points)`` reads the same four trunk
layers as the depth and point heads, builds C-channel feature maps at half the input resolution
(``[B, S, C, H/2, W/2]``) and tracks N query points of frame 0 through the S frames.

The feature extractor is the DPT head of :mod:`.dpt_head` with ``features = C``, except: no
position embedding anywhere, ``scratch.output_conv1`` is a 3x3 convolution C -> C, the fused map
is resized bilinearly (align_corners=True) to (H/2, W/2), and there is no ``output_conv2`` and no
activation. Frames are processed in chunks (8 by default, as in the reference) so only a few
frames' full-resolution maps exist at a time.

Parameter names are ``track_head.*`` of ``facebook/VGGT-1B`` (``feature_extractor.*``,
``tracker.*``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VGGTConfig
from .dpt_head import FusionBlock
from .tracker import STRIDE, TrackCapture, Tracker, TrackInputError


class TrackScratch(nn.Module):
    """Container matching the checkpoint's ``feature_extractor.scratch.*`` names."""

    def __init__(self, out_channels: tuple[int, ...], features: int) -> None:
        super().__init__()
        self.layer1_rn = nn.Conv2d(out_channels[0], features, 3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(out_channels[1], features, 3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(out_channels[2], features, 3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(out_channels[3], features, 3, padding=1, bias=False)
        self.refinenet1 = FusionBlock(features)
        self.refinenet2 = FusionBlock(features)
        self.refinenet3 = FusionBlock(features)
        self.refinenet4 = FusionBlock(features, has_residual=False)
        self.output_conv1 = nn.Conv2d(features, features, 3, padding=1)


class TrackFeatureExtractor(nn.Module):
    """DPT feature head: trunk layers ``[B, S, P, 2C_trunk]`` -> maps ``[B, S, C, H/2, W/2]``.

    Args:
        dim_in: token width (2 x the trunk's embed_dim).
        patch_size: patch side in pixels (14).
        features: C, output channels.
        out_channels, intermediate_layer_idx: reassemble widths and trunk layers read.
    """

    def __init__(self, dim_in: int, patch_size: int, features: int, out_channels: tuple[int, ...],
                 intermediate_layer_idx: tuple[int, ...]) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.intermediate_layer_idx = tuple(intermediate_layer_idx)
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, oc, 1) for oc in out_channels)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1)])
        self.scratch = TrackScratch(tuple(out_channels), features)

    def forward(self, layers: dict[int, torch.Tensor], image_hw: tuple[int, int],
                patch_start_idx: int, frames_chunk_size: int | None = 8) -> torch.Tensor:
        """Feature maps ``[B, S, C, H/2, W/2]`` (float, same dtype as the tokens).

        Args:
            layers: trunk outputs by layer index, each ``[B, S, P, 2C_trunk]``.
            image_hw: input (H, W) in pixels.
            patch_start_idx: index of the first patch token in each frame.
            frames_chunk_size: frames per chunk (None or 0: all at once).
        """
        s = layers[self.intermediate_layer_idx[0]].shape[1]
        step = s if not frames_chunk_size or frames_chunk_size >= s else frames_chunk_size
        chunks = [self._frames(layers, image_hw, patch_start_idx, start, min(s, start + step))
                  for start in range(0, s, step)]
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)

    def _frames(self, layers, image_hw, patch_start_idx, start, end) -> torch.Tensor:
        h, w = image_hw
        ph, pw = h // self.patch_size, w // self.patch_size
        feats = []
        for i, layer in enumerate(self.intermediate_layer_idx):
            x = layers[layer][:, start:end, patch_start_idx:]
            b, s = x.shape[:2]
            x = self.norm(x.reshape(b * s, ph * pw, x.shape[-1]))
            x = x.permute(0, 2, 1).reshape(b * s, -1, ph, pw)
            feats.append(self.resize_layers[i](self.projects[i](x)))
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
        size = (ph * self.patch_size // STRIDE, pw * self.patch_size // STRIDE)
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=True)
        return out.reshape(b, s, *out.shape[1:])


def check_query_points(query_points: torch.Tensor, image_hw: tuple[int, int],
                       batch: int | None = None, max_points: int | None = None) -> torch.Tensor:
    """Validate query points and return them as ``[B, N, 2]`` float.

    Args:
        query_points: ``[N, 2]`` or ``[B, N, 2]`` (x, y) pixels of frame 0 (integer = pixel
            centre, so the image spans ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``).
        image_hw: (H, W) of the images the points refer to.
        batch: the images' batch size B (checked when given; ``[N, 2]`` is repeated over it).
        max_points: largest N accepted (pages use :data:`MAX_QUERY_POINTS`; the model none).

    Raises:
        TrackInputError: wrong shape, no points, too many, not finite, or outside the image.
    """
    if not isinstance(query_points, torch.Tensor):
        query_points = torch.as_tensor(query_points, dtype=torch.float32)
    if query_points.dim() == 2 and batch is not None:
        query_points = query_points[None].expand(batch, -1, -1)
    elif query_points.dim() == 2:
        query_points = query_points[None]
    if query_points.dim() != 3 or query_points.shape[-1] != 2:
        raise TrackInputError(f"query points must be [N,2] or [B,N,2] pixel (x, y), got "
                              f"{list(query_points.shape)}")
    if batch is not None and query_points.shape[0] != batch:
        raise TrackInputError(f"query points have batch {query_points.shape[0]} but the images "
                              f"have {batch}")
    n = query_points.shape[1]
    if n == 0:
        raise TrackInputError("no query points: give at least one pixel (x, y) of frame 0")
    if max_points is not None and n > max_points:
        raise TrackInputError(f"{n} query points; at most {max_points} can be tracked at once")
    query_points = query_points.float()
    if not bool(torch.isfinite(query_points).all()):
        raise TrackInputError("query points must be finite numbers")
    h, w = image_hw
    x, y = query_points[..., 0], query_points[..., 1]
    outside = (x < -0.5) | (x > w - 0.5) | (y < -0.5) | (y > h - 0.5)
    if bool(outside.any()):
        bad = query_points[outside][0].tolist()
        raise TrackInputError(f"query point ({bad[0]:g}, {bad[1]:g}) is outside the {w}x{h} "
                              f"image (x in [-0.5, {w - 0.5:g}], y in [-0.5, {h - 0.5:g}])")
    return query_points


MAX_QUERY_POINTS = 32   # the attention viewer's limit; the model accepts any N


class TrackHead(nn.Module):
    """Feature extractor + tracker (checkpoint name ``track_head``); sizes from the config's
    ``dpt_*`` and ``track_*`` keys."""

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        self.iters = config.track_iters
        self.feature_extractor = TrackFeatureExtractor(
            2 * config.embed_dim, config.patch_size, config.track_features,
            config.dpt_out_channels, config.dpt_intermediate_layer_idx)
        self.tracker = Tracker(config.track_features, config.track_corr_levels,
                               config.track_corr_radius, config.track_hidden_size,
                               config.track_depth, config.track_num_heads,
                               config.track_num_virtual_tracks)   # MLP ratio 4, fixed

    def forward(self, layers: dict[int, torch.Tensor], image_hw: tuple[int, int],
                patch_start_idx: int, query_points: torch.Tensor, iters: int | None = None,
                frames_chunk_size: int | None = 8, capture: TrackCapture | None = None
                ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Track ``query_points [B, N, 2]`` (pixels of frame 0) through the frames.

        Returns:
            ``(track_list, vis, conf)``: per iteration ``[B, S, N, 2]`` pixel (x, y) of the
            input images, then visibility and confidence ``[B, S, N]`` in (0, 1).
        """
        fmaps = self.feature_extractor(layers, image_hw, patch_start_idx, frames_chunk_size)
        if capture is not None:
            capture.record("features", fmaps)
        return self.tracker(fmaps, query_points, iters or self.iters, capture)
