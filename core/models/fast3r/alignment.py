"""Fast3R local-to-global alignment: register each view's local pointmap onto its global one.

Per view, a similarity (s, R, t) is fitted by Umeyama (:func:`core.geometry_torch.umeyama_parts`,
in float64) over the pixels whose global confidence is at least its ``percentile``-th percentile
(linear interpolation, as ``torch.quantile``), and applied to every local point: ``s R x + t``.
Same as the authors' demo (percentile 85).
"""
from __future__ import annotations

import torch

from core.geometry_torch import umeyama_parts


def align_local_to_global(pts_local: torch.Tensor, pts_global: torch.Tensor, conf_global: torch.Tensor,
                          percentile: float = 85.0, weights: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, list[tuple[float, torch.Tensor, torch.Tensor]]]:
    """Align local pointmaps (own camera frames) to the global frame.

    Args:
        pts_local: ``[..., H, W, 3]`` points of each view in its own camera frame.
        pts_global: ``[..., H, W, 3]`` the same views' points in the global frame (view 0's camera).
        conf_global: ``[..., H, W]`` global-head confidence.
        percentile: pixels with confidence >= this percentile take part in the fit.
        weights: optional ``[..., H, W]`` per-pixel weights (unweighted when None, as the reference).

    Returns:
        aligned ``[..., H, W, 3]`` and the list of ``(s, R [3,3], t [3])`` per leading index.
    """
    lead = pts_local.shape[:-3]
    h, w = pts_local.shape[-3:-1]
    local = pts_local.reshape(-1, h * w, 3)
    glob = pts_global.reshape(-1, h * w, 3)
    conf = conf_global.reshape(-1, h * w)
    wts = None if weights is None else weights.reshape(-1, h * w)
    out = torch.empty_like(local)
    transforms = []
    for i in range(local.shape[0]):
        threshold = torch.quantile(conf[i].float(), percentile / 100.0)
        mask = conf[i] >= threshold
        fit = umeyama_parts(local[i][mask].double(), glob[i][mask].double(),
                            None if wts is None else wts[i][mask].double())
        s, rot, t = (x.to(local.dtype) for x in fit)
        out[i] = s * local[i] @ rot.T + t
        transforms.append((float(s), rot, t))
    return out.reshape(*lead, h, w, 3), transforms
