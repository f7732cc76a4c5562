"""DUSt3R network: shared CroCo encoder, two cross-attending decoders, two pointmap heads.

Frames: both outputs are in the camera frame of view 1 (OpenCV: x right, y down, z forward),
known up to one scale per pair. Inputs are images ``[B, 3, H, W]`` in [-1, 1] with H, W
multiples of 16, in their natural layout (portrait stays portrait; the two views of a pair may
differ in size).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..croco.dpt import DPTHead, LinearHead, activate_pointmap, add_tied_aliases
from ..croco.layers import Block, DecoderBlock, PatchEmbed, run_encoder
from ..croco.rope import RoPE2D, parse_pos_embed
from .config import DUSt3RConfig


@dataclass(frozen=True, eq=False)
class DUSt3RView1Output:
    """Head 1 of a pair: view 1's pointmap in view 1's camera frame (the reference's ``pred1``).

    Attributes:
        pts3d: ``[B,H1,W1,3]`` float32 point of each view-1 pixel in view 1's camera frame
            (OpenCV), in the pair's own scale (``depth_mode`` sets how the head's code maps to it).
        conf: ``[B,H1,W1]`` float32 confidence >= ``conf_mode``'s minimum (1 by default); None
            when the configuration has no ``conf_mode``.
    """

    pts3d: torch.Tensor
    conf: torch.Tensor | None


@dataclass(frozen=True, eq=False)
class DUSt3RView2Output:
    """Head 2 of a pair: view 2's pointmap in view 1's camera frame (the reference's ``pred2``).

    Attributes:
        pts3d_in_other_view: ``[B,H2,W2,3]`` float32 point of each view-2 pixel in view 1's
            camera frame (OpenCV), in the same scale as :attr:`DUSt3RView1Output.pts3d`.
        conf: ``[B,H2,W2]`` float32 confidence >= ``conf_mode``'s minimum (1 by default); None
            when the configuration has no ``conf_mode``.
    """

    pts3d_in_other_view: torch.Tensor
    conf: torch.Tensor | None


class DUSt3R(nn.Module):
    """The reference ``AsymmetricCroCo3DStereo`` (parameter names = the published checkpoint)."""

    def __init__(self, config: DUSt3RConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DUSt3RConfig()
        self.rope = RoPE2D(parse_pos_embed(config.pos_embed))
        enc, dec = config.enc_embed_dim, config.dec_embed_dim
        self.patch_embed = PatchEmbed(config.patch_size, 3, enc)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec))  # trained with, unused at inference
        self.enc_blocks = nn.ModuleList([
            Block(enc, config.enc_num_heads, config.mlp_ratio, rope=self.rope, norm_eps=1e-6)
            for _ in range(config.enc_depth)])
        self.enc_norm = nn.LayerNorm(enc, eps=1e-6)
        self.decoder_embed = nn.Linear(enc, dec)
        self.dec_blocks = nn.ModuleList([
            DecoderBlock(dec, config.dec_num_heads, config.mlp_ratio, rope=self.rope, norm_eps=1e-6)
            for _ in range(config.dec_depth)])
        self.dec_blocks2 = nn.ModuleList([
            DecoderBlock(dec, config.dec_num_heads, config.mlp_ratio, rope=self.rope, norm_eps=1e-6)
            for _ in range(config.dec_depth)])
        self.dec_norm = nn.LayerNorm(dec, eps=1e-6)
        for k in (1, 2):
            setattr(self, f"downstream_head{k}", self._make_head())

    def _make_head(self) -> nn.Module:
        c = self.config
        if c.head_type == "linear":
            return LinearHead(c.dec_embed_dim, c.patch_size, num_channels=4)
        return DPTHead(dim_tokens=[c.enc_embed_dim] + [c.dec_embed_dim] * 3, hooks=c.dpt_hooks,
                       layer_dims=c.dpt_layer_dims, feature_dim=c.dpt_feature_dim,
                       last_dim=c.dpt_last_dim, num_channels=4, patch_size=c.patch_size)

    # ------------------------------------------------------------------ stages
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images [B,3,H,W]`` -> tokens ``[B, N, enc_dim]`` after ``enc_norm``, positions ``int64 [B,N,2]`` (y, x)."""
        return run_encoder(self.patch_embed, self.enc_blocks, self.enc_norm, images)

    def decode(self, feat1, pos1, feat2, pos2) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The two decoders, each block reading both sides' previous tokens.

        Returns:
            ``dec1, dec2``: lists of ``dec_depth + 1`` token tensors; item 0 is the encoder output
            (width enc), item l the output of block l (width dec), the last after ``dec_norm``.
        """
        dec1, dec2 = [feat1], [feat2]
        x1, x2 = self.decoder_embed(feat1), self.decoder_embed(feat2)
        for blk1, blk2 in zip(self.dec_blocks, self.dec_blocks2):
            x1, x2 = blk1(x1, x2, pos1, pos2), blk2(x2, x1, pos2, pos1)
            dec1.append(x1)
            dec2.append(x2)
        dec1[-1] = self.dec_norm(dec1[-1])
        dec2[-1] = self.dec_norm(dec2[-1])
        return dec1, dec2

    def head(self, which: int, tokens: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        """Raw head map ``[B, 4, H, W]`` of head ``which`` (1 or 2), always in float32 (no autocast)."""
        with torch.autocast(device_type=tokens[0].device.type, enabled=False):
            return getattr(self, f"downstream_head{which}")([t.float() for t in tokens], image_size)

    def activate(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw map -> ``pts3d [B,H,W,3]``, ``conf [B,H,W]`` (``depth_mode``/``conf_mode``)."""
        return activate_pointmap(raw, self.config.depth_mode, self.config.conf_mode)

    def decode_and_predict(self, feat1, pos1, feat2, pos2, size1, size2, intermediates: dict | None = None
                           ) -> tuple[DUSt3RView1Output, DUSt3RView2Output]:
        """Decoder + heads from encoder outputs (lets a caller encode each image once).

        Returns ``(pred1, pred2)`` as in :meth:`forward`.
        """
        dec1, dec2 = self.decode(feat1, pos1, feat2, pos2)
        raw1 = self.head(1, dec1, size1)
        raw2 = self.head(2, dec2, size2)
        pts1, conf1 = self.activate(raw1)
        pts2, conf2 = self.activate(raw2)
        if intermediates is not None:
            intermediates.update(dec1=dec1, dec2=dec2, head1_raw=raw1, head2_raw=raw2)
        return DUSt3RView1Output(pts3d=pts1, conf=conf1), DUSt3RView2Output(pts3d_in_other_view=pts2, conf=conf2)

    def forward(self, img1: torch.Tensor, img2: torch.Tensor, intermediates: dict | None = None
                ) -> tuple[DUSt3RView1Output, DUSt3RView2Output]:
        """Predict a pair.

        Args:
            img1: ``[B, 3, H1, W1]`` view-1 images in [-1, 1].
            img2: ``[B, 3, H2, W2]`` view-2 images.
            intermediates: if a dict is given it receives ``feat1, feat2 [B,N,enc]``,
                ``pos1, pos2 [B,N,2]``, ``dec1, dec2`` (lists), ``head1_raw [B,4,H1,W1]``,
                ``head2_raw [B,4,H2,W2]``.

        Returns:
            ``(pred1, pred2)``: :class:`DUSt3RView1Output` (``pts3d [B,H1,W1,3]``, view 1's points
            in view 1's frame; ``conf [B,H1,W1]``) and :class:`DUSt3RView2Output`
            (``pts3d_in_other_view [B,H2,W2,3]``, view 2's points in view 1's frame;
            ``conf [B,H2,W2]``); confidence >= 1.
        """
        if img1.shape[0] != img2.shape[0]:
            raise ValueError(f"batch sizes differ: {img1.shape[0]} vs {img2.shape[0]}")
        if img1.shape[-2:] == img2.shape[-2:]:
            feat, pos = self.encode(torch.cat((img1, img2), dim=0))
            feat1, feat2 = feat.chunk(2, dim=0)
            pos1, pos2 = pos.chunk(2, dim=0)
        else:
            feat1, pos1 = self.encode(img1)
            feat2, pos2 = self.encode(img2)
        if intermediates is not None:
            intermediates.update(feat1=feat1, feat2=feat2, pos1=pos1, pos2=pos2)
        return self.decode_and_predict(feat1, pos1, feat2, pos2, tuple(img1.shape[-2:]),
                                       tuple(img2.shape[-2:]), intermediates)

    # ---------------------------------------------------------------- weights
    @classmethod
    def from_state_dict(cls, state: dict, config: DUSt3RConfig | None = None) -> "DUSt3R":
        """Build on the meta device and take the checkpoint's tensors as they are (no second copy).

        Raises ``BadCheckpoint`` naming missing, unexpected or mis-shaped tensors.
        """
        with torch.device("meta"):
            model = cls(config)
        model.load_checkpoint_state(state, assign=True)
        return model

    def load_checkpoint_state(self, state: dict, assign: bool = False) -> None:
        """Load a published state dict strictly (tied DPT aliases filled in).

        Raises ``BadCheckpoint`` naming missing, unexpected or mis-shaped tensors.
        """
        from ..weights import check_state_dict

        state = add_tied_aliases(self, state)
        check_state_dict(self, state)
        self.load_state_dict(state, strict=True, assign=assign)
