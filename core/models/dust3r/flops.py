"""Analytic FLOP count of DUSt3R's network on a set of pairs, per stage.

Same counting convention as :mod:`core.models.croco.flops` (matrix products and convolutions,
2 FLOPs per multiply-accumulate; element-wise work left out). With encode-once inference
(:func:`.inference.predict_pairs`) the encoder runs once per distinct image and the decoders
and heads once per ordered pair; the reference (``DUSt3R.forward`` on each pair) encodes both
images of every pair: ``encoder_passes = 2 * pairs``.
"""
from __future__ import annotations

from ..croco import flops as croco
from .config import DUSt3RConfig


def dust3r_flops(encoder_passes: int, pairs: int, height: int, width: int,
                 config: DUSt3RConfig | None = None) -> dict[str, float]:
    """FLOPs of ``encoder_passes`` image encodings and ``pairs`` decoder + head passes at
    ``height x width`` network pixels (multiples of the patch size).

    Returns:
        dict ``encoder``, ``decoder`` (both decoders and ``decoder_embed``), ``heads`` (both DPT or
        linear heads) and ``total``.
    """
    c = config or DUSt3RConfig()
    gh, gw = height // c.patch_size, width // c.patch_size
    n = gh * gw
    enc, dec = c.enc_embed_dim, c.dec_embed_dim
    encoder = croco.patch_embed(n, enc, c.patch_size) + \
        c.enc_depth * croco.encoder_block(n, enc, int(enc * c.mlp_ratio))
    decoder = 2 * (2.0 * n * enc * dec + c.dec_depth * croco.decoder_block(n, n, dec, int(dec * c.mlp_ratio)))
    if c.head_type == "dpt":
        head = croco.dpt_head(gh, gw, [enc] + [dec] * 3, c.dpt_layer_dims, c.dpt_feature_dim,
                              c.dpt_last_dim, 4)
    else:
        head = 2.0 * n * dec * 4 * c.patch_size ** 2
    out = {"encoder": encoder_passes * encoder, "decoder": pairs * decoder, "heads": pairs * 2 * head}
    out["total"] = sum(out.values())
    return out
