"""Analytic FLOP count of one Fast3R forward pass, per stage.

Same counting convention as :mod:`core.models.croco.flops` (matrix products and convolutions,
2 FLOPs per multiply-accumulate; element-wise work left out). The encoder runs once per view,
the fusion transformer attends over all views' tokens at once (quadratic in the view count),
and the global (and local) DPT heads run once per view.
"""
from __future__ import annotations

from ..croco import flops as croco
from .config import Fast3RConfig


def fast3r_flops(num_views: int, height: int, width: int, config: Fast3RConfig | None = None) -> dict[str, float]:
    """FLOPs of ``Fast3R(config)`` on ``num_views`` images of ``height x width`` network pixels
    (multiples of the patch size), batch 1.

    Returns:
        dict ``encoder``, ``fusion_linear`` (``decoder_embed``, qkv, projections, MLPs),
        ``fusion_attention`` (scores and mixing over all views' tokens), ``heads`` and ``total``.
    """
    config = config or Fast3RConfig()
    e, d, h = config.encoder_args, config.decoder_args, config.head_args
    p = e["patch_size"]
    gh, gw = height // p, width // p
    n, s = gh * gw, num_views
    enc, dim = e["embed_dim"], d["embed_dim"]
    encoder = s * (croco.patch_embed(n, enc, p)
                   + e["depth"] * croco.encoder_block(n, enc, int(enc * e["mlp_ratio"])))
    tokens = s * n
    hidden = int(dim * d["mlp_ratio"])
    fusion_linear = 2.0 * tokens * enc * dim + d["depth"] * 2.0 * tokens * (4 * dim * dim + 2 * dim * hidden)
    fusion_attention = d["depth"] * 4.0 * tokens * tokens * dim
    head = croco.dpt_head(gh, gw, [enc] + [dim] * 3, h["dpt_layer_dims"], h["dpt_feature_dim"],
                          h["dpt_last_dim"], 4)
    heads = s * head * (2 if h["with_local_head"] else 1)
    out = {"encoder": encoder, "fusion_linear": fusion_linear, "fusion_attention": fusion_attention,
           "heads": heads}
    out["total"] = sum(out.values())
    return out
