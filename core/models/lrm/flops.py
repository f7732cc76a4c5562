"""Analytic FLOP count of OpenLRM's image-to-triplane network (the heavy stage before rendering).

Counts 2 FLOPs per multiply-accumulate of every matrix product and convolution (linear layers,
attention scores and mixing, the patch embedding, the transposed-convolution upsampler), as
``torch.utils.flop_counter.FlopCounterMode`` does with math attention; element-wise work (norms,
GELU, SiLU, softmax, the position-embedding resize) is left out. Rendering and the density grid
(per-ray/per-point MLPs whose count depends on the sampler) are not included.
"""
from __future__ import annotations

from .config import LRMConfig


def lrm_flops(config: LRMConfig, batch: int = 1) -> dict[str, float]:
    """FLOPs of :meth:`LRM.forward_planes <core.models.lrm.modeling_lrm.LRM.forward_planes>` on
    ``batch`` pictures of ``config.source_size`` pixels.

    Returns:
        dict ``encoder`` (DINOv2 with registers), ``camera`` (camera embedder and every ModLN's
        modulation), ``transformer`` (cross-attention to the image tokens, self-attention over the
        3·r² triplane tokens, MLP), ``upsampler`` and ``total``.
    """
    c = config
    p, e = c.encoder_patch_size, c.encoder_feat_dim
    patches = (c.source_size // p) ** 2
    tokens = 1 + c.encoder_num_registers + patches
    encoder = 2.0 * patches * e * 3 * p * p + c.encoder_depth * (
        2.0 * tokens * (4 * e * e + 2 * e * 4 * e) + 4.0 * tokens * tokens * e)
    d, m = c.transformer_dim, c.camera_embed_dim
    lq, lc = 3 * c.triplane_low_res ** 2, 1 + patches        # queries; image tokens (registers dropped)
    camera = 2.0 * (16 * m + m * m) + c.transformer_layers * 3 * 2.0 * m * 2 * d
    cross = 2.0 * lq * d * d * 2 + 2.0 * lc * e * d * 2 + 4.0 * lq * lc * d
    self_attention = 2.0 * lq * d * 4 * d + 4.0 * lq * lq * d
    mlp = 2.0 * lq * 2 * d * 4 * d
    transformer = c.transformer_layers * (cross + self_attention + mlp)
    upsampler = 2.0 * 3 * c.triplane_low_res ** 2 * d * c.triplane_dim * 4
    out = {"encoder": batch * encoder, "camera": batch * camera, "transformer": batch * transformer,
           "upsampler": batch * upsampler}
    out["total"] = sum(out.values())
    return out
