"""DA3's DINOv2 ViT/14 with all-view layers, and the reference-view selection.

Names follow the checkpoints under ``model.backbone.pretrained.``: ``cls_token [1,1,D]``,
``camera_token [1,2,D]`` (reference view, other views), ``pos_embed [1,1+37²,D]``,
``patch_embed.proj`` (14x14 stride-14 conv), ``blocks.i`` (``norm1``, ``attn.qkv``,
``attn.q_norm`` / ``attn.k_norm`` from ``qknorm_start``, ``attn.proj``, ``ls1``, ``norm2``,
``mlp.fc1/fc2``, ``ls2``), ``norm`` (output LayerNorm, eps 1e-5; the blocks' norms use
1e-6). No register tokens.

Token layout: ``x [B, S, T, D]`` (batch, views, tokens, width) with ``T = 1 + h·w``: token 0
(the class token, replaced by a camera token at ``alt_start``) then the patches row-major.
Blocks before ``alt_start`` and even blocks from ``alt_start`` attend within each view ("per
view", sequences of T tokens); odd blocks from ``alt_start`` attend over all S·T tokens of a
batch element ("all view", view-major).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.models.vggt.layers import Block, RotaryTable

from .config import DA3Config

# Reference-view selection needs at least this many views (with 2 the first is the reference).
MIN_VIEWS_FOR_SELECTION = 3


def reference_view(cls_tokens: torch.Tensor, strategy: str = "saddle_balanced") -> torch.Tensor:
    """Index of the reference view of each batch element.

    Args:
        cls_tokens: ``[B, S, D]`` token 0 of every view entering block ``alt_start - 1``.
        strategy: ``first`` (0), ``middle`` (S // 2) or ``saddle_balanced``: with
            ``f = c/|c|``, ``sim_i = (sum_j f_i·f_j - 1)/(S - 1)``, ``n_i = |c_i|``,
            ``v_i = var(f_i)`` (unbiased, over channels), each min-max normalised over the views
            (``(m - min)/(max - min + 1e-8)``), the view minimising
            ``|sim - 1/2| + |n - 1/2| + |v - 1/2|`` (a view that is neither an outlier nor the
            most typical on any of the three).

    Returns:
        ``int64 [B]``.
    """
    b, s, _ = cls_tokens.shape
    if strategy == "first":
        return torch.zeros(b, dtype=torch.long, device=cls_tokens.device)
    if strategy == "middle":
        return torch.full((b,), s // 2, dtype=torch.long, device=cls_tokens.device)
    if strategy != "saddle_balanced":
        raise ValueError(f"unknown reference-view strategy {strategy!r}")
    return balance_scores(cls_tokens).argmin(dim=1)


def balance_scores(cls_tokens: torch.Tensor) -> torch.Tensor:
    """``[B, S]`` saddle-balanced scores (lower is more central); see :func:`reference_view`."""
    s = cls_tokens.shape[1]
    f = F.normalize(cls_tokens, dim=-1)
    sim = ((f @ f.transpose(1, 2)).sum(-1) - 1) / (s - 1)
    norm = cls_tokens.norm(dim=-1)
    var = f.var(dim=-1, unbiased=True)

    def unit(m: torch.Tensor) -> torch.Tensor:
        low, high = m.min(dim=1, keepdim=True).values, m.max(dim=1, keepdim=True).values
        return (m - low) / (high - low + 1e-8)

    return (unit(sim) - 0.5).abs() + (unit(norm) - 0.5).abs() + (unit(var) - 0.5).abs()


def reorder_first(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x [B, S, ...]`` with view ``index[b]`` first and the others in their order."""
    return torch.stack([x[b, view_order(x.shape[1], int(i))] for b, i in enumerate(index)])


def restore_order(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`reorder_first`."""
    out = []
    for b, i in enumerate(index):
        order = view_order(x.shape[1], int(i))
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        out.append(x[b, inverse])
    return torch.stack(out)


def view_order(num_views: int, first: int) -> torch.Tensor:
    """``int64 [S]``: ``first``, then the other views in increasing order."""
    return torch.tensor([first] + [v for v in range(num_views) if v != first], dtype=torch.long)


class PatchProjection(nn.Module):
    """``[N,3,H,W]`` -> ``[N, (H/p)(W/p), D]`` by a p x p stride-p convolution (row-major)."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


@dataclass
class BackboneOutput:
    """What the backbone hands to the heads.

    Attributes:
        feats: per out layer ``[B, S, P, 2D]``: [latest per-view output, ``norm`` of the block's
            output], patch tokens only (P = h·w, row-major), views in input order.
        cam_tokens: per out layer ``[B, S, 2D]``: token 0 of the same concatenation, not
            normalised.
        aux: ``{block: [B, S, h, w, D]}`` ``norm``-ed outputs of ``export_feat_layers`` (views in
            the *reordered* order for blocks >= ``alt_start - 1`` when a reference view was
            selected: the reference's quirk, kept).
        ref_index: ``int64 [B]`` the reference view (None when none was selected).
        ref_cls_tokens: ``[B, S, D]`` the tokens the selection read (None when none was).
    """

    feats: list[torch.Tensor]
    cam_tokens: list[torch.Tensor]
    aux: dict[int, torch.Tensor]
    ref_index: torch.Tensor | None
    ref_cls_tokens: torch.Tensor | None


class DinoVisionTransformer(nn.Module):
    """The ViT (``model.backbone.pretrained``); see the module docstring."""

    def __init__(self, config: DA3Config) -> None:
        super().__init__()
        d = config.embed_dim
        self.config = config
        self.patch_size = config.patch_size
        grid = config.img_size // config.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.camera_token = nn.Parameter(torch.zeros(1, 2, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, d))
        self.patch_embed = PatchProjection(config.patch_size, d)
        qk_from = config.qknorm_start if config.qknorm_start >= 0 else config.depth
        self.blocks = nn.ModuleList(
            Block(d, config.num_heads, config.mlp_ratio, qk_norm=i >= qk_from, init_values=1.0,
                  norm_eps=1e-6) for i in range(config.depth))
        self.norm = nn.LayerNorm(d, eps=1e-5)

    def position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """``[1, 1 + grid_h·grid_w, D]``: the class entry and the 37x37 grid resized bicubically
        (no antialiasing, ``align_corners=False``) with scale factors ``((h + 0.1)/37,
        (w + 0.1)/37)`` (the factors, not h/37, set the sampling positions); unchanged for a
        37x37 grid."""
        pos = self.pos_embed
        side = int(math.sqrt(pos.shape[1] - 1))
        if grid_h == side and grid_w == side:
            return pos
        patch = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, mode="bicubic", align_corners=False, antialias=False,
                              scale_factor=((grid_h + 0.1) / side, (grid_w + 0.1) / side))
        patch = patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
        return torch.cat((pos[:, :1], patch), dim=1)

    def _rope_tables(self, grid_h: int, grid_w: int, num_views: int, device: torch.device
                     ) -> tuple[RotaryTable, RotaryTable]:
        """(per-view table for T tokens, all-view table for S·T tokens). Per view: token 0 at
        (0, 0), patch (y, x) at (y + 1, x + 1); all view: token 0 at (0, 0), every patch at
        (1, 1) (the reference's all-view positions carry no patch position)."""
        head_dim = self.config.embed_dim // self.config.num_heads
        ys, xs = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
        local = torch.cat((torch.zeros(1, 2, dtype=torch.long),
                           torch.stack((ys.reshape(-1) + 1, xs.reshape(-1) + 1), -1)))
        flat = torch.ones_like(local)
        flat[0] = 0
        local_table = RotaryTable(local.to(device), head_dim, self.config.rope_freq)
        global_table = RotaryTable(flat.to(device), head_dim, self.config.rope_freq)
        return local_table, global_table.repeat(num_views)

    def forward(self, images: torch.Tensor, cam_token: torch.Tensor | None = None,
                ref_view_strategy: str | None = None,
                export_feat_layers: tuple[int, ...] | None = None) -> BackboneOutput:
        """Run the ViT.

        Args:
            images: ``[B, S, 3, H, W]`` ImageNet-normalised, H and W multiples of 14.
            cam_token: ``[B, S, D]`` camera-encoder tokens (known cameras) or None.
            ref_view_strategy: default ``config.ref_view_strategy``.
            export_feat_layers: default ``config.export_feat_layers``.
        """
        cfg = self.config
        strategy = ref_view_strategy or cfg.ref_view_strategy
        export = tuple(cfg.export_feat_layers if export_feat_layers is None else export_feat_layers)
        b, s, _, h, w = images.shape
        gh, gw = h // self.patch_size, w // self.patch_size
        x = self.patch_embed(images.reshape(b * s, *images.shape[2:]))
        x = torch.cat((self.cls_token.expand(b * s, -1, -1).to(x.dtype), x), dim=1)
        x = x + self.position_embedding(gh, gw).to(x.dtype)
        x = x.reshape(b, s, x.shape[1], x.shape[2])
        t = x.shape[2]
        rope_local = rope_global = None
        if cfg.rope_start >= 0:
            rope_local, rope_global = self._rope_tables(gh, gw, s, x.device)
        ref_index = ref_tokens = None
        local_x = x
        feats, cam_tokens, aux = [], [], {}
        for i, block in enumerate(self.blocks):
            use_rope = 0 <= cfg.rope_start <= i
            if (cfg.alt_start >= 0 and i == cfg.alt_start - 1 and s >= MIN_VIEWS_FOR_SELECTION
                    and cam_token is None):
                ref_tokens = x[:, :, 0]
                ref_index = reference_view(ref_tokens, strategy)
                x = reorder_first(x, ref_index)
                local_x = reorder_first(local_x, ref_index)
            if cfg.alt_start >= 0 and i == cfg.alt_start:
                if cam_token is not None:
                    tokens = cam_token.to(x.dtype)
                else:
                    tokens = torch.cat((self.camera_token[:, :1].expand(b, 1, -1),
                                        self.camera_token[:, 1:].expand(b, s - 1, -1)), dim=1)
                x = torch.cat((tokens.to(x.dtype)[:, :, None], x[:, :, 1:]), dim=2)
            if cfg.alt_start >= 0 and i >= cfg.alt_start and i % 2 == 1:
                x = block(x.reshape(b, s * t, -1), rope=rope_global if use_rope else None)
                x = x.reshape(b, s, t, -1)
            else:
                x = block(x.reshape(b * s, t, -1), rope=rope_local if use_rope else None)
                x = x.reshape(b, s, t, -1)
                local_x = x
            if i in cfg.out_layers:
                out = torch.cat((local_x, x), dim=-1)
                if ref_index is not None:
                    out = restore_order(out, ref_index)
                cam_tokens.append(out[:, :, 0])
                d = cfg.embed_dim
                feats.append(torch.cat((out[:, :, 1:, :d], self.norm(out[:, :, 1:, d:])), dim=-1))
            if i in export:
                aux[i] = self.norm(x)[:, :, 1:].reshape(b, s, gh, gw, -1)
        return BackboneOutput(feats, cam_tokens, aux, ref_index, ref_tokens)


class DinoV2(nn.Module):
    """``model.backbone``: holds the ViT as ``pretrained`` (the checkpoints' names)."""

    def __init__(self, config: DA3Config) -> None:
        super().__init__()
        self.pretrained = DinoVisionTransformer(config)

    def forward(self, images: torch.Tensor, **kwargs) -> BackboneOutput:
        return self.pretrained(images, **kwargs)
