"""CPU multi-view stereo: plane-sweep depth maps with ZNCC, geometric consistency, fusion.

Used when pycolmap has no CUDA (COLMAP's PatchMatch stereo needs it). For each reference
view:

1. neighbour selection: the ``num_sources`` views whose centres make a 4-40 degree angle with
   the reference as seen from the scene centre, closest angles to ``ideal_angle_deg`` first;
2. plane sweep: fronto-parallel planes sampled uniformly in inverse depth over the range of
   the sparse points seen by the view; each source image is warped into the reference by the
   plane's homography and compared with zero-mean normalised cross-correlation (ZNCC) over a
   square window; the cost of a plane is the mean of the best ``top_k`` sources (robust to
   occlusion); the best plane per pixel is refined with a parabola through its neighbours and
   then by a finer per-pixel sweep around it;
3. coarse to fine (``fine_scale`` > 0): the sweep's inverse depth is interpolated to the finer
   resolution and swept again per pixel there (+-1/2 coarse plane step), then a parabola;
4. filtering: pixels with a low ZNCC or a flat window are dropped.

With a ``region`` (the object's crop box), each view matches only the pixels of the box's image
rectangle over the box's depth range, and the fused cloud is cut to the box: the work goes where
the object is. :func:`options_for_setting` maps the dense settings fast / balanced / best to options.

Then every depth map is checked against its neighbours (geometric consistency: the point
projected into a neighbour, lifted with the neighbour's depth and projected back must land
within ``consistency_px`` pixels with a relative depth difference below ``consistency_depth``)
and pixels consistent with at least ``min_consistent`` neighbours are fused: the point is the
average of the consistent 3-D points, coloured by the reference pixel, and the union is
thinned on a voxel grid.

Conventions: images ``uint8 HxWx3``; intrinsics 3x3 in pixels of the full-size images,
integer pixel coordinates at pixel centres; ``cam_from_world`` 4x4 world -> camera (OpenCV);
depths are z-depths in world units (0 = invalid), at ``map_scale`` times the image size.
"""
from __future__ import annotations

import logging
import os
import time
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from core import geometry
from core.errors import UserError
from core.progress import Progress, silent

log = logging.getLogger(__name__)


class MvsError(UserError):
    """The views cannot be matched densely (fewer than 2 registered views, too few sparse points)."""


@dataclass
class MvsOptions:
    """Options of :func:`run_mvs` (defaults: half resolution, 4 sources, 96 planes, one level)."""

    scale: float = 0.5               # resolution of the plane sweep relative to the images
    fine_scale: float = 0.0          # resolution of a second, per-pixel refinement level (0 = none)
    num_depths: int = 96             # planes of the coarse sweep
    refine_steps: int = 7            # per-pixel hypotheses of each fine sweep (0 = no refinement)
    num_sources: int = 4             # neighbour views per reference
    top_k: int = 2                   # cost = mean ZNCC of the best top_k sources
    ideal_angle_deg: float = 15.0    # preferred angle between reference and source
    window: int = 7                  # ZNCC window side (pixels, odd)
    min_ncc: float = 0.45            # drop pixels whose best cost is below
    min_texture: float = 2.0         # drop pixels whose window std (grey levels) is below
    consistency_px: float = 1.0      # geometric consistency: reprojection error (pixels of the depth maps)
    consistency_depth: float = 0.01  # and relative depth difference
    min_consistent: int = 2          # neighbours that must agree
    voxel_size: float = 0.0          # fusion voxel (world units); 0 = voxel_fraction x extent
    voxel_fraction: float = 0.002    # of the region's (else the cloud's) largest extent
    max_points: int = 400_000        # fused cloud size cap (seeded subsample)
    workers: int = 0                 # depth maps computed side by side (0 = one per CPU core)

    @property
    def map_scale(self) -> float:
        """Resolution of the final depth maps relative to the images."""
        return self.fine_scale if self.fine_scale > 0 else self.scale


