"""ReconBench method ``lrm``: OpenLRM v1.1, one picture -> triplane NeRF -> mesh + orbit renders.

Output frame: OpenLRM's own object-centred canonical frame (object inside [-1,1]³, up +z, the
input camera assumed at (0,-2,0) looking along +y with focal 0.75 of the square crop). It is not
the first view's camera frame. The Reconstruction's camera is that assumed source camera
(``cam_from_world`` OpenCV world->camera in LRM's frame, ``intrinsics`` in the scene's original
pixels through the crop): the model assumes it rather than predicts it; it lets the metrics
align through the input view before ICP. The orbit renders are the Reconstruction's
``renders`` (``uint8 [K,R,R,3]``).
"""
from __future__ import annotations

import base64
import io
import logging
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch

from core.data.scene import Reconstruction, Scene
from core.models import weights
from core.models.registry import Method
from core.options import DeviceOptions, option
from core.profiling import measure
from core.progress import Progress

from .cameras import source_cam_from_world_cv
from .checkpoints import CHECKPOINTS
from .config import preset, tiny_config
from .inference import infer_planes, render_orbit
from .mesh import extract_mesh, sample_surface
from .modeling_lrm import LRM
from .preprocess import crop_object

log = logging.getLogger(__name__)

VERSION = "1"
Weights = Literal["pretrained", "random-tiny"]
Variant = Literal["small", "base", "large"]
LEGACY_RENDERS_KEY = "renders_png_base64"  # runs stored before renders were an array


@dataclass
class LRMOptions(DeviceOptions):
    weights: Weights = option("pretrained", "pretrained: the published checkpoint of the variant; "
                                            "random-tiny: the fixture's tiny configuration with "
                                            "weights seeded by `seed` (seconds; meaningless output)")
    variant: Variant = option("base", "published size (openlrm-mix-*-1.1)")
    checkpoint_path: str = option("", "explicit model.safetensors path (else RECONBENCH_WEIGHTS / HF cache)",
                                  advanced=True)
    render_resolution: int = option(128, "side of the orbit renders (authors: 288 base)", min=16, max=512, step=16)
    grid_size: int = option(128, "marching-cubes grid per axis (authors: 384)", min=16, max=384, step=16)
    mesh_threshold: float = option(3.0, "iso-level on the density (authors: 3.0)", min=0.1, max=50.0, step=0.1)
    orbit_views: int = option(8, "number of orbit renders", min=1, max=160, step=1)
    num_points: int = option(20000, "points sampled on the mesh for the metrics", min=100, max=200000, step=100)
    border_ratio: float = option(0.2, "white border around the object crop (authors: 0.2)",
                                 min=0.0, max=0.6, step=0.05, advanced=True)
    seed: int = option(0, "seeds renderer jitter, surface sampling and random weights", min=0,
                       advanced=True)


def decode_renders(recon: Reconstruction) -> np.ndarray:
    """The images a run rendered, ``uint8 [K,H,W,3]``: ``recon.renders``, or for runs stored
    before renders were an array, the base64 PNGs in ``recon.extra["renders_png_base64"]``;
    ``[0,0,0,3]`` when the run has none."""
    if recon.renders is not None:
        return recon.renders
    from PIL import Image

    frames = [np.asarray(Image.open(io.BytesIO(base64.b64decode(s))).convert("RGB"))
              for s in (recon.extra or {}).get(LEGACY_RENDERS_KEY, [])]
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), dtype=np.uint8)


