"""Fast3R network: CroCo encoder per view, one fusion transformer over all views' tokens, two DPT
heads (global: every view's points in view 0's camera frame; local: each view in its own frame).

Frames are OpenCV cameras (x right, y down, z forward); pointmaps are known up to one scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..croco.dpt import DPTHead, activate_pointmap, add_tied_aliases
from ..croco.layers import Block, CroCoEncoder
from ..croco.rope import parse_pos_embed
from .config import Fast3RConfig


@dataclass(frozen=True, eq=False)
class Fast3RViewOutput:
    """One view's pointmaps (the reference's ``preds[i]``), all float32, up to one scene scale.

    Attributes:
        pts3d_in_other_view: ``[B,H,W,3]`` global head: each pixel's point in view 0's camera
            frame (OpenCV: x right, y down, z forward).
        conf: ``[B,H,W]`` confidence of ``pts3d_in_other_view``, >= 1 (``1 + exp``).
        pts3d_local: ``[B,H,W,3]`` local head: each pixel's point in this view's own camera
            frame, in a scale of its own; None when the model has no local head
            (``with_local_head`` false).
        conf_local: ``[B,H,W]`` confidence of ``pts3d_local``, >= 1; None without a local head.
    """

    pts3d_in_other_view: torch.Tensor
    conf: torch.Tensor
    pts3d_local: torch.Tensor | None = None
    conf_local: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class Fast3ROutput:
    """What one Fast3R forward pass predicts for S views of batch B.

    Attributes:
        preds: S :class:`Fast3RViewOutput`, in input order (view 0 defines the global frame).
        decoder_output: ``depth + 1`` token tensors of the fusion transformer, views' tokens in
            input order (``N_i`` = patches of view i): item 0 the encoder tokens
            ``[B, sum N_i, enc_dim]``, item l the output of block l ``[B, sum N_i, dec_dim]``,
            the last after the final norm.
        image_idx: ``int64 [B,S]`` image-index rows that were embedded (view 0 gets 0).
    """

    preds: list[Fast3RViewOutput]
    decoder_output: list[torch.Tensor]
    image_idx: torch.Tensor


def sincos_table(dim: int, length: int) -> torch.Tensor:
    """``float32 [length, dim]`` 1-D sin-cos table: row p = [sin(p w_k), cos(p w_k)], w_k = 10000^(-k/(dim/2))."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.arange(length, dtype=np.float64)[:, None] * omega[None, :]
    return torch.from_numpy(np.concatenate([np.sin(angles), np.cos(angles)], axis=1)).float()


def default_image_idx(num_views: int, table_size: int = 1000) -> torch.Tensor:
    """Deterministic image indices ``int64 [S]``: ``floor(i * table_size / S)``.

    The reference draws, in every forward pass, 0 for view 0 and S-1 distinct sorted random
    indices in 1..table_size-1 for the others, so its output depends on the RNG. We use instead
    the expected positions of that sorted draw, spread evenly over the table (0, 250, 500, 750
    for 4 views), so the same images always give the same output.
    """
    if num_views > table_size:
        raise ValueError(f"Fast3R takes at most {table_size} views, got {num_views}")
    return torch.tensor([i * table_size // num_views for i in range(num_views)], dtype=torch.int64)


class FusionDecoder(nn.Module):
    """``decoder_embed``, ``depth`` global-attention blocks (no RoPE, LayerNorm eps 1e-5), ``dec_norm``."""

    def __init__(self, enc_embed_dim: int, embed_dim: int, num_heads: int, depth: int,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, max_image_idx: int = 1000) -> None:
        super().__init__()
        self.decoder_embed = nn.Linear(enc_embed_dim, embed_dim)
        self.dec_blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, rope=None, qkv_bias=qkv_bias, norm_eps=1e-5)
            for _ in range(depth)])
        self.dec_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.register_buffer("image_idx_emb", sincos_table(embed_dim, max_image_idx), persistent=False)

    def forward(self, tokens: torch.Tensor, tokens_per_view: list[int], image_idx: torch.Tensor) -> list[torch.Tensor]:
        """Fuse all views.

        Args:
            tokens: ``[B, sum(N_i), enc]`` encoder tokens, view-major.
            tokens_per_view: ``N_i`` per view.
            image_idx: ``int64 [B, S]`` row of ``image_idx_emb`` added to view i's tokens.

        Returns:
            ``depth + 1`` tensors: item 0 the input tokens, item l the output of block l, the last
            after ``dec_norm``.
        """
        out = [tokens]
        emb = self.image_idx_emb[image_idx]  # [B, S, D]
        counts = torch.tensor(tokens_per_view, device=tokens.device)
        x = self.decoder_embed(tokens) + torch.repeat_interleave(emb, counts, dim=1)
        for block in self.dec_blocks:
            x = block(x)
            out.append(x)
        out[-1] = self.dec_norm(out[-1])
        return out


