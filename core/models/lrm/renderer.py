"""Volume rendering of a triplane NeRF: rays, box limits, stratified + importance sampling, compositing.

Conventions (OpenLRM v1.1 reference behaviour, see tests/fixtures/README section "LRM"):

- Cameras: ``[B,25]`` = camera-to-world 4×4 row-major (OpenGL axes: x right, y up, looking
  along -z) then the normalised 3×3 intrinsics. Pixel (row i, column j) of an R×R image casts
  the unit ray ``R_c2w·(x, -y, -1)``, ``x = ((j+0.5)/R - cx)/fx``, ``y = ((i+0.5)/R - cy)/fy``.
  Rays are ordered view-major, then pixel row-major.
- Near/far ("auto"): intersection with the box [-1,1]³. Rays that miss it take
  ``t_near = min`` over hitting rays of t_near and ``t_far = max`` over hitting rays of
  **t_near** (the reference's quirk), over all rays of one render call.
- Coarse depths ``t_k = t_near + k·Δ + u_k·Δ``, ``Δ = (t_far - t_near)/(Dc - 1)``, u = jitter.
- Samples outside [-1,1]³ get rgb 0 and raw density ``-FLT_MAX/8`` (so any interval touching
  them has zero activated density).
- Compositing over depth-sorted samples: per interval the midpoint depth and colour, raw density
  averaged then activated ``softplus(. - 1)``, ``α = 1 - exp(-σ·Δt)``, transmittance = exclusive
  cumulative product of ``(1 - α + 1e-10)``, ``w = α·T``; ``rgb = Σw·c + bg·(1 - Σw)``;
  ``depth = Σw·t/Σw`` (NaN -> inf) clamped to [min, max] of all sample depths of the call.
- Importance: coarse weights max-pooled (k2, s1, p1), average-pooled (k2, s1), + 0.01; their
  inner values weight the bins between coarse midpoints; inverse-CDF sampling at u
  (searchsorted right). The final pass composites coarse + importance samples, merged and sorted.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .outputs import RayRenderOutput, RenderOutput
from .synthesizer import TriplaneSynthesizer, activate_density

OUT_OF_BOX_DENSITY = -torch.finfo(torch.float32).max / 8


@dataclass
class RenderSettings:
    """Renderer settings (``rendering_kwargs`` of the reference).

    Attributes:
        depth_resolution: coarse samples per ray (48 for the published models, large 64).
        depth_resolution_importance: importance samples per ray.
        box_warp: side of the box the planes cover (2).
        bbox: sampler box bounds (-1, 1).
    """

    depth_resolution: int = 48
    depth_resolution_importance: int = 48
    box_warp: float = 2.0
    bbox: tuple[float, float] = (-1.0, 1.0)


def camera_rays(cameras: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins and unit directions of full ``resolution²`` images.

    Args:
        cameras: ``[B,25]`` c2w (OpenGL axes) + normalised intrinsics, row-major.
        resolution: image side R.

    Returns:
        origins ``[B,R²,3]``, directions ``[B,R²,3]`` (row-major pixels).
    """
    b = cameras.shape[0]
    c2w = cameras[:, :16].reshape(b, 4, 4)
    k = cameras[:, 16:25].reshape(b, 3, 3)
    fx, fy, cx, cy = k[:, 0, 0, None], k[:, 1, 1, None], k[:, 0, 2, None], k[:, 1, 2, None]
    idx = torch.arange(resolution, dtype=torch.float32, device=cameras.device)
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")
    u = cols.reshape(1, -1) * (1.0 / resolution) + 0.5 / resolution
    v = rows.reshape(1, -1) * (1.0 / resolution) + 0.5 / resolution
    x = (u - cx) / fx
    y = (v - cy) / fy
    # camera-frame point at unit distance in OpenGL axes, taken to the world, minus the centre
    local = torch.stack([x, -y, -torch.ones_like(x), torch.ones_like(x)], dim=-1)  # [B,R²,4]
    world = (local @ c2w.transpose(1, 2))[..., :3]
    centre = c2w[:, None, :3, 3]
    dirs = F.normalize(world - centre, dim=-1)
    origins = centre.expand_as(dirs).contiguous()
    return origins, dirs


