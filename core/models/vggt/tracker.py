"""VGGT's iterative point tracker: correlation pyramid, update transformer, refinement.

Given the track head's feature maps of S frames (``[B,S,C,h,w]``, h = H/2, w = W/2: the maps
are at half the input resolution) and N query points of frame 0 in input pixels, the tracker
predicts where each query lies in every frame, iteratively (``track_iters`` times):

1. correlate each track's feature with its frame's map on an L-level average-pooled pyramid,
   sampled in a (2r+1)x(2r+1) window around the current position of the track;
2. feed [flow embedding, displacement/518 (twice), MLP(correlation), track feature] plus a
   fixed 2-D sin-cos position of the query and a frame-0/other-frame token to the update
   transformer (attention over frames per track, and per frame through V virtual tracks);
3. add its output: 2 coordinate increments (half-resolution pixels) and C feature increments;
   frame 0 is reset to the query.

After the last iteration visibility and confidence are sigmoids of linear maps of the track
features.

Coordinates: (x, y), x along W, y along H. Maps are sampled bilinearly with the align-corners
convention: x = 0 and x = w - 1 are the centres of the first and last column. Tracking runs in
half-resolution pixels ``c = p / 2`` of an input pixel p; the returned tracks are ``2 c``.

Parameter names follow ``track_head.tracker.*`` of the published ``facebook/VGGT-1B`` checkpoint
(including its ``virual_tracks`` spelling). Two reference quirks are kept because the checkpoint
was trained with them: a transformer block's residual continues from the *normalised* input
(:class:`AttnBlock`), and the flow embedding uses frequencies up to ~1000 per half-pixel.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UserError

from .layers import Mlp

FLOW_SCALE = 518.0      # displacements enter the transformer divided by this (the reference's)
STRIDE = 2              # feature maps are at 1/STRIDE of the input resolution


class TrackInputError(UserError, ValueError):
    """Query points or images the track head cannot take (outside the image, wrong shape, too
    many for a page, images too small for the correlation pyramid)."""


# ----------------------------------------------------------------------------- sampling
def bilinear_sample(maps: torch.Tensor, points: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Sample ``maps [M, C, h, w]`` at ``points [M, K, 2]`` (x, y in the maps' own pixels,
    align-corners convention) -> ``[M, K, C]``.

    ``padding="zeros"``: taps outside the map contribute 0 (a point far outside samples 0);
    ``padding="border"``: coordinates are clamped to ``[0, w-1] x [0, h-1]`` first.
    Written with gathers rather than ``grid_sample`` so that maps one pixel wide behave
    (align-corners normalisation would divide by zero) and the arithmetic is explicit.
    """
    m, c, h, w = maps.shape
    x, y = points[..., 0], points[..., 1]
    if padding == "border":
        x = x.clamp(0, w - 1)
        y = y.clamp(0, h - 1)
    elif padding != "zeros":
        raise ValueError(f"unknown padding {padding!r}")
    x0, y0 = torch.floor(x), torch.floor(y)
    wx, wy = x - x0, y - y0
    flat = maps.reshape(m, c, h * w)
    out = maps.new_zeros(m, points.shape[1], c)
    for dy, weight_y in ((0, 1 - wy), (1, wy)):
        for dx, weight_x in ((0, 1 - wx), (1, wx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
            index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long()         # [M, K]
            taps = torch.gather(flat, 2, index[:, None, :].expand(m, c, index.shape[1]))
            weight = weight_x * weight_y * inside.to(maps.dtype)                 # [M, K]
            out = out + taps.transpose(1, 2) * weight[..., None]
    return out


# ----------------------------------------------------------------------------- embeddings
def flow_embedding(flow: torch.Tensor, channels: int) -> torch.Tensor:
    """``flow [..., 2]`` (x, y displacement, half-resolution pixels) -> ``[..., channels]``.

    For x then y, ``channels/2`` channels each: channel 2k = sin(v w_k), 2k+1 = cos(v w_k),
    ``w_k = 4000 k / channels``, k = 0 .. channels/4 - 1 (frequencies up to ~1000 per pixel).
    """
    quarter = channels // 4
    omega = torch.arange(quarter, device=flow.device, dtype=flow.dtype) * (4000.0 / channels)
    parts = []
    for axis in range(2):
        angles = flow[..., axis:axis + 1] * omega                       # [..., C/4]
        parts.append(torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2))
    return torch.cat(parts, dim=-1)


def sincos_position(points: torch.Tensor, height: int, width: int, channels: int) -> torch.Tensor:
    """The 2-D sin-cos position table of an ``height x width`` grid, sampled bilinearly (border
    padding, align-corners convention) at ``points [..., 2]`` (x, y) -> ``[..., channels]``.

    The table holds at integer position (x, y): first ``channels/2`` channels from the column x,
    last ``channels/2`` from the row y, each half ``[sin(p w_k), cos(p w_k)]`` concatenated,
    ``w_k = 10000^(-k / (channels/4))``, k < channels/4 (float64, stored float32). Each half
    depends on one coordinate only, so its bilinear lookup is a linear interpolation along that
    coordinate between the two neighbouring integer positions (no full table is built).
    """
    quarter = channels // 4
    omega = 1.0 / 10000.0 ** (torch.arange(quarter, dtype=torch.float64, device=points.device)
                              / quarter)

    def table(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.double()[..., None] * omega
        return torch.cat((angles.sin(), angles.cos()), dim=-1).to(points.dtype)

    halves = []
    for axis, size in ((0, width), (1, height)):
        v = points[..., axis].clamp(0, size - 1)
        v0 = torch.floor(v)
        t = (v - v0)[..., None]
        halves.append(table(v0) * (1 - t) + table((v0 + 1).clamp(max=size - 1)) * t)
    return torch.cat(halves, dim=-1)


# ----------------------------------------------------------------------------- transformer
class MultiheadAttention(nn.Module):
    """Multi-head attention with ``torch.nn.MultiheadAttention``'s parameter layout
    (``in_proj_weight [3d, d]`` rows q, k, v, ``in_proj_bias``, ``out_proj``), scale
    ``head_dim^-1/2``; ``query [M, Lq, d]``, ``context [M, Lk, d]`` -> ``[M, Lq, d]``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, query: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        m, lq, d = query.shape
        heads = self.num_heads
        w, b = self.in_proj_weight, self.in_proj_bias
        if context is None:
            q, k, v = F.linear(query, w, b).chunk(3, dim=-1)
        else:
            q = F.linear(query, w[:d], b[:d])
            k, v = F.linear(context, w[d:], b[d:]).chunk(2, dim=-1)
        split = lambda t: t.reshape(m, t.shape[1], heads, d // heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return self.out_proj(out.transpose(1, 2).reshape(m, lq, d))


class AttnBlock(nn.Module):
    """Self-attention block with the reference's residual: ``x = norm1(x)``;
    ``x = x + attn(x)``; ``x = x + mlp(norm2(x))`` (the residual starts from the normalised x)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = MultiheadAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x = x + self.attn(x)
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Cross-attention block: ``x = norm1(x)``; ``y = norm_context(y)``;
    ``x = x + cross_attn(x, y)``; ``x = x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.norm_context = nn.LayerNorm(dim, eps=1e-5)
        self.cross_attn = MultiheadAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x = x + self.cross_attn(x, self.norm_context(context))
        return x + self.mlp(self.norm2(x))


class UpdateTransformer(nn.Module):
    """The refinement transformer (checkpoint name ``updateformer``).

    ``x [B, N, S, D]`` (track-major) -> ``[B, N, S, out_dim]``. ``depth`` rounds of: attention
    over the S frames of each of the N tracks and V virtual tracks, then per frame virtual <-
    points (cross), virtual <- virtual (self), points <- virtual (cross).
    """

    def __init__(self, input_dim: int, hidden: int, out_dim: int, depth: int, num_heads: int,
                 num_virtual: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.input_norm = nn.LayerNorm(input_dim, eps=1e-5)
        self.input_transform = nn.Linear(input_dim, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=1e-5)
        self.flow_head = nn.Linear(hidden, out_dim)
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual, 1, hidden))  # (sic)
        block = lambda: AttnBlock(hidden, num_heads, mlp_ratio)          # noqa: E731
        cross = lambda: CrossAttnBlock(hidden, num_heads, mlp_ratio)     # noqa: E731
        self.time_blocks = nn.ModuleList(block() for _ in range(depth))
        self.space_virtual_blocks = nn.ModuleList(block() for _ in range(depth))
        self.space_point2virtual_blocks = nn.ModuleList(cross() for _ in range(depth))
        self.space_virtual2point_blocks = nn.ModuleList(cross() for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, s, _ = x.shape
        t0 = self.input_transform(self.input_norm(x))                   # [B, N, S, hidden]
        v = self.virual_tracks.shape[1]
        hidden = t0.shape[-1]
        tokens = torch.cat((t0, self.virual_tracks.expand(b, v, s, hidden)), dim=1)
        for time, v2p, virt, p2v in zip(self.time_blocks, self.space_virtual2point_blocks,
                                        self.space_virtual_blocks,
                                        self.space_point2virtual_blocks):
            tokens = time(tokens.reshape(b * (n + v), s, hidden)).reshape(b, n + v, s, hidden)
            space = tokens.transpose(1, 2).reshape(b * s, n + v, hidden)
            points, virtual = space[:, :n], space[:, n:]
            virtual = v2p(virtual, points)
            virtual = virt(virtual)
            points = p2v(points, virtual)
            tokens = torch.cat((points, virtual), dim=1).reshape(b, s, n + v, hidden).transpose(1, 2)
        return self.flow_head(self.output_norm(tokens[:, :n] + t0))


# ----------------------------------------------------------------------------- recording
class TrackCapture:
    """Records the tracker's intermediates during one forward pass (for conformance tests and
    debugging; None costs nothing). After the pass ``tensors`` holds (B batch, S frames,
    N queries, C features, L levels, r radius, D = 3C + 4):

    - ``features [B,S,C,h,w]``: the feature extractor's maps (before ``fmap_norm``);
    - ``query_feat [B,N,C]``: the query features sampled in frame 0;
    - ``iter_coords.<i> [B,S,N,2]`` (half-resolution pixels) and ``iter_feats.<i> [B,S,N,C]``:
      what enters iteration i;
    - ``corr.<i> [B,S,N,L(2r+1)^2]``, ``update_input.<i> [B,N,S,D]``,
      ``update_delta.<i> [B,N,S,C+2]``;
    - ``feats [B,S,N,C]``: the track features after the last iteration.

    Tensors are detached copies on ``store_device``.
    """

    def __init__(self, store_device: str | torch.device = "cpu") -> None:
        self.store_device = torch.device(store_device)
        self.tensors: dict[str, torch.Tensor] = {}

    def record(self, name: str, value: torch.Tensor) -> None:
        self.tensors[name] = value.detach().to(self.store_device, copy=True)


# ----------------------------------------------------------------------------- tracker
class Tracker(nn.Module):
    """The iterative tracker (checkpoint name ``track_head.tracker``).

    Args:
        features: C, width of the feature maps and track features.
        corr_levels, corr_radius: L pyramid levels, window radius r.
        hidden, depth, num_heads, num_virtual: the update transformer's sizes.
        mlp_ratio: MLP width multiple of the transformer blocks.
    """

    def __init__(self, features: int = 128, corr_levels: int = 7, corr_radius: int = 4,
                 hidden: int = 384, depth: int = 6, num_heads: int = 8, num_virtual: int = 64,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if features % 4:
            raise ValueError(f"track features must be a multiple of 4, got {features}")
        self.features, self.corr_levels, self.corr_radius = features, corr_levels, corr_radius
        window = (2 * corr_radius + 1) ** 2
        self.input_dim = 3 * features + 4
        self.corr_mlp = Mlp(corr_levels * window, hidden, features)
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.input_dim))
        self.updateformer = UpdateTransformer(self.input_dim, hidden, features + 2, depth,
                                              num_heads, num_virtual, mlp_ratio)
        self.fmap_norm = nn.LayerNorm(features, eps=1e-5)
        self.ffeat_norm = nn.GroupNorm(1, features, eps=1e-5)
        self.ffeat_updater = nn.Sequential(nn.Linear(features, features), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(features, 1))
        self.conf_predictor = nn.Sequential(nn.Linear(features, 1))

    def pyramid(self, fmaps: torch.Tensor) -> list[torch.Tensor]:
        """``fmaps [B*S, C, h, w]`` -> L levels, level l average-pooled 2^l times (floored)."""
        levels = [fmaps]
        for _ in range(self.corr_levels - 1):
            levels.append(F.avg_pool2d(levels[-1], 2, stride=2))
        return levels

    def window(self, device, dtype) -> torch.Tensor:
        """``[(2r+1)^2, 2]`` (dx, dy) window offsets, element ``a (2r+1) + b`` = (a - r, b - r)."""
        r = self.corr_radius
        steps = torch.arange(-r, r + 1, device=device, dtype=dtype)
        dx, dy = torch.meshgrid(steps, steps, indexing="ij")
        return torch.stack((dx.reshape(-1), dy.reshape(-1)), dim=-1)

    def correlate(self, levels: list[torch.Tensor], feats: torch.Tensor,
                  coords: torch.Tensor) -> torch.Tensor:
        """Correlation samples ``[B, S, N, L (2r+1)^2]``.

        Args:
            levels: pyramid, level l ``[B*S, C, h_l, w_l]``.
            feats: track features ``[B, S, N, C]``.
            coords: track positions ``[B, S, N, 2]`` in half-resolution pixels.
        """
        b, s, n, c = feats.shape
        offsets = self.window(coords.device, coords.dtype)               # [K, 2]
        out = []
        for level, fmap in enumerate(levels):
            hl, wl = fmap.shape[-2:]
            volume = torch.matmul(feats.reshape(b * s, n, c), fmap.reshape(b * s, c, hl * wl))
            volume = volume.div_(math.sqrt(c)).reshape(b * s * n, 1, hl, wl)
            centres = coords.reshape(b * s * n, 1, 2) / 2 ** level
            out.append(bilinear_sample(volume, centres + offsets, "zeros")[..., 0])
        return torch.cat(out, dim=-1).reshape(b, s, n, -1)

    def forward(self, fmaps: torch.Tensor, query_points: torch.Tensor, iters: int = 4,
                capture: TrackCapture | None = None
                ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Track the queries through the frames.

        Args:
            fmaps: ``[B, S, C, h, w]`` feature maps at half the input resolution.
            query_points: ``[B, N, 2]`` (x, y) input pixels of frame 0.
            iters: refinement iterations (>= 1).
            capture: optional :class:`TrackCapture`.

        Returns:
            ``(track_list, vis, conf)``: ``iters`` tensors ``[B, S, N, 2]`` (input pixels, after
            each iteration; frame 0 equals the queries), ``vis [B, S, N]`` and
            ``conf [B, S, N]`` in (0, 1).
        """
        b, s, c, h, w = fmaps.shape
        n = query_points.shape[1]
        if iters < 1:
            raise ValueError(f"track iterations must be >= 1, got {iters}")
        if (min(h, w) >> (self.corr_levels - 1)) < 1:
            raise TrackInputError(f"images of {STRIDE * h}x{STRIDE * w} pixels are too small to "
                                  f"track with {self.corr_levels} correlation levels (the "
                                  f"half-resolution map must be at least "
                                  f"{2 ** (self.corr_levels - 1)} pixels on its short side)")
        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        queries = query_points / STRIDE                                  # [B, N, 2] half-res
        query_feat = bilinear_sample(fmaps[:, 0], queries, "border")     # [B, N, C]
        levels = self.pyramid(fmaps.reshape(b * s, c, h, w))
        feats = query_feat[:, None].expand(b, s, n, c)
        coords = queries[:, None].expand(b, s, n, 2)
        position = sincos_position(queries, h, w, self.input_dim)       # [B, N, D]
        token = torch.cat((self.query_ref_token[:, :1],
                           self.query_ref_token[:, 1:].expand(1, s - 1, -1)), dim=1)  # [1, S, D]
        extra = position[:, :, None] + token[:, None]                   # [B, N, S, D]
        if capture is not None:
            capture.record("query_feat", query_feat)
        track_list = []
        for i in range(iters):
            if capture is not None:
                capture.record(f"iter_coords.{i}", coords)
                capture.record(f"iter_feats.{i}", feats)
            corr = self.correlate(levels, feats, coords)
            flow = coords - coords[:, :1]                                # [B, S, N, 2]
            x = torch.cat((flow_embedding(flow, c), flow / FLOW_SCALE, flow / FLOW_SCALE,
                           self.corr_mlp(corr), feats), dim=-1)          # [B, S, N, D]
            x = x.transpose(1, 2) + extra                                # [B, N, S, D]
            delta = self.updateformer(x)                                 # [B, N, S, C + 2]
            if capture is not None:
                capture.record(f"corr.{i}", corr)
                capture.record(f"update_input.{i}", x)
                capture.record(f"update_delta.{i}", delta)
            delta = delta.transpose(1, 2)                                # [B, S, N, C + 2]
            update = self.ffeat_updater(self.ffeat_norm(delta[..., 2:].reshape(-1, c)))
            feats = feats + update.reshape(b, s, n, c)
            coords = torch.cat((queries[:, None], (coords + delta[..., :2])[:, 1:]), dim=1)
            track_list.append(coords * STRIDE)
        if capture is not None:
            capture.record("feats", feats)
        vis = torch.sigmoid(self.vis_predictor(feats)[..., 0])
        conf = torch.sigmoid(self.conf_predictor(feats)[..., 0])
        return track_list, vis, conf