DenseSetting = Literal["fast", "balanced", "best"]
DENSE_SETTINGS: tuple[str, ...] = typing.get_args(DenseSetting)
#: per setting: longest side of the sweep's images, of the refinement level's (0 = no second level),
#: planes of the sweep, sources per view and how many of them the cost averages
_SETTINGS = {
    "fast": {"sweep_side": 256, "fine_side": 0, "num_depths": 64, "num_sources": 4, "top_k": 2},
    "balanced": {"sweep_side": 256, "fine_side": 512, "num_depths": 96, "num_sources": 4, "top_k": 2},
    "best": {"sweep_side": 320, "fine_side": 1024, "num_depths": 128, "num_sources": 6, "top_k": 3},
}


def options_for_setting(setting: str, image_size: tuple[int, int], max_size: int = 0, num_depths: int = 0
                        ) -> MvsOptions:
    """:class:`MvsOptions` of a dense setting (``fast`` / ``balanced`` / ``best``) for images of
    ``image_size`` (H, W).

    ``max_size`` > 0 overrides the longest side of the final depth maps (the sweep then runs at that
    size, or at the setting's sweep size when smaller, and refines at ``max_size``); ``num_depths`` > 0
    overrides the sweep's planes. Scales never exceed 1 (full resolution).
    """
    if setting not in _SETTINGS:
        raise MvsError(f"unknown dense setting {setting!r}; choose one of {', '.join(DENSE_SETTINGS)}")
    spec = _SETTINGS[setting]
    longest = max(image_size)
    sweep_side, fine_side = spec["sweep_side"], spec["fine_side"]
    if max_size > 0:
        sweep_side, fine_side = min(sweep_side, max_size), max_size
    scale = min(1.0, sweep_side / longest)
    fine = min(1.0, fine_side / longest) if fine_side else 0.0
    return MvsOptions(scale=scale, fine_scale=fine if fine > scale else 0.0,
                      num_depths=num_depths or spec["num_depths"], num_sources=spec["num_sources"],
                      top_k=spec["top_k"])


@dataclass
class MvsResult:
    """Per-view depth maps and the fused cloud.

    Attributes:
        depths: ``float32 [N,h,w]`` filtered z-depths at ``scale`` (0 = invalid), world units.
        scores: ``float32 [N,h,w]`` aggregated ZNCC of the chosen depth.
        consistent: ``uint8 [N,h,w]`` number of neighbours agreeing with each pixel.
        intrinsics: ``float64 [N,3,3]`` intrinsics of the depth maps (scaled).
        points: ``float32 [M,3]`` fused world points; colors ``uint8 [M,3]``;
        confidence: ``float32 [M]`` ZNCC of the source pixel; source_view ``int32 [M]``.
        sources: neighbour views used for each view.
        stage_seconds: {"depth_maps": s, "fusion": s}.
    """

    depths: np.ndarray
    scores: np.ndarray
    consistent: np.ndarray
    intrinsics: np.ndarray
    points: np.ndarray
    colors: np.ndarray
    confidence: np.ndarray
    source_view: np.ndarray
    sources: list[list[int]]
    stage_seconds: dict


def scene_centre(cam_from_world: np.ndarray) -> np.ndarray:
    """Least-squares intersection of the optical axes of ``cam_from_world [N,4,4]`` (finite rows)."""
    ok = np.isfinite(cam_from_world).all(axis=(1, 2))
    poses = cam_from_world[ok]
    centres = geometry.camera_center(poses)
    axes = poses[:, 2, :3]  # third row of R = optical axis in world coordinates
    return geometry.least_squares_ray_intersection(centres, axes)