def ray_box_limits(origins: torch.Tensor, dirs: torch.Tensor, half: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab intersection of rays with the cube [-half, half]³.

    Returns t_near ``[...]``, t_far ``[...]`` and ``hit [...]`` (t_far > t_near).
    """
    inv = 1.0 / dirs
    t0 = (-half - origins) * inv
    t1 = (half - origins) * inv
    near = torch.minimum(t0, t1).amax(dim=-1)
    far = torch.maximum(t0, t1).amin(dim=-1)
    return near, far, far > near


def auto_near_far(origins: torch.Tensor, dirs: torch.Tensor, half: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Box near/far per ray with the reference's treatment of rays that miss (module docstring).

    Shapes: ``[B,R,3]`` -> ``[B,R]``, ``[B,R]``.
    """
    near, far, hit = ray_box_limits(origins, dirs, half)
    if hit.any():
        lo, hi = near[hit].min(), near[hit].max()
    else:  # the reference's marks for a miss (-1, -2): samples behind the camera, all empty
        lo, hi = torch.tensor(-1.0), torch.tensor(-2.0)
    near = torch.where(hit, near, lo.to(near))
    far = torch.where(hit, far, hi.to(far))
    return near, far


def stratified_depths(near: torch.Tensor, far: torch.Tensor, n: int, jitter: torch.Tensor) -> torch.Tensor:
    """Coarse depths ``[B,R,n,1]`` from near/far ``[B,R]`` and jitter ``[B,R,n,1]`` in [0,1)."""
    steps = torch.arange(n, dtype=torch.float32, device=near.device) / (n - 1)
    near, far = near[..., None, None], far[..., None, None]
    depths = near + steps.reshape(1, 1, n, 1) * (far - near)
    return depths + jitter * ((far - near) / (n - 1))


def composite(colors: torch.Tensor, raw_densities: torch.Tensor, depths: torch.Tensor,
              bg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Alpha-composite sorted samples (module docstring).

    Args:
        colors ``[B,R,S,3]``, raw_densities ``[B,R,S,1]``, depths ``[B,R,S,1]``, bg ``[B,1,1]``.

    Returns:
        rgb ``[B,R,3]``, unclamped depth ``[B,R,1]`` (inf where Σw = 0), weights ``[B,R,S-1,1]``.
    """
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    density_mid = activate_density((raw_densities[:, :, :-1] + raw_densities[:, :, 1:]) / 2)
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    alpha = 1 - torch.exp(-density_mid * deltas)
    shifted = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], dim=-2)
    weights = alpha * torch.cumprod(shifted, dim=-2)[:, :, :-1]
    total = weights.sum(dim=2)
    rgb = (weights * colors_mid).sum(dim=-2) + bg * (1 - total)
    depth = torch.nan_to_num((weights * depths_mid).sum(dim=-2) / total, nan=float("inf"))
    return rgb, depth, weights


def importance_depths(coarse: torch.Tensor, weights: torch.Tensor, u: torch.Tensor,
                      eps: float = 1e-5) -> torch.Tensor:
    """Inverse-CDF samples ``[B,R,Di,1]`` from coarse depths ``[B,R,Dc,1]``, weights ``[B,R,Dc-1,1]``.

    Args:
        u: ``[B·R,Di]`` uniform draws in [0,1).
    """
    b, r, dc, _ = coarse.shape
    z = coarse.reshape(b * r, dc)
    w = weights.reshape(b * r, 1, -1).float()
    w = F.avg_pool1d(F.max_pool1d(w, 2, 1, padding=1), 2, 1).reshape(b * r, -1) + 0.01
    bins = 0.5 * (z[:, :-1] + z[:, 1:])
    w = w[:, 1:-1] + eps
    nb = w.shape[1]
    pdf = w / w.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=-1)], dim=-1)
    u = u.contiguous()
    inds = torch.searchsorted(cdf, u, right=True)
    below = (inds - 1).clamp_min(0)
    above = inds.clamp_max(nb)
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bin_lo, bin_hi = bins.gather(1, below), bins.gather(1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    samples = bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)
    return samples.reshape(b, r, -1, 1)


def _evaluate(synth: TriplaneSynthesizer, planes: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor,
              depths: torch.Tensor, settings: RenderSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Colours ``[B,R,S,3]`` and raw densities ``[B,R,S,1]`` at depths ``[B,R,S,1]`` along the rays."""
    b, r, s, _ = depths.shape
    points = (origins.unsqueeze(-2) + depths * dirs.unsqueeze(-2)).reshape(b, r * s, 3)
    inside = ((points >= settings.bbox[0]) & (points <= settings.bbox[1])).all(dim=-1, keepdim=True)
    raw, rgb = synth.query_raw(planes, points)
    raw = torch.where(inside, raw, torch.full_like(raw, OUT_OF_BOX_DENSITY))
    rgb = torch.where(inside, rgb, torch.zeros_like(rgb))
    return rgb.reshape(b, r, s, 3), raw.reshape(b, r, s, 1)


@torch.no_grad()
def render_rays(synth: TriplaneSynthesizer, planes: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor,
                bg: torch.Tensor, settings: RenderSettings, coarse_jitter: torch.Tensor | None = None,
                importance_u: torch.Tensor | None = None, generator: torch.Generator | None = None,
                chunk_rays: int = 8192, return_samples: bool = False) -> RayRenderOutput:
    """Render rays of one call (near/far quirk and depth clamp are taken over the whole call).

    Args:
        planes: ``[B,3,C,H,W]`` (one triplane per ray batch).
        origins, dirs: ``[B,R,3]``.
        bg: ``[B]`` background intensity (1 = white).
        coarse_jitter: ``[B,R,Dc,1]`` U[0,1) draws; drawn from ``generator`` when None.
        importance_u: ``[B·R,Di]`` U[0,1) draws (rays view-major); drawn when None.
        chunk_rays: rays per decoder pass (memory bound: chunk·samples·3C floats).
        return_samples: also return ``depths_coarse`` and ``depths_fine`` ``[B,R,D,1]``.

    Returns:
        :class:`RayRenderOutput`: ``rgb [B,R,3]``, ``depth [B,R,1]``, ``weight [B,R,1]``
        (accumulated opacity), the sample depths with ``return_samples``.
    """
    b, r, _ = origins.shape
    dc, di = settings.depth_resolution, settings.depth_resolution_importance
    device = origins.device
    if coarse_jitter is None:
        coarse_jitter = torch.rand((b, r, dc, 1), generator=generator, device="cpu").to(device)
    if importance_u is None:
        importance_u = torch.rand((b * r, di), generator=generator, device="cpu").to(device)
    if coarse_jitter.shape != (b, r, dc, 1):
        raise ValueError(f"coarse_jitter must be {[b, r, dc, 1]}, got {list(coarse_jitter.shape)}")
    if importance_u.shape != (b * r, di):
        raise ValueError(f"importance_u must be {[b * r, di]}, got {list(importance_u.shape)}")
    importance_u = importance_u.reshape(b, r, di)
    near, far = auto_near_far(origins, dirs, half=settings.box_warp / 2)
    coarse_all = stratified_depths(near, far, dc, coarse_jitter)
    bg = bg.reshape(b, 1, 1).to(origins.dtype)
    rgbs, depths, totals, fines = [], [], [], []
    lo = coarse_all.amin()
    hi = coarse_all.amax()
    for start in range(0, r, chunk_rays):
        sl = slice(start, start + chunk_rays)
        o, d, coarse = origins[:, sl], dirs[:, sl], coarse_all[:, sl]
        n = o.shape[1]
        colors_c, raw_c = _evaluate(synth, planes, o, d, coarse, settings)
        if di > 0:
            _, _, weights_c = composite(colors_c, raw_c, coarse, bg)
            fine = importance_depths(coarse, weights_c, importance_u[:, sl].reshape(b * n, di))
            colors_f, raw_f = _evaluate(synth, planes, o, d, fine, settings)
            all_depths = torch.cat([coarse, fine], dim=-2)
            order = torch.sort(all_depths, dim=-2).indices
            all_depths = all_depths.gather(-2, order)
            colors = torch.cat([colors_c, colors_f], dim=-2).gather(-2, order.expand(-1, -1, -1, 3))
            raw = torch.cat([raw_c, raw_f], dim=-2).gather(-2, order)
            lo, hi = torch.minimum(lo, fine.amin()), torch.maximum(hi, fine.amax())
            fines.append(fine)
        else:
            all_depths, colors, raw = coarse, colors_c, raw_c
        rgb, depth, weights = composite(colors, raw, all_depths, bg)
        rgbs.append(rgb)
        depths.append(depth)
        totals.append(weights.sum(dim=2))
    depths_coarse = depths_fine = None
    if return_samples:
        depths_coarse = coarse_all
        depths_fine = torch.cat(fines, dim=1) if fines else coarse_all[..., :0, :]
    return RayRenderOutput(rgb=torch.cat(rgbs, dim=1),
                           depth=torch.clamp(torch.cat(depths, dim=1), lo, hi),
                           weight=torch.cat(totals, dim=1),
                           depths_coarse=depths_coarse, depths_fine=depths_fine)


def render_views(synth: TriplaneSynthesizer, planes: torch.Tensor, cameras: torch.Tensor, resolution: int,
                 settings: RenderSettings, bg_color: float | torch.Tensor = 1.0, **kwargs) -> RenderOutput:
    """Render full images of M views of each of N triplanes in one call.

    Args:
        planes: ``[N,3,C,H,W]``.
        cameras: ``[N,M,25]`` (module docstring).
        resolution: image side R.
        bg_color: background intensity, scalar or ``[N,M,1]``.
        **kwargs: passed to :func:`render_rays` (``coarse_jitter [N·M,R²,Dc,1]``,
            ``importance_u [N·M·R²,Di]``, ``generator``, ``chunk_rays``, ``return_samples``).

    Returns:
        :class:`RenderOutput`: ``images_rgb [N,M,3,R,R]``, ``images_depth [N,M,1,R,R]``,
        ``images_weight [N,M,1,R,R]`` (plus ``depths_coarse``/``depths_fine``
        ``[N·M,R²,D,1]`` with ``return_samples``).
    """
    n, m = cameras.shape[:2]
    origins, dirs = camera_rays(cameras.reshape(n * m, 25), resolution)
    bg = torch.as_tensor(bg_color, dtype=torch.float32, device=planes.device)
    bg = bg.reshape(-1).expand(n * m) if bg.numel() in (1, n * m) else bg.reshape(n * m)
    out = render_rays(synth, planes.repeat_interleave(m, dim=0), origins, dirs, bg, settings, **kwargs)

    def image(x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 1).reshape(n, m, x.shape[-1], resolution, resolution)

    return RenderOutput(images_rgb=image(out.rgb), images_depth=image(out.depth),
                        images_weight=image(out.weight), depths_coarse=out.depths_coarse,
                        depths_fine=out.depths_fine)
