"""High-level LRM inference: picture -> triplanes -> orbit renders, as the authors' inferrer does it."""
from __future__ import annotations

import numpy as np
import torch

from .cameras import orbit_cameras, source_camera
from .modeling_lrm import LRM
from .preprocess import preprocess_image


@torch.no_grad()
def infer_planes(model: LRM, image: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """``uint8 HxWx{3,4}`` picture -> planes ``[1,3,C,2r,2r]`` with the canonical source camera."""
    x = preprocess_image(image, model.config.source_size).to(device)
    camera = source_camera(model.config.source_cam_dist).to(device)
    return model.forward_planes(x, camera)


@torch.no_grad()
def render_orbit(model: LRM, planes: torch.Tensor, n_views: int, resolution: int,
                 views_per_call: int = 2, seed: int = 0, chunk_rays: int = 8192) -> dict[str, np.ndarray]:
    """Render the inference orbit (radius 2, height 0.8, azimuth from -π/2) of one triplane.

    Args:
        planes: ``[1,3,C,H,W]``.
        n_views: views on the orbit (the first and last coincide, as in the reference).
        resolution: image side.
        views_per_call: views rendered per renderer call (the reference's ``frame_size`` 2; the
            near/far quirk for rays missing the box is taken per call).
        seed: seeds the renderer's jitter and importance draws.

    Returns:
        ``frames uint8 [M,R,R,3]`` (white background), ``depth float32 [M,R,R]`` (distance
        along the ray), ``opacity float32 [M,R,R]``, ``cameras float32 [M,25]``.
    """
    cameras = orbit_cameras(n_views).to(planes.device)
    generator = torch.Generator().manual_seed(seed)
    rgb, depth, weight = [], [], []
    for start in range(0, n_views, views_per_call):
        out = model.render(planes, cameras[None, start:start + views_per_call], resolution, 1.0,
                           generator=generator, chunk_rays=chunk_rays)
        rgb.append(out.images_rgb[0])
        depth.append(out.images_depth[0, :, 0])
        weight.append(out.images_weight[0, :, 0])
    rgb = torch.cat(rgb).permute(0, 2, 3, 1).clamp(0, 1).cpu().numpy()
    return {"frames": np.round(rgb * 255).astype(np.uint8),
            "depth": torch.cat(depth).cpu().numpy().astype(np.float32),
            "opacity": torch.cat(weight).cpu().numpy().astype(np.float32),
            "cameras": cameras.cpu().numpy()}