def select_sources(cam_from_world: np.ndarray, num_sources: int, ideal_angle_deg: float = 15.0,
                   min_angle_deg: float = 4.0, max_angle_deg: float = 40.0,
                   centre: np.ndarray | None = None) -> list[list[int]]:
    """For each registered view, up to ``num_sources`` neighbour views (see module docstring).

    Returns a list of N lists (empty for unregistered views).
    """
    ok = np.isfinite(cam_from_world).all(axis=(1, 2))
    centres = np.full((len(cam_from_world), 3), np.nan)
    centres[ok] = geometry.camera_center(cam_from_world[ok])
    centre = scene_centre(cam_from_world) if centre is None else centre
    rays = centres - centre
    out = []
    for i in range(len(cam_from_world)):
        if not ok[i]:
            out.append([])
            continue
        angles = geometry.angle_between_deg(rays[i][None], rays)
        # the optical axes must also roughly agree (the views see the same side)
        axis_angles = geometry.angle_between_deg(cam_from_world[i, 2, :3][None], cam_from_world[:, 2, :3])
        candidates = [j for j in range(len(cam_from_world))
                      if j != i and ok[j] and min_angle_deg <= angles[j] <= max_angle_deg and axis_angles[j] < 60]
        if len(candidates) < num_sources:  # relax the bounds rather than leave a view without sources
            candidates = [j for j in range(len(cam_from_world)) if j != i and ok[j] and angles[j] > 1.0]
        candidates.sort(key=lambda j: abs(angles[j] - ideal_angle_deg))
        out.append(candidates[:num_sources])
    return out


