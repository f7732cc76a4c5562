"""DUSt3R global alignment: fuse pairwise pointmaps into one scene (``PointCloudOptimizer``).

Modules: :mod:`.optimiser` (the unknowns, the loss and its gradient, Adam), :mod:`.initialisation`
(the 'mst' init, PnP included) and :mod:`.align` (:func:`global_align`, the entry point).

Input: for every directed edge e = (i, j) of a scene graph, the network's two pointmaps, both in
camera i's frame: ``pred_i[e]`` (view i's pixels) and ``pred_j[e]`` (view j's pixels), with their
confidences. Unknowns (all optimised jointly by Adam):

- per view n: camera-to-world pose (unit quaternion XYZW + signed_log1p translation, ``im_poses
  [N,7]``), log depth map (``im_depthmaps [N,A]``, A = max H·W, row-major), focal as 20·log f
  (``im_focals [N,1]``); principal point fixed at (W/2, H/2);
- per edge e: a similarity P_e taking the pair's frame (camera i) to the world (quaternion,
  signed_log1p translation, log scale σ_e: ``pw_poses [E,8]``). The scales are normalised so that
  their geometric mean is ``base_scale``: s_e = σ_e·exp(log base_scale − mean log σ).

Loss (``dist`` l1 = Euclidean distance, confidence 'log'):
    Σ_e Σ_p log(conf1_e)·‖X_i − P_e·pred_i[e]‖ / Σ_e H_i W_i + the same for view j, pred_j and conf2,
where X_n = R_n·(d·(u − cx)/f, d·(v − cy)/f, d) + t_n are view n's world points (u column, v row).

Initialisation 'mst' (minimum spanning tree of −edge score, score = mean(conf1)·mean(conf2)):
chains pairwise predictions by weighted similarity registrations, estimates focals (Weiszfeld)
and poses of views reached only as a "second view" by RANSAC PnP, then registers every edge.
It follows the reference implementation's order of operations, including one quirk (see
:func:`.initialisation.init_mst`).

Memory: pairwise predictions are kept once ([E,A,3] float32 each side, the caller's stacked tensors
used in place); beyond small problems the loss and its analytic gradient are computed in chunks of
edges (``_CHUNK_POINTS`` pixels at a time), so no E×A-sized intermediate exists beyond the inputs,
and nothing quadratic in pixels exists at all. 10 views at 512×384 (complete graph, 90 edges):
peak RSS ≈ 2.3 GiB including the inputs.
"""
from __future__ import annotations

from core.models.dust3r.global_alignment.align import DEFAULT_OPTIONS, global_align
from core.models.dust3r.global_alignment.initialisation import PnPCall, init_mst
from core.models.dust3r.global_alignment.optimiser import PointCloudOptimizer

__all__ = ["DEFAULT_OPTIONS", "PnPCall", "PointCloudOptimizer", "global_align", "init_mst"]
