"""Cameras and world points from DUSt3R predictions of one or two views (no global alignment).

World frame = view 0's camera (OpenCV). Principal points are DUSt3R's (W/2, H/2)
(:func:`core.geometry.dust3r_principal_point`), as the authors' aligner assumes; focals come from
Weiszfeld's estimate (:func:`core.geometry_torch.focal_from_point_map`, float64) on each view's
own-frame pointmap.
Output keys match ``global_alignment.global_align``: ``cam_from_world [N,4,4]``, ``focals [N]``,
``principal_points [N,2]``, ``depthmaps [N,H,W]``, ``pts3d [N,H,W,3]``, ``im_conf [N,H,W]``.
"""
from __future__ import annotations

import torch

from core.geometry import dust3r_principal_point
from core.geometry_torch import focal_from_point_map, invert_transform, sim3_matrix, transform_points, umeyama_parts


def _index(pairs: dict, i: int, j: int) -> int:
    matches = [(k) for k, (a, b) in enumerate(zip(pairs["view1_idx"].tolist(), pairs["view2_idx"].tolist()))
               if (a, b) == (i, j)]
    if not matches:
        raise ValueError(f"pair ({i}, {j}) was not predicted")
    return matches[0]


def single_view(pairs: dict) -> dict:
    """One view, predicted as the pair (0, 0): its pred1 is the view in its own frame."""
    e = _index(pairs, 0, 0)
    pts = pairs["pts3d"][e]
    pp = dust3r_principal_point(*pts.shape[:2])
    focal = focal_from_point_map(pts.double(), pp)
    return {"cam_from_world": torch.eye(4, dtype=torch.float64)[None],
            "focals": torch.tensor([focal], dtype=torch.float64),
            "principal_points": torch.tensor([pp], dtype=torch.float64),
            "depthmaps": pts[None, ..., 2].clone(), "pts3d": pts[None].clone(),
            "im_conf": pairs["conf1"][e][None].clone()}


def two_views(pairs: dict) -> dict:
    """Two views from the pair (0, 1) directly, with the swapped pair (1, 0) for view 1's camera.

    View 0's points are pred1 of (0, 1), view 1's are pred2 of (0, 1) (already in view 0's frame).
    View 1's pose: the confidence-weighted similarity taking its own-frame pointmap (pred1 of (1, 0))
    onto its points in view 0's frame; rotation and centre are kept, the scale only relates the two
    pairs' units. Its depth is the z of its world points in that camera.
    """
    e01, e10 = _index(pairs, 0, 1), _index(pairs, 1, 0)
    pts0 = pairs["pts3d"][e01]
    pts1_world = pairs["pts3d_in_other_view"][e01]
    pts1_own = pairs["pts3d"][e10]
    pp = dust3r_principal_point(*pts0.shape[:2])
    weights = pairs["conf1"][e10] * pairs["conf2"][e01]
    scale, rot, trans = umeyama_parts(pts1_own.double(), pts1_world.double(), weights.double())
    cam1_from_world = invert_transform(sim3_matrix(1.0, rot, trans))  # rotation and centre; scale dropped
    cam_pts1 = transform_points(cam1_from_world, pts1_world.double())
    focal0 = focal_from_point_map(pts0.double(), pp)
    focal1 = focal_from_point_map(pts1_own.double(), pp)
    return {"cam_from_world": torch.stack([torch.eye(4, dtype=torch.float64), cam1_from_world]),
            "focals": torch.tensor([focal0, focal1], dtype=torch.float64),
            "principal_points": torch.tensor([pp] * 2, dtype=torch.float64),
            "depthmaps": torch.stack([pts0[..., 2], cam_pts1[..., 2].float()]),
            "pts3d": torch.stack([pts0, pts1_world]),
            "im_conf": torch.stack([pairs["conf1"][e01], pairs["conf2"][e01]]),
            "pair_scale_1_to_0": float(scale)}
