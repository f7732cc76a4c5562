"""What the LRM's queries and renders return (float32 tensors, OpenLRM's canonical object frame:
the object inside the box [-1,1]³, world up +z; lengths in that frame's units).

- :class:`FieldOutput`: the triplane NeRF's density and colour at query points.
- :class:`RayRenderOutput`: one render call over rays (``renderer.render_rays``).
- :class:`RenderOutput`: the same as images of M views of N triplanes (``LRM.render``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class FieldOutput:
    """Density and colour of the field at query points; ``...`` is the query layout:
    ``[N,P]`` for points, ``[N,G,G,G]`` for a grid (array axes x, y, z).

    Attributes:
        sigma: ``[...,1]`` activated density ``softplus(raw - 1)`` >= 0 (per unit length); no
            box filtering (points outside [-1,1]³ are decoded like any other).
        rgb: ``[...,3]`` RGB in [-0.001, 1.001] (``sigmoid·1.002 - 0.001``).
    """

    sigma: torch.Tensor
    rgb: torch.Tensor


@dataclass(frozen=True, eq=False)
class RayRenderOutput:
    """Volume rendering of B ray batches of R rays each (rays view-major, pixel row-major).

    Attributes:
        rgb: ``[B,R,3]`` composited colour over the background intensity (about [0, 1]).
        depth: ``[B,R,1]`` expected distance along the (unit) ray from the camera centre,
            clamped to the call's sample range (rays that see nothing get its far end).
        weight: ``[B,R,1]`` accumulated opacity Σw in [0, 1].
        depths_coarse: ``[B,R,Dc,1]`` the stratified sample distances; None unless
            ``return_samples``.
        depths_fine: ``[B,R,Di,1]`` the importance sample distances (Di = 0 without importance
            sampling); None unless ``return_samples``.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    weight: torch.Tensor
    depths_coarse: torch.Tensor | None = None
    depths_fine: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class RenderOutput:
    """Full R×R images of M views of each of N triplanes (:class:`RayRenderOutput` as images).

    Attributes:
        images_rgb: ``[N,M,3,R,R]`` colour over the background (about [0, 1]).
        images_depth: ``[N,M,1,R,R]`` expected distance along each pixel's ray (see
            :attr:`RayRenderOutput.depth`).
        images_weight: ``[N,M,1,R,R]`` accumulated opacity in [0, 1].
        depths_coarse: ``[N·M,R²,Dc,1]`` stratified sample distances; None unless
            ``return_samples``.
        depths_fine: ``[N·M,R²,Di,1]`` importance sample distances; None unless
            ``return_samples``.
    """

    images_rgb: torch.Tensor
    images_depth: torch.Tensor
    images_weight: torch.Tensor
    depths_coarse: torch.Tensor | None = None
    depths_fine: torch.Tensor | None = None
