"""Running DUSt3R over the pairs of a scene graph (each image encoded once).

The reference encodes both images of every pair; the encoder output of an image does not depend
on its partner, so encoding each view once and reusing its tokens gives the same predictions
(the fixtures' "symmetrized half encoding vs full encoding" check is exactly 0) at a fraction of
the cost for many pairs.
"""
from __future__ import annotations

import logging

import torch

from .modeling_dust3r import DUSt3R

log = logging.getLogger(__name__)


@torch.no_grad()
def predict_pairs(model: DUSt3R, images: list[torch.Tensor], pairs: list[tuple[int, int]],
                  batch_size: int = 2, progress=None, autocast=None) -> dict:
    """Pairwise predictions for ``pairs`` of ``images``.

    Args:
        model: a DUSt3R in eval mode.
        images: N tensors ``[3, h, w]`` in [-1, 1] on the model's device (one size for all).
        pairs: E (i, j) pairs: view 1 = image i, view 2 = image j.
        batch_size: pairs per decoder/head pass.
        progress: optional ``Progress`` (fraction, message) with ``check()``.
        autocast: optional context-manager factory (CUDA mixed precision) for encoder/decoder.

    Returns:
        dict of torch tensors on the CPU: ``view1_idx, view2_idx [E]`` int64, ``pts3d [E,h,w,3]``
        and ``conf1 [E,h,w]`` (view i's points in its own frame), ``pts3d_in_other_view
        [E,h,w,3]`` and ``conf2 [E,h,w]`` (view j's points in view i's frame).
    """
    import contextlib

    ctx = autocast or contextlib.nullcontext
    report = progress or (lambda *_: None)
    used = sorted({i for pair in pairs for i in pair})
    feats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for n, i in enumerate(used):
        with ctx():
            feat, pos = model.encode(images[i].unsqueeze(0))
        feats[i] = (feat, pos)
        report(0.3 * (n + 1) / len(used), f"encoded view {n + 1}/{len(used)}")
        if progress is not None:
            progress.check()
    out = {"pts3d": [], "conf1": [], "pts3d_in_other_view": [], "conf2": []}
    size1 = size2 = None
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        f1 = torch.cat([feats[i][0] for i, _ in chunk])
        p1 = torch.cat([feats[i][1] for i, _ in chunk])
        f2 = torch.cat([feats[j][0] for _, j in chunk])
        p2 = torch.cat([feats[j][1] for _, j in chunk])
        size1 = tuple(images[chunk[0][0]].shape[-2:])
        size2 = tuple(images[chunk[0][1]].shape[-2:])
        with ctx():
            pred1, pred2 = model.decode_and_predict(f1, p1, f2, p2, size1, size2)
        out["pts3d"].append(pred1.pts3d.float().cpu())
        out["conf1"].append(pred1.conf.float().cpu())
        out["pts3d_in_other_view"].append(pred2.pts3d_in_other_view.float().cpu())
        out["conf2"].append(pred2.conf.float().cpu())
        done = min(start + batch_size, len(pairs))
        report(0.3 + 0.7 * done / len(pairs), f"predicted pair {done}/{len(pairs)}")
        if progress is not None:
            progress.check()
    result = {k: torch.cat(v) for k, v in out.items()}
    result["view1_idx"] = torch.tensor([i for i, _ in pairs], dtype=torch.int64)
    result["view2_idx"] = torch.tensor([j for _, j in pairs], dtype=torch.int64)
    return result
