"""VGGT's alternating-attention trunk ("aggregator").

Per image: DINOv2 patch tokens, prefixed by one camera token and R register tokens (frame 0
gets its own learned camera/register tokens, all other frames share a second set). Then
``depth`` rounds of a frame block (attention within each image) followed by a global block
(attention over the tokens of all images). Layer ``l``'s output is the concatenation
``[frame_l, global_l]`` of both blocks' outputs: ``[B, S, P, 2C]`` with
``P = 1 + R + (H/14)(W/14)`` tokens per frame in the order camera, registers, patches
(row-major).

Lean inference: only the layers named in ``keep_layers`` are kept (the heads read four DPT
layers and the last one), instead of all ``depth`` layers.

Gradients (``checkpoint=True``): activation checkpointing bounds what a backward pass keeps.
Each frame's DINOv2 pass is one segment and each (frame block, global block) pair is one
segment (``torch.utils.checkpoint``, non-reentrant): only the segments' inputs are stored and
one segment's activations are recomputed at a time during the backward pass. The outputs are
the same tensors with the same values; inside a segment the autograd graph still exists, so
gradients with respect to intermediate tensors (forward hooks) work.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as checkpoint_segment

from .config import VGGTConfig
from .dinov2 import DinoV2
from .layers import Block, RotaryTable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _frame_tokens(token: torch.Tensor, b: int, s: int) -> torch.Tensor:
    """``token [1, 2, n, C]`` -> ``[b*s, n, C]``: entry 0 for frame 0, entry 1 for the others."""
    first = token[:, :1].expand(b, 1, *token.shape[2:])
    rest = token[:, 1:].expand(b, s - 1, *token.shape[2:])
    return torch.cat((first, rest), dim=1).reshape(b * s, *token.shape[2:])


class Aggregator(nn.Module):
    """Patch embedding + alternating frame/global attention.

    Parameters (checkpoint names under ``aggregator.``): ``camera_token [1,2,1,C]``,
    ``register_token [1,2,R,C]``, ``patch_embed.*`` (DINOv2), ``frame_blocks.i.*``,
    ``global_blocks.i.*``.
    """

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        c = config.embed_dim
        self.config = config
        self.patch_size = config.patch_size
        self.patch_embed = DinoV2(config.img_size, config.patch_size, c, config.dino_depth,
                                  config.dino_num_heads, config.mlp_ratio,
                                  config.num_register_tokens)
        self.frame_blocks = nn.ModuleList(
            Block(c, config.num_heads, config.mlp_ratio, qk_norm=config.qk_norm,
                  init_values=config.init_values) for _ in range(config.depth))
        self.global_blocks = nn.ModuleList(
            Block(c, config.num_heads, config.mlp_ratio, qk_norm=config.qk_norm,
                  init_values=config.init_values) for _ in range(config.depth))
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, c) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, config.num_register_tokens, c) * 1e-6)
        self.patch_start_idx = 1 + config.num_register_tokens
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1),
                             persistent=False)

    def positions(self, grid_h: int, grid_w: int, device: torch.device) -> torch.Tensor:
        """``int64 [P, 2]`` (y, x) RoPE positions of one frame's tokens: special tokens at
        (0, 0), patch (row i, column j) at (i + 1, j + 1)."""
        y, x = torch.meshgrid(torch.arange(grid_h, device=device),
                              torch.arange(grid_w, device=device), indexing="ij")
        patches = torch.stack((y.reshape(-1), x.reshape(-1)), dim=-1) + 1
        special = torch.zeros(self.patch_start_idx, 2, dtype=patches.dtype, device=device)
        return torch.cat((special, patches), dim=0)

    def forward(self, images: torch.Tensor, keep_layers: Iterable[int] | None = None,
                capture=None, checkpoint: bool = False) -> dict[int, torch.Tensor]:
        """Run the trunk.

        Args:
            images: ``[B, S, 3, H, W]`` in [0, 1]; H and W multiples of the patch size.
            keep_layers: trunk layers whose outputs are returned (None: all).
            capture: optional :class:`~.attention.AttentionCapture` that records global
                attention rows; None costs nothing.

        Returns:
            ``{layer: tokens [B, S, P, 2C]}`` for the kept layers.
        """
        b, s, _, h, w = images.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
        keep = set(range(len(self.frame_blocks)) if keep_layers is None else keep_layers)
        x = ((images - self._mean) / self._std).reshape(b * s, 3, h, w)
        segmented = checkpoint and torch.is_grad_enabled()
        if segmented:
            patches = torch.cat([checkpoint_segment(self.patch_embed, x[i:i + 1], use_reentrant=False)
                                 for i in range(b * s)])
        else:
            patches = self.patch_embed(x)
        tokens = torch.cat((_frame_tokens(self.camera_token, b, s),
                            _frame_tokens(self.register_token, b, s), patches), dim=1)
        del patches, x
        n_tok, c = tokens.shape[1], tokens.shape[2]
        rope = None
        if self.config.rope_freq > 0:
            rope = RotaryTable(self.positions(h // p, w // p, images.device),
                               self.frame_blocks[0].attn.head_dim, self.config.rope_freq,
                               dtype=tokens.dtype)
            rope_global = rope.repeat(s)
        outputs: dict[int, torch.Tensor] = {}
        for layer, (frame_block, global_block) in enumerate(zip(self.frame_blocks,
                                                                 self.global_blocks)):
            hook = capture.hook(layer) if capture is not None else None

            def pair(tokens, frame_block=frame_block, global_block=global_block, hook=hook):
                """One alternating round: ``[b, s*n_tok, c]`` -> (frame output, global output)."""
                framed = frame_block(tokens.reshape(b * s, n_tok, c), rope=rope)
                rounded = global_block(framed.reshape(b, s * n_tok, c),
                                       rope=rope_global if rope is not None else None, capture=hook)
                return framed, rounded

            if segmented:
                frame_out, tokens = checkpoint_segment(pair, tokens, use_reentrant=False)
            else:
                frame_out, tokens = pair(tokens)
            if layer in keep:
                outputs[layer] = torch.cat((frame_out.reshape(b, s, n_tok, c),
                                            tokens.reshape(b, s, n_tok, c)), dim=-1)
            del frame_out
        return outputs
