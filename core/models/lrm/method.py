"""ReconBench method ``lrm``: OpenLRM v1.1, one picture -> triplane NeRF -> mesh + orbit renders.

Output frame: OpenLRM's own object-centred canonical frame (object inside [-1,1]³, up +z, the
input camera assumed at (0,-2,0) looking along +y with focal 0.75 of the square crop). It is not
the first view's camera frame. The Reconstruction's camera is that assumed source camera
(``cam_from_world`` OpenCV world->camera in LRM's frame, ``intrinsics`` in the scene's original
pixels through the crop): the model assumes it rather than predicts it; it lets the metrics
align through the input view before ICP.
"""
from __future__ import annotations

import base64
import functools
import io
import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch

from core.models import weights
from core.models.registry import Availability, Method, option
from core.profiling import measure
from core.progress import Progress
from core.data.scene import Reconstruction, Scene

from .cameras import source_cam_from_world_cv
from .checkpoints import checkpoint_for
from .config import preset, tiny_config
from .inference import infer_planes, render_orbit
from .mesh import extract_mesh, sample_surface
from .modeling_lrm import LRM
from .preprocess import crop_object

log = logging.getLogger(__name__)

VERSION = "1"
RANDOM_NOTE = "random weights: the geometry and scores are meaningless"


@dataclass
class LRMOptions:
    weights: str = option("pretrained", "pretrained checkpoint or the fixture's tiny configuration "
                          "with seeded random weights", choices=("pretrained", "random-tiny"))
    variant: str = option("base", "published size (openlrm-mix-*-1.1)", choices=("small", "base", "large"))
    checkpoint_path: str = option("", "explicit model.safetensors path (else RECONBENCH_WEIGHTS / HF cache)",
                                  advanced=True)
    render_resolution: int = option(128, "side of the orbit renders (authors: 288 base)", min=16, max=512, step=16)
    grid_size: int = option(128, "marching-cubes grid per axis (authors: 384)", min=16, max=384, step=16)
    mesh_threshold: float = option(3.0, "iso-level on the density (authors: 3.0)", min=0.1, max=50.0, step=0.1)
    orbit_views: int = option(8, "number of orbit renders", min=1, max=160, step=1)
    num_points: int = option(20000, "points sampled on the mesh for the metrics", min=100, max=200000, step=100)
    border_ratio: float = option(0.2, "white border around the object crop (authors: 0.2)",
                                 min=0.0, max=0.6, step=0.05, advanced=True)
    seed: int = option(0, "seeds renderer jitter, surface sampling and random weights", advanced=True)
    device: str = option("auto", "auto = cuda if available else cpu", choices=("auto", "cpu", "cuda"))


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but CUDA is not available")
    return name


@functools.cache
def load_model(weights_kind: str, variant: str, checkpoint_path: str, device: str, seed: int = 0) -> LRM:
    """Build (once per process) the model for these options, in eval mode on ``device``."""
    if weights_kind == "random-tiny":
        model = LRM(tiny_config())
        model.init_weights(torch.Generator().manual_seed(seed))
    elif weights_kind == "pretrained":
        path = weights.resolve(checkpoint_for(variant), checkpoint_path or None)
        state = weights.load_state_dict(path)
        with torch.device("meta"):
            model = LRM(preset(variant))
        weights.check_state_dict(model, state)
        model.load_state_dict(state, strict=True, assign=True)
    else:
        raise ValueError(f"unknown weights {weights_kind!r}; choose pretrained or random-tiny")
    return model.to(device).eval()


def availability(options: LRMOptions | None = None) -> Availability:
    options = options or LRMOptions()
    if options.weights == "random-tiny":
        return Availability(True)
    checkpoint = checkpoint_for(options.variant)
    try:
        weights.resolve(checkpoint, options.checkpoint_path or None)
    except weights.MissingWeights as error:
        return Availability(False, str(error), checkpoint.fetch_command)
    return Availability(True)