class LRMMethod(Method):
    """OpenLRM v1.1 on one view: mesh, surface points and orbit renders in LRM's canonical frame."""

    name = "lrm"
    label = "LRM (OpenLRM v1.1)"
    label_options = ("variant",)
    family = "generative"
    version = VERSION
    options_type = LRMOptions
    min_views = 1
    max_views = 1
    description = ("OpenLRM v1.1: a DINOv2 encoder and a camera-modulated transformer predict a "
                   "triplane NeRF from one picture; the mesh is extracted by marching cubes on the "
                   "density grid and points are sampled on it. Output in LRM's own object-centred "
                   "frame.")

    def checkpoints(self, options: LRMOptions) -> tuple:
        return () if options.weights == "random-tiny" else (CHECKPOINTS[options.variant],)

    def model_key(self, options: LRMOptions) -> tuple:
        """weights, variant and checkpoint path; ``seed`` too for random weights (it draws them)."""
        key = super().model_key(options)
        return key + (("seed", options.seed),) if options.weights == "random-tiny" else key

    def load(self, options: LRMOptions, device: str) -> LRM:
        """The model for these options, in eval mode on ``device`` (raises MissingWeights /
        BadCheckpoint for an absent or unfitting checkpoint)."""
        if options.weights == "random-tiny":
            model = LRM(tiny_config())
            model.init_weights(torch.Generator().manual_seed(options.seed))
            return model.to(device).eval()
        path = weights.resolve(CHECKPOINTS[options.variant], options.checkpoint_path or None)
        state = weights.load_state_dict(path)
        with torch.device("meta"):
            model = LRM(preset(options.variant))
        weights.check_state_dict(model, state)
        model.load_state_dict(state, strict=True, assign=True)
        return model.to(device).eval()

    def predict(self, model: LRM, scene: Scene, view_ids: list[int], options: LRMOptions,
                progress: Progress, device: str) -> Reconstruction:
        """Mesh, ``num_points`` surface points with colours and ``orbit_views`` renders of the
        object of ``view_ids[0]`` (see the module docstring for the frame)."""
        view = view_ids[0]
        image = scene.images[view]
        mask = None if scene.masks is None else scene.masks[view]
        square, crop = crop_object(image, mask, options.border_ratio)
        notes: list[str] = []
        if mask is None:
            notes.append("the scene has no object mask: the whole picture was used, background included")
        config = model.config
        stages: dict[str, float] = {}
        progress(0.1, "encoding the image and predicting triplanes")
        with measure() as m:
            planes = infer_planes(model, square, device)
        stages["triplanes"] = m.seconds
        progress(0.35, f"density grid {options.grid_size}³ and marching cubes")
        with measure() as m:
            sigma = model.query_grid(planes, options.grid_size).sigma
            level = float(options.mesh_threshold)
            mesh = extract_mesh(model, planes, options.grid_size, level, sigma=sigma)
            if mesh.is_empty:
                values = sigma.flatten().cpu().numpy()
                fallback = float(np.quantile(values, 0.7))
                notes.append(f"the density never crosses {level:g}; mesh extracted at its 70% quantile "
                             f"{fallback:.4g} instead")
                level = fallback
                mesh = extract_mesh(model, planes, options.grid_size, level, sigma=sigma)
        stages["mesh"] = m.seconds
        progress.check()
        progress(0.6, f"sampling {options.num_points} surface points")
        points, _ = sample_surface(mesh, options.num_points, seed=options.seed)
        if len(points):
            rgb = model.query_points(planes, torch.from_numpy(points).to(device)[None]).rgb[0]
            colors = (rgb.clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
        else:
            colors = np.zeros((0, 3), dtype=np.uint8)
            notes.append("empty mesh: no surface points")
        progress(0.7, f"rendering {options.orbit_views} orbit views")
        with measure() as m:
            renders = render_orbit(model, planes, options.orbit_views, options.render_resolution,
                                   seed=options.seed)
        stages["renders"] = m.seconds
        watertight = mesh.is_watertight
        notes.append("points and mesh are in LRM's own object-centred frame (box [-1,1]³, z up), "
                     "not the input camera's frame; align before comparing")
        notes.append("camera: LRM's canonical source camera (assumed by the model, not predicted): "
                     "distance 2, focal 0.75 of the square object crop")
        notes.append(f"mesh: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces, "
                     f"{'watertight' if watertight else 'not watertight'}")
        source_w2c = source_cam_from_world_cv(config.source_cam_dist)
        progress(1.0, "done")
        return Reconstruction(
            method=self.name, points=points, colors=colors,
            cam_from_world=source_w2c[None], intrinsics=crop.intrinsics()[None],
            mesh_vertices=mesh.vertices, mesh_faces=mesh.faces, mesh_colors=mesh.colors_uint8,
            renders=renders["frames"], notes=notes,
            extra={
                "frame": "OpenLRM canonical object frame: box [-1,1]^3, z up, source camera at (0,-2,0)",
                "mesh_watertight": watertight,
                "mesh_threshold_used": level,
                "grid_size": options.grid_size,
                "stage_seconds": stages,
                "render_resolution": options.render_resolution,
                "orbit": "radius 2, height 0.8, azimuth linspace(-pi/2, 3pi/2, n), looking at the origin, z up",
                "source_crop": asdict(crop),
                "weights": options.weights if options.weights == "random-tiny" else f"openlrm-mix-{options.variant}-1.1",
            },
        )


METHOD = LRMMethod()
