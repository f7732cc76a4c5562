"""Rendering Shap-E's implicit function: pan cameras, NeRF (coarse + fine) and STF (the mesh).

Frame: Shap-E's object frame, the box [-1, 1]^3, z up. Cameras are pinhole cameras given by
an origin and three unit axes (x right, y down in the image, z forward: OpenCV-like), with a
field of view ``fov`` both ways; pixel (row r, column c) of an S x S image looks along
``normalize(z + x f_c + y f_r)``, ``f = (index / (S - 1) · 2 - 1) · tan(fov / 2)`` (the corner
pixels lie on the field-of-view border). Rays are ordered view-major then row-major.

NeRF: rays are clipped to the box; 16/64 stratified coarse samples jittered by uniform draws,
importance-sampled fine samples, and a final pass over all samples merged and sorted with the
fine heads; void background. Every uniform draw comes from a :class:`UniformSource` so a
render can be replayed from recorded draws.

STF: the mesh is ray-cast (nearest hit per pixel), coloured by the barycentric mix of its
linear vertex colours times a fixed diffuse light, converted back to sRGB. As in the
reference's ray caster, a ray "hits" a triangle when both barycentric coordinates u and v lie
in [0, 1] (u + v <= 1 is not required: the parallelogram spanned by the triangle's two edges
counts), so silhouettes are slightly wider and colours there are extrapolated (they may
leave [0, 1]); we keep that behaviour for conformance with the authors' renders.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from .decoder import ShapEDecoder

LIGHT_DIRECTION = (0.09387503, -0.63953443, -0.7630093)  # the reference's STF light (unit)
PAN_VIEWS = 20


@dataclass(frozen=True, eq=False)
class Cameras:
    """V pinhole cameras in Shap-E's frame: ``origin``, ``x``, ``y``, ``z`` ``float32 [V, 3]``
    (unit axes; x right, y down in the image, z forward), square images of ``size`` pixels,
    field of view ``fov`` radians both ways."""

    origin: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    z: torch.Tensor
    size: int
    fov: float = 0.7

    def rays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(origins, unit directions) ``[V·S·S, 3]``, view-major then row-major."""
        s = self.size
        f = (torch.arange(s, dtype=torch.float32) / (s - 1) * 2 - 1) * math.tan(self.fov / 2)
        fr, fc = torch.meshgrid(f, f, indexing="ij")                           # [S, S]
        dirs = (self.z[:, None, None] + self.x[:, None, None] * fc[None, ..., None]
                + self.y[:, None, None] * fr[None, ..., None])                 # [V, S, S, 3]
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        origins = self.origin[:, None, None].expand_as(dirs)
        return origins.reshape(-1, 3), dirs.reshape(-1, 3)


def pan_cameras(size: int, views: Iterable[int] | None = None, fov: float = 0.7,
                distance: float = 4.0) -> Cameras:
    """The authors' turntable (``create_pan_cameras``): 20 views at theta = linspace(0, 2 pi, 20),
    z = normalize(sin theta, cos theta, -0.5), origin = -distance z, x = (cos theta, -sin theta, 0),
    y = z x x. ``views``: indices of the 20 to keep (default all)."""
    index = list(range(PAN_VIEWS)) if views is None else [int(v) for v in views]
    theta = np.linspace(0, 2 * np.pi, PAN_VIEWS)[index]
    z = np.stack([np.sin(theta), np.cos(theta), np.full_like(theta, -0.5)], axis=-1)
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    x = np.stack([np.cos(theta), -np.sin(theta), np.zeros_like(theta)], axis=-1)
    y = np.cross(z, x)
    y = y / np.linalg.norm(y, axis=-1, keepdims=True)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).float()  # noqa: E731
    return Cameras(as_t(-distance * z), as_t(x), as_t(y), as_t(z), int(size), fov)