def _png_base64(frame: np.ndarray) -> str:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_renders(extra: dict) -> np.ndarray:
    """``uint8 [M,R,R,3]`` orbit renders stored in a Reconstruction's ``extra``."""
    from PIL import Image
    frames = [np.asarray(Image.open(io.BytesIO(base64.b64decode(s))).convert("RGB"))
              for s in extra.get("renders_png_base64", [])]
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), dtype=np.uint8)


def run(scene: Scene, view_ids: list[int], options: LRMOptions | None = None,
        progress: Progress | None = None) -> Reconstruction:
    """Reconstruct the object of one view (see module docstring for the output frame)."""
    options = options or LRMOptions()
    progress = progress or Progress()
    METHOD.check_views(list(view_ids))
    view = int(view_ids[0])
    if not 0 <= view < scene.num_views:
        raise ValueError(f"view {view} does not exist (the scene has {scene.num_views})")
    if options.grid_size < 4:
        raise ValueError("grid_size must be at least 4")
    image = scene.images[view]
    mask = None if scene.masks is None else scene.masks[view]
    square, crop = crop_object(image, mask, options.border_ratio)
    notes: list[str] = []
    if mask is None:
        notes.append("the scene has no object mask: the whole picture was used, background included")
    device = _device(options.device)
    progress(0.02, "loading LRM")
    model = load_model(options.weights, options.variant, options.checkpoint_path, device, options.seed)
    config = model.config
    stages: dict[str, float] = {}
    with measure(cuda=device.startswith("cuda")) as total:
        progress(0.1, "encoding the image and predicting triplanes")
        with measure() as m:
            planes = infer_planes(model, square, device)
        stages["triplanes"] = m.seconds
        progress(0.35, f"density grid {options.grid_size}³ and marching cubes")
        with measure() as m:
            sigma = model.query_grid(planes, options.grid_size)["sigma"]
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
            rgb = model.query_points(planes, torch.from_numpy(points).to(device)[None])["rgb"][0]
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
    if options.weights == "random-tiny":
        notes.insert(0, RANDOM_NOTE)
    notes.append("points and mesh are in LRM's own object-centred frame (box [-1,1]³, z up), "
                 "not the input camera's frame; align before comparing")
    notes.append("camera: LRM's canonical source camera (assumed by the model, not predicted): "
                 "distance 2, focal 0.75 of the square object crop")
    notes.append(f"mesh: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces, "
                 f"{'watertight' if watertight else 'not watertight'}")
    source_w2c = source_cam_from_world_cv(config.source_cam_dist)
    progress(1.0, "done")
    return Reconstruction(
        method=METHOD.name, version=VERSION, points=points, colors=colors,
        view_ids=[view], cam_from_world=source_w2c[None], intrinsics=crop.intrinsics()[None],
        mesh_vertices=mesh.vertices, mesh_faces=mesh.faces,
        mesh_colors=mesh.colors_uint8, options=asdict(options), seconds=total.seconds,
        peak_memory_bytes=total.peak_memory_bytes, parameter_count=model.num_parameters,
        device=device, notes=notes,
        extra={
            "frame": "OpenLRM canonical object frame: box [-1,1]^3, z up, source camera at (0,-2,0)",
            "mesh_watertight": watertight,
            "mesh_threshold_used": level,
            "grid_size": options.grid_size,
            "stage_seconds": stages,
            "renders_png_base64": [_png_base64(f) for f in renders["frames"]],
            "render_resolution": options.render_resolution,
            "orbit": "radius 2, height 0.8, azimuth linspace(-pi/2, 3pi/2, n), looking at the origin, z up",
            "source_crop": asdict(crop),
            "weights": options.weights if options.weights == "random-tiny" else f"openlrm-mix-{options.variant}-1.1",
        },
    )


METHOD = Method(
    name="lrm",
    label="LRM (OpenLRM v1.1)",
    family="generative",
    version=VERSION,
    options_type=LRMOptions,
    run=run,
    availability=availability,
    min_views=1,
    max_views=1,
    description=("OpenLRM v1.1: a DINOv2 encoder and a camera-modulated transformer predict a triplane "
                 "NeRF from one picture; the mesh is extracted by marching cubes on the density grid "
                 "and points are sampled on it. Output in LRM's own object-centred frame."),
)
