"""Analytic FLOP count of a π³ / Pi3X forward pass (benchmark and view-count scaling study).

Counts 2 FLOPs per multiply-accumulate of every matrix product and convolution (linear layers,
attention scores and mixing, convolutions and transposed convolutions, the 3x3 and 4x4 matrix
products of the pose maths); element-wise work (norms, softmax, activations, RoPE, resizing) and
the small SVDs / inverses are left out. With S views of h x w patches (P = h·w,
T = 5 + P decoder tokens per view):

- per-view terms (encoder, per-view decoder blocks, linear parts of all-view blocks, heads) grow
  linearly in S;
- all-view attention grows as ``4 (S·T)² D`` per all-view block, Pi3X's pose injection as
  ``4 (S·P)² D``: quadratic in S.
"""
from __future__ import annotations

from .config import Pi3Config


def _block(tokens: int, dim: int, seq: int, batch: int, mlp_ratio: float) -> tuple[float, float]:
    """(linear, attention) FLOPs of one self-attention block on ``batch`` sequences of ``seq``
    tokens (``tokens = batch * seq``)."""
    hidden = int(dim * mlp_ratio)
    linear = 2.0 * tokens * (dim * 3 * dim + dim * dim + 2 * dim * hidden)
    return linear, 4.0 * batch * seq * seq * dim


def _conv(area: int, c_in: int, c_out: int, k: int) -> float:
    return 2.0 * area * c_in * c_out * k * k


def conv_head_flops(config: Pi3Config, grid_h: int, grid_w: int, outputs: tuple[int, ...]) -> float:
    """FLOPs of one Pi3X convolutional head on one view."""
    total, c_in, h, w = 0.0, config.head_out_dim, grid_h, grid_w
    for c in config.conv_upsample:
        total += 2.0 * h * w * (c_in + 2) * c * 4            # transposed 2x2 stride 2 (input grid)
        h, w = 2 * h, 2 * w
        total += _conv(h * w, c, c, 3) + config.conv_res_blocks * 2 * _conv(h * w, c, 2 * c, 3)
        c_in = c
    area = grid_h * grid_w * config.patch_size ** 2
    last = config.conv_last_channels
    return total + sum(_conv(area, c_in + 2, last, 3) + _conv(area, last, out, 1) for out in outputs)


def pi3_flops(num_views: int, height: int, width: int, config: Pi3Config | None = None,
              conditions: tuple[str, ...] = ()) -> dict[str, float]:
    """FLOPs of ``Pi3(config)`` on ``num_views`` images of ``height x width`` pixels.

    Args:
        conditions: Pi3X only: which conditions are given (``intrinsics``, ``rays``, ``poses``,
            ``depth``), every view using them (poses need S >= 2 to be used).

    Returns:
        dict of components (``patch_embed``, ``encoder``, ``decoder_view``, ``decoder_all_linear``,
        ``decoder_all_attention``, ``head_transformers``, ``heads``, ``camera_head``, ``metric``,
        ``conditioning``, ``pose_injection``) and ``total``.
    """
    c = config or Pi3Config()
    s, d, p = num_views, c.embed_dim, c.patch_size
    gh, gw = height // p, width // p
    patches, pixels = gh * gw, height * width
    t_enc, t = 1 + c.enc_registers + patches, c.dec_registers + patches
    out: dict[str, float] = {"patch_embed": _conv(s * patches, 3, d, p)}
    lin, att = _block(s * t_enc, d, t_enc, s, c.mlp_ratio)
    out["encoder"] = c.enc_depth * (lin + att)
    view_blocks, all_blocks = (c.dec_depth + 1) // 2, c.dec_depth // 2
    out["decoder_view"] = view_blocks * sum(_block(s * t, d, t, s, c.mlp_ratio))
    lin_a, att_a = _block(s * t, d, s * t, 1, c.mlp_ratio)
    out["decoder_all_linear"] = all_blocks * lin_a
    out["decoder_all_attention"] = all_blocks * att_a
    w_h = c.head_embed_dim
    trunk = 2.0 * s * t * 2 * d * w_h + c.head_depth * sum(_block(s * t, w_h, t, s, c.mlp_ratio))
    out["head_transformers"] = (3 * trunk + 2 * 2.0 * s * t * w_h * c.head_out_dim
                                + 2.0 * s * t * w_h * c.cam_dim)
    cam = c.cam_dim
    out["camera_head"] = (2.0 * s * patches * 6 * cam * cam + 2.0 * s * (2 * cam * cam + 12 * cam)
                          + 2 * 2.0 * s * 27)                  # two 3x3 products (det, R)
    to_world = 2.0 * s * pixels * 9                            # R·local per pixel
    if c.variant == "pi3":
        out["heads"] = 2.0 * s * patches * c.head_out_dim * 4 * p * p + to_world
        out["metric"] = out["conditioning"] = out["pose_injection"] = 0.0
    else:
        out["heads"] = s * (conv_head_flops(c, gh, gw, (2, 1)) + conv_head_flops(c, gh, gw, (1,))) \
            + to_world
        e = c.metric_embed_dim
        metric = 2.0 * 2 * d * e + 2.0 * s * t * 2 * d * e + 2.0 * e * c.metric_out_dim \
            + 2.0 * c.metric_out_dim
        metric += c.metric_depth * (2.0 * 2 * e * e + 2 * 2.0 * s * t * e * e + 4.0 * s * t * e
                                    + 2.0 * 2 * e * int(e * c.mlp_ratio))
        out["metric"] = metric
        conditions = set(conditions)
        cond = 0.0
        if conditions & {"intrinsics", "rays"}:
            cond += _conv(s * patches, 2, d, p)
            if "rays" not in conditions:
                cond += 2.0 * s * pixels * 9                   # K^-1 (u, v, 1)
        if "depth" in conditions:
            lin_e, att_e = _block(s * t_enc, d, t_enc, s, c.mlp_ratio)
            cond += _conv(s * patches, 2, d, p) + c.enc_depth * (lin_e + att_e)
        if c.multimodal:
            cond += 2.0 * s * 64                               # poses relative to view 0
        out["conditioning"] = cond if c.multimodal else 0.0
        inject = 0.0
        if "poses" in conditions and s >= 2 and c.multimodal:
            n = s * patches
            lin_i, att_i = _block(n, d, n, 1, c.mlp_ratio)
            inject = len(c.inject_after) * (lin_i + att_i + 4 * 4.0 * n * d)
        out["pose_injection"] = inject
    out["total"] = sum(out.values())
    return out