class UniformSource:
    """Uniform [0, 1) draws, replayed from given tensors or drawn from a seeded CPU generator."""

    def __init__(self, seed: int = 0, replay: Iterable[torch.Tensor] | None = None) -> None:
        self._replay = list(replay) if replay is not None else None
        self._generator = torch.Generator().manual_seed(int(seed))
        self.draws = 0

    def rand(self, shape: tuple, device: torch.device | str = "cpu") -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        if self._replay is not None:
            if self.draws >= len(self._replay):
                raise RuntimeError(f"uniform replay exhausted after {self.draws} draws")
            value = self._replay[self.draws]
            if tuple(value.shape) != shape:
                raise RuntimeError(f"uniform replay draw {self.draws}: expected {list(shape)}, "
                                   f"got {list(value.shape)}")
        else:
            value = torch.rand(shape, generator=self._generator)
        self.draws += 1
        return value.to(device=device, dtype=torch.float32)


def box_limits(origins: torch.Tensor, dirs: torch.Tensor, bbox_min, bbox_max,
               min_gap: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ray/box entry and exit: (t0, t1 ``[R, 1]``, intersected ``bool [R, 1]``).

    Per axis (b - o) / d' with d' = d -/+ 1e-6 (away from zero); t0 = the largest per-axis
    entry, clamped at 0; t1 = the smallest exit; a ray intersects when t0 + 1e-3 < t1; a
    missing ray gets t0 = 0, t1 = 1.
    """
    lo = torch.tensor(bbox_min, dtype=origins.dtype, device=origins.device)
    hi = torch.tensor(bbox_max, dtype=origins.dtype, device=origins.device)
    d = torch.where(dirs < 0, dirs - 1e-6, dirs + 1e-6)
    ts = torch.stack([(lo - origins) / d, (hi - origins) / d], dim=-2)          # [R, 2, 3]
    t0 = ts.min(dim=-2).values.max(dim=-1, keepdim=True).values.clamp(min=0.0)
    t1 = ts.max(dim=-2).values.min(dim=-1, keepdim=True).values
    hit = t0 + min_gap < t1
    return torch.where(hit, t0, torch.zeros_like(t0)), torch.where(hit, t1, torch.ones_like(t1)), hit


def _bins(ts: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample bins of sorted ``ts [R, N]``: lower/upper ``[R, N]`` (midpoints; t0, t1 at the ends)."""
    mids = (ts[:, 1:] + ts[:, :-1]) / 2
    return torch.cat([t0, mids], dim=-1), torch.cat([mids, t1], dim=-1)


@dataclass(frozen=True, eq=False)
class Integral:
    """Volume integral along R rays: ``channels [R, 3]`` (no background), ``distance``,
    ``transmittance [R, 1]``, ``weights [R, N]``."""

    channels: torch.Tensor
    distance: torch.Tensor
    transmittance: torch.Tensor
    weights: torch.Tensor


def integrate(ts: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, density: torch.Tensor,
              channels: torch.Tensor) -> Integral:
    """ts/lower/upper ``[R, N]``, density ``[R, N]``, channels ``[R, N, 3]`` -> :class:`Integral`.

    w_k = (1 - exp(-sigma_k D_k)) exp(-sum_{j<k} sigma_j D_j), D_k = upper - lower."""
    tau = density * (upper - lower)
    cum = torch.cumsum(tau, dim=-1)
    before = torch.cat([torch.zeros_like(cum[:, :1]), cum[:, :-1]], dim=-1)
    weights = (1 - torch.exp(-tau)) * torch.exp(-before)
    return Integral((weights[..., None] * channels).sum(dim=1), (weights * ts).sum(-1, keepdim=True),
                    torch.exp(-cum[:, -1:]), weights)


@dataclass(frozen=True, eq=False)
class NeRFRender:
    """A NeRF render of V views of S x S pixels (float32).

    Attributes:
        channels: ``[V, S, S, 3]`` colour on the 0..255 scale (background included).
        transmittance / distances / depth / t0 / t1: ``[V, S, S, 1]`` (depth = distance along the
            camera's z axis, box units); intersected ``bool [V, S, S, 1]``.
        raw_density / raw_signed_distance: ``[V, S, S, Nc + Nf]`` fine-pass density and tanh SDF
            at the sorted samples.
        ts_coarse / ts_fine: ``[R, Nc]`` / ``[R, Nf]`` sample distances.
    """

    channels: torch.Tensor
    transmittance: torch.Tensor
    distances: torch.Tensor
    depth: torch.Tensor
    t0: torch.Tensor
    t1: torch.Tensor
    intersected: torch.Tensor
    raw_density: torch.Tensor
    raw_signed_distance: torch.Tensor
    ts_coarse: torch.Tensor
    ts_fine: torch.Tensor

    @property
    def image_uint8(self) -> np.ndarray:
        """``uint8 [V, S, S, 3]``: channels clamped to [0, 255] and truncated."""
        return self.channels.clamp(0, 255).to(torch.uint8).cpu().numpy()


def _field_rays(decoder: ShapEDecoder, meta, origins, dirs, ts):
    points = origins[:, None] + ts[..., None] * dirs[:, None]                    # [R, N, 3]
    r, n = ts.shape
    out = decoder.field(points.reshape(1, r * n, 3), meta)
    return out, (r, n)


@torch.no_grad()
def render_nerf(decoder: ShapEDecoder, meta: list[torch.Tensor], cameras: Cameras,
                draws: UniformSource, ray_batch: int | None = None) -> NeRFRender:
    """NeRF render of one latent's implicit function (``meta``: weights ``[1, out_i, in_i]``).

    Draws, per ray batch: coarse jitter ``[1, R, Nc]``, the importance-sampling uniforms
    ``[R, Nf]``, the positions in the chosen bins ``[1, R, Nf, 1]`` (the reference's order).
    ``ray_batch``: rays per batch (default all rays in one batch, as the fixture).
    """
    origins, dirs = cameras.rays()
    device = meta[0].device
    origins, dirs = origins.to(device), dirs.to(device)
    total = origins.shape[0]
    ray_batch = ray_batch or total
    parts = [_render_batch(decoder, meta, origins[s:s + ray_batch], dirs[s:s + ray_batch], draws)
             for s in range(0, total, ray_batch)]
    merged = {k: torch.cat([p[k] for p in parts], dim=0) for k in parts[0]}
    v, s = cameras.origin.shape[0], cameras.size
    z = cameras.z.to(device)[:, None, None].expand(v, s, s, 3).reshape(-1, 3)
    depth = merged["distances"] * (dirs * z).sum(-1, keepdim=True)
    shape = lambda x: x.reshape(v, s, s, -1)  # noqa: E731
    return NeRFRender(
        channels=shape(merged["channels"]), transmittance=shape(merged["transmittance"]),
        distances=shape(merged["distances"]), depth=shape(depth), t0=shape(merged["t0"]),
        t1=shape(merged["t1"]), intersected=shape(merged["intersected"]),
        raw_density=shape(merged["raw_density"]), raw_signed_distance=shape(merged["raw_sdf"]),
        ts_coarse=merged["ts_coarse"], ts_fine=merged["ts_fine"])


def _render_batch(decoder, meta, origins, dirs, draws: UniformSource) -> dict:
    config = decoder.config
    r, nc, nf = origins.shape[0], config.n_coarse_samples, config.n_fine_samples
    background = decoder.renderer.void.background.to(origins.device)
    t0, t1, hit = box_limits(origins, dirs, config.bbox_min, config.bbox_max)
    # coarse: stratified, jittered within the bins of the evenly spaced samples
    even = t0 + (t1 - t0) * torch.linspace(0, 1, nc, device=origins.device)[None]
    lower, upper = _bins(even, t0, t1)
    ts_coarse = lower + (upper - lower) * draws.rand((1, r, nc), origins.device)[0]
    out, _ = _field_rays(decoder, meta, origins, dirs, ts_coarse)
    coarse = integrate(ts_coarse, *_bins(ts_coarse, t0, t1),
                       out.density_coarse.view(r, nc), out.channels_coarse.view(r, nc, 3))
    # fine: importance sampling of the coarse weights
    lower, upper = _bins(ts_coarse, t0, t1)
    pmf = coarse.weights + 1e-5
    pmf = pmf / pmf.sum(dim=-1, keepdim=True)
    cdf = torch.cumsum(pmf, dim=-1)
    index = torch.searchsorted(cdf, draws.rand((r, nf), origins.device)).clamp(0, nc - 1)
    u = draws.rand((1, r, nf, 1), origins.device)[0, ..., 0]
    lo, hi = torch.gather(lower, 1, index), torch.gather(upper, 1, index)
    ts_fine = (lo + (hi - lo) * u).sort(dim=-1).values
    # final pass over all samples with the fine heads
    ts_all = torch.cat([ts_coarse, ts_fine], dim=-1).sort(dim=-1).values
    n = nc + nf
    out, _ = _field_rays(decoder, meta, origins, dirs, ts_all)
    density = out.density_fine.view(r, n)
    fine = integrate(ts_all, *_bins(ts_all, t0, t1), density, out.channels_fine.view(r, n, 3))
    channels = torch.where(hit, fine.channels, torch.zeros_like(fine.channels))
    transmittance = torch.where(hit, fine.transmittance, torch.ones_like(fine.transmittance))
    distances = torch.where(hit, fine.distance, torch.zeros_like(fine.distance))
    channels = (channels + transmittance * background) * 255.0
    return {"channels": channels, "transmittance": transmittance, "distances": distances,
            "t0": t0, "t1": t1, "intersected": hit, "raw_density": density,
            "raw_sdf": out.signed_distance.view(r, n), "ts_coarse": ts_coarse, "ts_fine": ts_fine}


def linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    """Linear -> sRGB (12.92 c at or below 0.0031308, so negative values stay negative, else
    1.055 c^(1/2.4) - 0.055)."""
    return torch.where(c <= 0.0031308, 12.92 * c, 1.055 * c.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


def srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    """sRGB [0, 1] -> linear (c / 12.92 at or below 0.04045, else ((c + 0.055) / 1.055)^2.4)."""
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)


@dataclass(frozen=True, eq=False)
class STFRender:
    """A ray-cast render of the mesh: ``channels [V, S, S, 3]`` (0..255, black where the mesh
    is missed), ``transmittance [V, S, S, 1]`` (1 - coverage)."""

    channels: torch.Tensor
    transmittance: torch.Tensor

    @property
    def image_uint8(self) -> np.ndarray:
        return self.channels.clamp(0, 255).to(torch.uint8).cpu().numpy()


def _candidate_pairs(corners: torch.Tensor, cameras: Cameras, view: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(face index, pixel index within the view) pairs whose pixel lies in the projected bounding
    box of the face's hit region (``corners [F, 4, 3]``: the parallelogram's corners). Faces
    reaching behind the camera are skipped (Shap-E's cameras sit outside the object box)."""
    s = cameras.size
    rel = corners - cameras.origin[view]
    depth = rel @ cameras.z[view]
    scale = math.tan(cameras.fov / 2) * depth.clamp(min=1e-6)
    u = (rel @ cameras.x[view]) / scale                     # [F, 4], -1..1 across the image
    v = (rel @ cameras.y[view]) / scale
    col = (u + 1) / 2 * (s - 1)
    row = (v + 1) / 2 * (s - 1)
    in_front = (depth > 1e-6).all(dim=1)
    c0 = col.min(1).values.floor().clamp(0, s - 1).long()
    c1 = col.max(1).values.ceil().clamp(0, s - 1).long()
    r0 = row.min(1).values.floor().clamp(0, s - 1).long()
    r1 = row.max(1).values.ceil().clamp(0, s - 1).long()
    visible = in_front & (col.max(1).values >= 0) & (col.min(1).values <= s - 1) \
        & (row.max(1).values >= 0) & (row.min(1).values <= s - 1)
    width = torch.where(visible, c1 - c0 + 1, torch.zeros_like(c0))
    height = torch.where(visible, r1 - r0 + 1, torch.zeros_like(r0))
    counts = width * height
    faces = torch.repeat_interleave(torch.arange(len(counts)), counts)
    offsets = torch.cumsum(counts, 0) - counts
    local = torch.arange(int(counts.sum())) - offsets[faces]
    pixels = (r0[faces] + local // width[faces]) * s + c0[faces] + local % width[faces]
    return faces, pixels


@torch.no_grad()
def render_stf(vertices: torch.Tensor, faces: torch.Tensor, linear_colors: torch.Tensor,
               cameras: Cameras, pair_chunk: int = 2 ** 20) -> STFRender:
    """Ray-cast a mesh: vertices ``float32 [V, 3]``, faces ``int64 [F, 3]``, linear vertex colours
    ``[V, 3]`` in [0, 1]. Nearest hit in front of the camera (Moller-Trumbore, with the
    reference's parallelogram test, see the module docstring); colour = barycentric mix of the
    vertex colours x (0.3 + 0.7 |n . l|), n the face normal, l the fixed light; channels =
    sRGB(colour) x coverage x 255. Only the pixels inside each face's projected bounding box
    are tested (the same hits as testing every ray against every face)."""
    origins, dirs = cameras.rays()
    v, s = cameras.origin.shape[0], cameras.size
    rays = origins.shape[0]
    channels = torch.zeros(rays, 3)
    coverage = torch.zeros(rays, 1)
    if len(faces):
        vertices = vertices.float().cpu()
        faces = faces.cpu()
        tri = vertices[faces]                                                   # [F, 3, 3]
        a, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        normal = torch.cross(e1, e2, dim=-1)
        normal = normal / normal.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        shade = 0.3 + 0.7 * (normal @ torch.tensor(LIGHT_DIRECTION)).abs()    # [F]
        face_colors = linear_colors.float().cpu()[faces]                       # [F, 3, 3]
        corners = torch.stack([tri[:, 0], tri[:, 1], tri[:, 2], tri[:, 1] + e2], dim=1)
        for view in range(v):
            face_ids, pixel_ids = _candidate_pairs(corners, cameras, view)
            best_t = torch.full((s * s,), math.inf)
            best_face = torch.zeros(s * s, dtype=torch.long)
            best_uv = torch.zeros(s * s, 2)
            for start in range(0, len(face_ids), pair_chunk):
                f = face_ids[start:start + pair_chunk]
                ray = view * s * s + pixel_ids[start:start + pair_chunk]
                o, d = origins[ray], dirs[ray]
                p = torch.cross(d, e2[f], dim=-1)
                det = (e1[f] * p).sum(-1)
                ok = (det.abs() > 1e-8) & ((d * normal[f]).sum(-1).abs() > 1e-8)
                inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
                tvec = o - a[f]
                bu = (tvec * p).sum(-1) * inv
                q = torch.cross(tvec, e1[f], dim=-1)
                bv = (d * q).sum(-1) * inv
                t = (e2[f] * q).sum(-1) * inv
                valid = ok & (bu >= 0) & (bu <= 1) & (bv >= 0) & (bv <= 1) & (t > 0)
                if not valid.any():
                    continue
                f, pix = f[valid], pixel_ids[start:start + pair_chunk][valid]
                t, bu, bv = t[valid], bu[valid], bv[valid]
                # per pixel the nearest hit, ties to the lower face index (a min over faces):
                # sort by (pixel, t, face) and keep each pixel's first pair
                for key in range(3):
                    order = torch.argsort((f, t, pix)[key], stable=True)
                    f, pix, t, bu, bv = f[order], pix[order], t[order], bu[order], bv[order]
                first = torch.ones(len(pix), dtype=torch.bool)
                first[1:] = pix[1:] != pix[:-1]
                f, pix, t, bu, bv = f[first], pix[first], t[first], bu[first], bv[first]
                better = (t < best_t[pix]) | ((t == best_t[pix]) & (f < best_face[pix]))
                pix, f, t = pix[better], f[better], t[better]
                best_t[pix], best_face[pix] = t, f
                best_uv[pix] = torch.stack([bu[better], bv[better]], dim=-1)
            hit = torch.isfinite(best_t)
            if not hit.any():
                continue
            pix = torch.nonzero(hit)[:, 0]
            fsel = best_face[pix]
            w1, w2 = best_uv[pix, 0], best_uv[pix, 1]
            bary = torch.stack([1 - w1 - w2, w1, w2], dim=-1)
            color = (bary[..., None] * face_colors[fsel]).sum(1) * shade[fsel][:, None]
            channels[view * s * s + pix] = linear_to_srgb(color)
            coverage[view * s * s + pix] = 1.0
    channels = channels * coverage * 255.0
    return STFRender(channels.reshape(v, s, s, 3), (1 - coverage).reshape(v, s, s, 1))