def depth_range(points: np.ndarray, intrinsics: np.ndarray, cam_from_world: np.ndarray,
                image_size: tuple[int, int], margin: float = 0.15) -> tuple[float, float] | None:
    """(near, far) z-depth of the sparse ``points`` visible in the view, widened by ``margin``; None if < 10."""
    uv, z = geometry.project(points, intrinsics, cam_from_world)
    h, w = image_size
    inside = (z > 0) & np.isfinite(uv).all(axis=1) & (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (
        uv[:, 1] <= h - 1)
    if inside.sum() < 10:
        return None
    near, far = np.percentile(z[inside], [1, 99])
    return float(near * (1 - margin)), float(far * (1 + margin))


def _gray(image: np.ndarray, scale: float) -> np.ndarray:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    if scale != 1.0:
        h, w = gray.shape
        gray = cv2.resize(gray, (int(round(w * scale)), int(round(h * scale))), interpolation=cv2.INTER_AREA)
    return gray


class _Window:
    """Box-filter statistics for ZNCC against one reference image."""

    def __init__(self, ref: np.ndarray, window: int) -> None:
        self.size = (window, window)
        self.ref = ref
        self.mu = self.box(ref)
        self.var = np.maximum(self.box(ref * ref) - self.mu**2, 0)
        self.std = np.sqrt(self.var)

    def box(self, image: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(image, -1, self.size, normalize=True, borderType=cv2.BORDER_REFLECT)

    def zncc(self, warped: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """ZNCC of ``warped`` with the reference, -1 where the window leaves the source image."""
        mu = self.box(warped)
        var = np.maximum(self.box(warped * warped) - mu**2, 0)
        cov = self.box(warped * self.ref) - mu * self.mu
        ncc = cov / (np.sqrt(var) * self.std + 1e-3)
        ncc[self.box(valid) < 0.999] = -1.0
        ncc[var < 1e-2] = -1.0
        return ncc


def plane_sweep(ref_gray: np.ndarray, src_grays: list[np.ndarray], k_ref: np.ndarray, k_srcs: list[np.ndarray],
                pose_ref: np.ndarray, pose_srcs: list[np.ndarray], near: float, far: float,
                options: MvsOptions) -> tuple[np.ndarray, np.ndarray]:
    """Depth ``[h,w]`` and score ``[h,w]`` of one reference view (module docstring, step 2).

    All images at the depth-map resolution; ``k_*`` are their (scaled) intrinsics. ``ref_gray`` may be
    a window of the reference image (``k_ref`` then has the window's principal point).
    """
    stats = _Window(ref_gray, options.window)
    relatives = _relatives(pose_ref, pose_srcs)
    inv, score, step, at_edge = _sweep(stats, src_grays, k_ref, k_srcs, relatives, near, far, options)
    if options.refine_steps > 1:
        inv, score = _refine(stats, src_grays, k_ref, k_srcs, relatives, inv, step, options)
    score[at_edge | (stats.std < options.min_texture)] = -1.0
    return (1.0 / inv).astype(np.float32), score.astype(np.float32)


def _relatives(pose_ref: np.ndarray, pose_srcs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rotation, translation) of each source camera relative to the reference camera."""
    return [(rel[:3, :3], rel[:3, 3]) for rel in (geometry.relative_pose(pose_ref, p) for p in pose_srcs)]


def _sweep(stats: _Window, src_grays, k_ref, k_srcs, relatives, near: float, far: float, options: MvsOptions):
    """Fronto-parallel sweep: (inverse depth ``[h,w]``, score ``[h,w]``, plane spacing in inverse depth,
    ``bool [h,w]`` best plane at either end of the range)."""
    h, w = stats.ref.shape
    inv_depths = np.linspace(1.0 / near, 1.0 / far, options.num_depths)
    ones = np.ones((h, w), np.float32)
    k_ref_inv = np.linalg.inv(k_ref)
    normal = np.array([0.0, 0.0, 1.0])
    k = min(options.top_k, len(src_grays))
    volume = np.empty((options.num_depths, h, w), np.float32)
    per_source = np.empty((len(src_grays), h, w), np.float32)
    for d, inv_depth in enumerate(inv_depths):
        for s, (src, k_src, (rotation, translation)) in enumerate(zip(src_grays, k_srcs, relatives)):
            homography = k_src @ (rotation + np.outer(translation, normal) * inv_depth) @ k_ref_inv
            flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            warped = cv2.warpPerspective(src, homography, (w, h), flags=flags, borderValue=0)
            valid = cv2.warpPerspective(ones, homography, (w, h), flags=flags, borderValue=0)
            per_source[s] = stats.zncc(warped, valid)
        volume[d] = _best_sources_mean(per_source, k)
    best, score, offset = _best_plane(volume)
    step = inv_depths[1] - inv_depths[0] if options.num_depths > 1 else 0.0
    inv = inv_depths[best] + offset * step
    at_edge = (best == 0) | (best == options.num_depths - 1)
    return inv.astype(np.float32), score, step, at_edge


def _refine(stats: _Window, src_grays, k_ref, k_srcs, relatives, inv, step, options: MvsOptions):
    """Fine per-pixel sweep over +-1 ``step`` around the inverse depth ``inv [h,w]``, then a parabola:
    (inverse depth ``[h,w]``, score ``[h,w]``)."""
    h, w = inv.shape
    grid = geometry.pixel_grid(h, w).reshape(-1, 2)
    rays = geometry.unproject_pixels(grid, 1.0, k_ref).astype(np.float32)  # z = 1
    n = options.refine_steps
    offsets = np.linspace(-1.0, 1.0, n) * step
    k = min(options.top_k, len(src_grays))
    volume = np.empty((n, h, w), np.float32)
    per_source = np.empty((len(src_grays), h, w), np.float32)
    ones = np.ones((h, w), np.float32)
    # a source pixel is (K R ray z + K t) up to scale: precompute K R ray and K t once per source
    projected = [(rays @ (k_src @ rotation).T.astype(np.float32), (k_src @ translation).astype(np.float32))
                 for k_src, (rotation, translation) in zip(k_srcs, relatives)]
    for i, off in enumerate(offsets):
        z = (1.0 / np.clip(inv + off, 1e-6, None)).reshape(-1, 1).astype(np.float32)
        for s, (src, (direction, shift)) in enumerate(zip(src_grays, projected)):
            uvw = direction * z + shift
            with np.errstate(divide="ignore", invalid="ignore"):
                map_x = (uvw[:, 0] / uvw[:, 2]).reshape(h, w)
                map_y = (uvw[:, 1] / uvw[:, 2]).reshape(h, w)
            bad = ~(uvw[:, 2] > 0).reshape(h, w)
            map_x[bad] = -10
            map_y[bad] = -10
            warped = cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderValue=0)
            valid = cv2.remap(ones, map_x, map_y, cv2.INTER_LINEAR, borderValue=0)
            per_source[s] = stats.zncc(warped, valid)
        volume[i] = _best_sources_mean(per_source, k)
    best, score, offset = _best_plane(volume)
    fine_step = offsets[1] - offsets[0]
    new_inv = inv + offsets[best] + offset * fine_step
    return np.clip(new_inv, 1e-6, None).astype(np.float32), score


def _best_sources_mean(per_source: np.ndarray, k: int) -> np.ndarray:
    """Mean of the ``k`` best scores over sources: ``[S,h,w]`` -> ``[h,w]``."""
    if k == len(per_source):
        return per_source.mean(axis=0)
    return -np.partition(-per_source, k - 1, axis=0)[:k].mean(axis=0)


def _best_plane(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel of a ``[D,h,w]`` score volume: the best plane index, its score, and the sub-plane
    offset in [-0.5, 0.5] (plane-index units) of the parabola through it and its neighbours
    (0 at the first and last planes and where the parabola does not open downwards)."""
    n = len(volume)
    best = volume.argmax(axis=0)
    score = np.take_along_axis(volume, best[None], 0)[0]
    lo = np.take_along_axis(volume, np.clip(best - 1, 0, n - 1)[None], 0)[0]
    hi = np.take_along_axis(volume, np.clip(best + 1, 0, n - 1)[None], 0)[0]
    denom = lo - 2 * score + hi
    offset = np.where((denom < -1e-6) & (best > 0) & (best < n - 1),
                      0.5 * (lo - hi) / np.where(denom < -1e-6, denom, -1.0), 0.0)
    return best, score, np.clip(offset, -0.5, 0.5)


def consistency_counts(depths: np.ndarray, intrinsics: np.ndarray, cam_from_world: np.ndarray,
                       sources: list[list[int]], options: MvsOptions) -> tuple[np.ndarray, np.ndarray]:
    """(counts ``uint8 [N,h,w]`` of agreeing neighbours, summed world points ``float32 [N,h,w,3]`` of the agreeing ones).

    A pixel of view i agrees with view j when its point, projected into j, lifted with j's depth
    (nearest pixel) and projected back into i, lands within ``consistency_px`` and the two depths
    differ by less than ``consistency_depth`` (relative).
    """
    n, h, w = depths.shape
    counts = np.zeros((n, h, w), np.uint8)
    sums = np.zeros((n, h, w, 3), np.float32)
    grid = geometry.pixel_grid(h, w)
    for i in range(n):
        if not np.isfinite(cam_from_world[i]).all():
            continue
        valid = depths[i] > 0
        if not valid.any():
            continue
        rows, cols = np.nonzero(valid)
        points, _ = geometry.unproject_depth(depths[i], intrinsics[i], cam_from_world[i], valid)
        sums[i, rows, cols] = points
        for j in sources[i]:
            uv, z = geometry.project(points, intrinsics[j], cam_from_world[j])
            ok = np.isfinite(uv).all(axis=1) & (z > 0)
            uj = np.round(np.nan_to_num(uv[:, 0], nan=-1)).astype(int)
            vj = np.round(np.nan_to_num(uv[:, 1], nan=-1)).astype(int)
            ok &= (uj >= 0) & (uj < w) & (vj >= 0) & (vj < h)
            idx = np.nonzero(ok)[0]
            dj = depths[j, vj[idx], uj[idx]]
            has = dj > 0
            idx, dj = idx[has], dj[has]
            pixels_j = np.stack([uj[idx], vj[idx]], axis=1).astype(np.float64)
            back = geometry.unproject_pixels(pixels_j, dj, intrinsics[j], cam_from_world[j])
            uv_i, z_i = geometry.project(back, intrinsics[i], cam_from_world[i])
            reproj = np.linalg.norm(uv_i - grid[rows[idx], cols[idx]], axis=1)
            rel = np.abs(z_i - depths[i, rows[idx], cols[idx]]) / depths[i, rows[idx], cols[idx]]
            agree = (reproj < options.consistency_px) & (rel < options.consistency_depth)
            counts[i, rows[idx[agree]], cols[idx[agree]]] += 1
            sums[i, rows[idx[agree]], cols[idx[agree]]] += back[agree]
    return counts, sums


def voxel_thin(points: np.ndarray, voxel: float) -> np.ndarray:
    """Indices keeping the first point of each occupied voxel of side ``voxel``."""
    if len(points) == 0 or voxel <= 0:
        return np.arange(len(points))
    keys = np.floor((points - points.min(axis=0)) / voxel).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    return np.sort(first)


def region_window(corners: np.ndarray, intrinsics: np.ndarray, cam_from_world: np.ndarray,
                  image_size: tuple[int, int], margin: int = 0) -> tuple[int, int, int, int, float, float] | None:
    """Where a region (its ``corners [K,3]`` in the world, e.g. a crop box's 8) lies in one view.

    Returns ``(x0, y0, x1, y1, near, far)``: the pixel rectangle ``[x0, x1) x [y0, y1)`` bounding the
    projected corners grown by ``margin`` pixels and clipped to ``image_size`` (H, W) of ``intrinsics``,
    and the corners' z-depth range; None when a corner is behind the camera (the camera is inside or
    beside the region) or the rectangle is empty.
    """
    uv, z = geometry.project(np.asarray(corners, np.float64), intrinsics, cam_from_world)
    if not (z > 0).all() or not np.isfinite(uv).all():
        return None
    h, w = image_size
    x0 = max(int(np.floor(uv[:, 0].min())) - margin, 0)
    y0 = max(int(np.floor(uv[:, 1].min())) - margin, 0)
    x1 = min(int(np.ceil(uv[:, 0].max())) + margin + 1, w)
    y1 = min(int(np.ceil(uv[:, 1].max())) + margin + 1, h)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    return x0, y0, x1, y1, float(z.min()), float(z.max())


def _shifted(k: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """Intrinsics of the window of an image starting at pixel (x0, y0)."""
    k = k.copy()
    k[0, 2] -= x0
    k[1, 2] -= y0
    return k


def _depth_map(i: int, sources: list[int], levels: list[tuple[list[np.ndarray], np.ndarray]],
               cam_from_world: np.ndarray, window: tuple[int, int, int, int], near: float, far: float,
               options: MvsOptions) -> tuple[np.ndarray, np.ndarray]:
    """Depth and score of view ``i`` inside ``window`` (x0, y0, x1, y1 at the final level's resolution).

    ``levels``: (grey images, intrinsics) at the sweep resolution and, with ``fine_scale``, at the
    refinement resolution. The sweep runs on the window at the first level; its inverse depth is
    interpolated to the final level, refined per pixel there, and filtered.
    """
    x0, y0, x1, y1 = window
    ratio = options.map_scale / options.scale  # final pixels per sweep pixel
    cx0, cy0 = int(np.floor(x0 / ratio)), int(np.floor(y0 / ratio))
    grays, ks = levels[0]
    ch, cw = grays[i].shape
    cx1, cy1 = min(int(np.ceil(x1 / ratio)), cw), min(int(np.ceil(y1 / ratio)), ch)
    stats = _Window(grays[i][cy0:cy1, cx0:cx1], options.window)
    k_ref = _shifted(ks[i], cx0, cy0)
    relatives = _relatives(cam_from_world[i], [cam_from_world[j] for j in sources])
    inv, score, step, at_edge = _sweep(stats, [grays[j] for j in sources], k_ref, [ks[j] for j in sources],
                                       relatives, near, far, options)
    if options.refine_steps > 1:
        inv, score = _refine(stats, [grays[j] for j in sources], k_ref, [ks[j] for j in sources], relatives, inv,
                             step, options)
    if len(levels) > 1:
        fine_grays, fine_ks = levels[1]
        # sample the sweep's window at the final pixels' centres (pixel centres at integer coordinates)
        xs = (np.arange(x0, x1, dtype=np.float32) + 0.5) / ratio - 0.5 - cx0
        ys = (np.arange(y0, y1, dtype=np.float32) + 0.5) / ratio - 0.5 - cy0
        map_x, map_y = np.meshgrid(xs, ys)
        inv = cv2.remap(inv, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        at_edge = cv2.remap(at_edge.astype(np.uint8), map_x, map_y, cv2.INTER_NEAREST,
                            borderMode=cv2.BORDER_REPLICATE).astype(bool)
        stats = _Window(fine_grays[i][y0:y1, x0:x1], options.window)
        inv, score = _refine(stats, [fine_grays[j] for j in sources], _shifted(fine_ks[i], x0, y0),
                             [fine_ks[j] for j in sources], relatives, inv, step / 2, options)
    score[at_edge | (stats.std < options.min_texture)] = -1.0
    return (1.0 / inv).astype(np.float32), score.astype(np.float32)


def run_mvs(images: list[np.ndarray], intrinsics: np.ndarray, cam_from_world: np.ndarray,
            sparse_points: np.ndarray, options: MvsOptions | None = None, progress: Progress | None = None,
            views: list[int] | None = None, region=None) -> MvsResult:
    """Depth maps for every registered view and their fused, coloured cloud (module docstring).

    Args:
        images: N ``uint8 HxWx3`` (undistorted, pinhole ``intrinsics``).
        intrinsics: ``[N,3,3]`` full-size pixel intrinsics.
        cam_from_world: ``[N,4,4]`` (NaN rows = unregistered, skipped).
        sparse_points: ``[M,3]`` world points (e.g. COLMAP's sparse cloud) giving each view's depth range.
        views: reference views to compute (default: all registered); others get empty maps.
        region: optional box around the object (a :class:`core.data.prepare.crop.CropBox`, or anything
            with ``corners() -> [8,3]`` and ``contains(points [M,3]) -> bool [M]``, world frame). Each
            view then matches only the pixels of the box's image rectangle, over the box's depth range
            (intersected with the sparse points' range), the fused cloud keeps the points inside the
            box, and the fusion voxel is ``voxel_fraction`` of the box's largest side.
    Raises:
        MvsError when fewer than 2 views are registered or there are fewer than 10 sparse points.
    """
    options = options or MvsOptions()
    progress = progress or silent()
    n = len(images)
    registered = np.isfinite(cam_from_world).all(axis=(1, 2))
    if registered.sum() < 2:
        raise MvsError(f"multi-view stereo needs at least 2 registered views; got {int(registered.sum())}")
    if len(sparse_points) < 10:
        raise MvsError("multi-view stereo needs sparse points to bound the depth range")
    full_h, full_w = images[0].shape[:2]
    levels = [([_gray(image, options.scale) for image in images],
               geometry.resize_crop_intrinsics(intrinsics, options.scale))]
    if options.fine_scale > 0:
        levels.append(([_gray(image, options.fine_scale) for image in images],
                       geometry.resize_crop_intrinsics(intrinsics, options.fine_scale)))
    h, w = levels[-1][0][0].shape
    ks = levels[-1][1]
    sources = select_sources(cam_from_world, options.num_sources, options.ideal_angle_deg)
    targets = [v for v in (range(n) if views is None else views) if registered[v]]
    corners = None if region is None else np.asarray(region.corners(), np.float64)
    inside_sparse = sparse_points if region is None else sparse_points[region.contains(sparse_points)]
    if len(inside_sparse) < 10:
        inside_sparse = sparse_points
    depths = np.zeros((n, h, w), np.float32)
    scores = np.full((n, h, w), -1.0, np.float32)
    started = time.perf_counter()
    jobs = []  # (view, window, depth range) of each depth map to compute
    for i in targets:
        if not sources[i]:
            continue
        limits = depth_range(inside_sparse, intrinsics[i], cam_from_world[i], (full_h, full_w))
        window = (0, 0, w, h)
        if corners is not None:
            placed = region_window(corners, ks[i], cam_from_world[i], (h, w), margin=options.window)
            if placed is not None:
                window = placed[:4]
                box_near, box_far = placed[4] * 0.98, placed[5] * 1.02
                if limits is None or min(limits[1], box_far) <= max(limits[0], box_near):
                    limits = (box_near, box_far)
                else:
                    limits = (max(limits[0], box_near), min(limits[1], box_far))
        if limits is None:
            log.warning("view %d sees fewer than 10 sparse points; no depth map", i)
            continue
        jobs.append((i, window, limits))

    def compute(job):
        i, window, limits = job
        return _depth_map(i, sources[i], levels, cam_from_world, window, *limits, options)

    # views side by side, one per core (OpenCV and NumPy release the GIL in the heavy calls); progress
    # is reported from this thread, as each view finishes in order
    progress(0.0, f"depth maps of {len(jobs)} views")
    pool = ThreadPoolExecutor(max_workers=max(1, min(options.workers or (os.cpu_count() or 1), len(jobs) or 1)))
    try:
        for count, ((i, window, _), (depth, score)) in enumerate(zip(jobs, pool.map(compute, jobs))):
            depth[score < options.min_ncc] = 0
            x0, y0, x1, y1 = window
            depths[i, y0:y1, x0:x1], scores[i, y0:y1, x0:x1] = depth, score
            progress((count + 1) / len(jobs) * 0.85, f"depth map {count + 1}/{len(jobs)} (view {i})")
    finally:  # stopped (progress raised) or failed: views not started yet are dropped
        pool.shutdown(wait=True, cancel_futures=True)
    stage = {"depth_maps": time.perf_counter() - started}
    progress(0.85, "geometric consistency and fusion")
    started = time.perf_counter()
    counts, sums = consistency_counts(depths, ks, cam_from_world, sources, options)
    keep = counts >= options.min_consistent
    view_idx, rows, cols = np.nonzero(keep)
    points = (sums[view_idx, rows, cols] / (counts[view_idx, rows, cols, None] + 1.0)).astype(np.float32)
    if region is not None and len(points):
        inside = region.contains(points)
        view_idx, rows, cols, points = view_idx[inside], rows[inside], cols[inside], points[inside]
        keep = np.zeros_like(keep)
        keep[view_idx, rows, cols] = True
    filtered = np.where(keep, depths, 0).astype(np.float32)
    colors = np.zeros((len(view_idx), 3), np.uint8)
    for v in np.unique(view_idx):  # each view's pixels at the depth maps' size
        image = images[v] if (h, w) == (full_h, full_w) else cv2.resize(images[v], (w, h), interpolation=cv2.INTER_AREA)
        mine = view_idx == v
        colors[mine] = image[rows[mine], cols[mine]]
    confidence = scores[view_idx, rows, cols]
    if len(points):
        extent = float(np.ptp(corners, axis=0).max()) if corners is not None else float(np.ptp(points, axis=0).max())
        voxel = options.voxel_size or options.voxel_fraction * extent
        order = np.argsort(-confidence, kind="stable")  # keep the most confident point per voxel
        kept = order[voxel_thin(points[order], voxel)]
        if len(kept) > options.max_points:
            kept = np.sort(np.random.default_rng(0).choice(kept, options.max_points, replace=False))
        points, colors, confidence, view_idx = points[kept], colors[kept], confidence[kept], view_idx[kept]
    stage["fusion"] = time.perf_counter() - started
    progress(1.0, f"fused {len(points):,} points from {len(targets)} depth maps")
    return MvsResult(depths=filtered, scores=scores, consistent=counts, intrinsics=ks, points=points,
                     colors=colors.astype(np.uint8), confidence=confidence.astype(np.float32),
                     source_view=view_idx.astype(np.int32), sources=sources, stage_seconds=stage)


def upsample_depths(depths: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[N,h,w] -> [N,H,W]`` nearest-neighbour (keeps 0 = invalid meaningful)."""
    h, w = size
    return np.stack([cv2.resize(d, (w, h), interpolation=cv2.INTER_NEAREST) for d in depths]).astype(np.float32)
