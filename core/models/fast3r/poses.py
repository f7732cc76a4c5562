"""Fast3R camera estimation: focal and poses from the global head's pointmaps.

Fast3R predicts, for every view, its pixels' 3-D points in the camera frame of view 0 (the global
head). Cameras follow the authors' ``estimate_camera_poses`` with
``focal_length_estimation_method='first_view_from_global_head'``:

1. one focal for all views: Weiszfeld focal (:func:`core.geometry_torch.focal_from_point_map`) of
   view 0's global pointmap (it is in its own camera frame) over the pixels with conf ≥ its 10th
   percentile (linear quantile), the authors' principal point (W/2, H/2)
   (:func:`core.geometry.dust3r_principal_point`), 100 reweightings, clipped to ≥ 0;
2. per view: RANSAC PnP (OpenCV SQPNP, 100 iterations, 5 px) of the view's pixels with conf > 1
   against its global points, K = [[f,0,W/2],[0,f,H/2],[0,0,1]]. A view whose PnP fails (fewer than
   4 points, f = 0, no consensus) gets the identity pose and a NaN focal and is flagged.

World frame = view 0's camera (OpenCV axes), up to the network's unknown scale.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from core.geometry import dust3r_principal_point, invert_transform
from core.geometry_torch import focal_from_point_map
from core.models.pose_utils import pnp_ransac

log = logging.getLogger(__name__)


def estimate_focal_view0(pts3d: torch.Tensor, conf: torch.Tensor, percentile: float = 10.0,
                         niter: int = 100) -> float:
    """Focal (pixels) of view 0 from its global pointmap.

    Args:
        pts3d: [H,W,3] view 0's points in its own camera frame.
        conf: [H,W] confidence; pixels with conf ≥ its ``percentile``-th percentile are used.
    Returns:
        focal ≥ 0 (0.0 when the pointmap is no projection with a positive focal).
    """
    pts3d = torch.as_tensor(pts3d, dtype=torch.float32)
    conf = torch.as_tensor(conf, dtype=torch.float32)
    threshold = torch.quantile(conf.reshape(-1), percentile / 100.0)
    mask = conf >= threshold
    if int(mask.sum()) < 10:
        log.warning("Fast3R focal: only %d confident pixels in view 0", int(mask.sum()))
    return focal_from_point_map(pts3d, dust3r_principal_point(*pts3d.shape[:2]), mask, niter)


def estimate_cameras(pts3d_global: torch.Tensor, conf: torch.Tensor, niter_pnp: int = 100,
                     min_conf: float = 1.0) -> dict:
    """Cameras of all views from Fast3R's global pointmaps.

    Args:
        pts3d_global: [S,H,W,3] every view's pointmap in view 0's camera frame (``pts3d_in_other_view``).
        conf: [S,H,W] global-head confidences (≥ 1).
        niter_pnp: RANSAC iterations per view.
        min_conf: PnP uses the pixels with conf > min_conf.
    Returns:
        dict: ``cam_from_world [S,4,4]`` float64 (world -> camera, OpenCV; identity on failure),
        ``cam2world [S,4,4]`` float64, ``focal`` float (view 0's Weiszfeld focal, pixels, ≥ 0),
        ``focals [S]`` float64 (the focal of each successful PnP, NaN on failure), ``ok [S]`` bool.
    Raises:
        ValueError: shapes do not match.
    """
    pts = torch.as_tensor(pts3d_global).detach().to("cpu", torch.float32)
    cf = torch.as_tensor(conf).detach().to("cpu", torch.float32)
    if pts.ndim != 4 or pts.shape[-1] != 3 or tuple(cf.shape) != tuple(pts.shape[:3]):
        raise ValueError(f"expected pts3d [S,H,W,3] and conf [S,H,W], got {tuple(pts.shape)} and {tuple(cf.shape)}")
    S = pts.shape[0]
    focal = estimate_focal_view0(pts[0], cf[0])
    cam2world = np.tile(np.eye(4), (S, 1, 1))
    focals = np.full(S, np.nan)
    ok = np.zeros(S, dtype=bool)
    for v in range(S):
        res = pnp_ransac(pts[v], cf[v] > min_conf, focal, niter=niter_pnp)
        if res is None:
            log.warning("Fast3R: PnP failed for view %d (focal %.4g); identity pose", v, focal)
            continue
        focals[v], cam2world[v] = res[0], res[1].astype(np.float64)
        ok[v] = True
    return dict(cam_from_world=invert_transform(cam2world), cam2world=cam2world, focal=float(focal),
                focals=focals, ok=ok)