class Fast3R(nn.Module):
    """The reference ``Fast3R`` (parameter names = the published checkpoint)."""

    def __init__(self, config: Fast3RConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or Fast3RConfig()
        e, d, h = config.encoder_args, config.decoder_args, config.head_args
        self.encoder = CroCoEncoder(e["embed_dim"], e["depth"], e["num_heads"], e["patch_size"],
                                    e["mlp_ratio"], parse_pos_embed(e["pos_embed"]))
        self.decoder = FusionDecoder(d["enc_embed_dim"], d["embed_dim"], d["num_heads"], d["depth"],
                                     d["mlp_ratio"], d["qkv_bias"], d["max_image_idx"])
        head_kwargs = dict(dim_tokens=[e["embed_dim"]] + [d["embed_dim"]] * 3, hooks=config.dpt_hooks,
                           layer_dims=h["dpt_layer_dims"], feature_dim=h["dpt_feature_dim"],
                           last_dim=h["dpt_last_dim"], num_channels=4, patch_size=h["patch_size"])
        self.downstream_head = DPTHead(**head_kwargs)
        self.downstream_head_local = DPTHead(**head_kwargs) if h["with_local_head"] else None
        self._depth_mode = tuple(h["depth_mode"])
        self._conf_mode = tuple(h["conf_mode"])

    def forward(self, images, image_idx: torch.Tensor | None = None, progress=None) -> Fast3ROutput:
        """Predict all views at once.

        Args:
            images: list of S tensors ``[B, 3, H_i, W_i]`` in [-1, 1] (or a tensor ``[S, B, 3, H, W]``).
            image_idx: ``int64 [B, S]`` image-index rows (view 0 should get 0); default
                :func:`default_image_idx`.
            progress: optional ``callable(fraction, message)``.

        Returns:
            :class:`Fast3ROutput`: per-view pointmaps of the global head (view 0's frame) and the
            local head (own frame), the fusion transformer's tokens and the image indices.
        """
        views = list(images)
        s = len(views)
        b = views[0].shape[0]
        if any(v.shape[0] != b for v in views):
            raise ValueError("all views need the same batch size")
        if image_idx is None:
            image_idx = default_image_idx(s, self.decoder.image_idx_emb.shape[0]).unsqueeze(0).expand(b, -1)
        image_idx = torch.as_tensor(image_idx, dtype=torch.int64, device=views[0].device)
        if image_idx.shape != (b, s):
            raise ValueError(f"image_idx must be [{b},{s}], got {list(image_idx.shape)}")
        report = progress or (lambda *_: None)
        report(0.0, f"encoding {s} views")
        if all(v.shape == views[0].shape for v in views):
            feats, _ = self.encoder(torch.cat(views, dim=0))
            feats = list(feats.split(b, dim=0))
        else:
            feats = [self.encoder(v)[0] for v in views]
        counts = [f.shape[1] for f in feats]
        report(0.3, "fusing views")
        decoder_output = self.decoder(torch.cat(feats, dim=1), counts, image_idx)
        report(0.6, "pointmap heads")
        preds = []
        offsets = np.cumsum([0] + counts)
        for i, view in enumerate(views):
            tokens = [t[:, offsets[i]:offsets[i + 1]].float() for t in decoder_output]
            size = tuple(view.shape[-2:])
            with torch.autocast(device_type=view.device.type, enabled=False):  # heads in float32
                pts, conf = activate_pointmap(self.downstream_head(tokens, size), self._depth_mode,
                                              self._conf_mode)
                pts_l = conf_l = None
                if self.downstream_head_local is not None:
                    pts_l, conf_l = activate_pointmap(self.downstream_head_local(tokens, size),
                                                      self._depth_mode, self._conf_mode)
            preds.append(Fast3RViewOutput(pts3d_in_other_view=pts, conf=conf, pts3d_local=pts_l,
                                          conf_local=conf_l))
            report(0.6 + 0.4 * (i + 1) / s, f"heads: view {i + 1}/{s}")
        return Fast3ROutput(preds=preds, decoder_output=decoder_output, image_idx=image_idx)

    def load_checkpoint_state(self, state: dict, assign: bool = False) -> None:
        """Load a published state dict strictly (tied DPT aliases filled in).

        Raises ``BadCheckpoint`` naming missing, unexpected or mis-shaped tensors.
        """
        from ..weights import check_state_dict

        state = add_tied_aliases(self, state)
        check_state_dict(self, state)
        self.load_state_dict(state, strict=True, assign=assign)

    @classmethod
    def from_state_dict(cls, state: dict, config: Fast3RConfig | None = None) -> "Fast3R":
        """Build on the meta device and take the checkpoint's tensors as they are (no second copy).

        The image-index table (a computed buffer, not in checkpoints) is rebuilt on the CPU.
        Raises ``BadCheckpoint`` naming missing, unexpected or mis-shaped tensors.
        """
        with torch.device("meta"):
            model = cls(config)
        model.load_checkpoint_state(state, assign=True)
        table = model.decoder.image_idx_emb
        model.decoder.image_idx_emb = sincos_table(table.shape[1], table.shape[0])
        return model
