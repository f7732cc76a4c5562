"""Shap-E as a ReconBench method: a text prompt or one photo -> a coloured mesh.

Output frame: Shap-E's own object frame (the box [-1, 1]^3, z up), not tied to any input
camera: a generative model predicts no cameras, so evaluation aligns the result by centroid,
scale and rotation search. The Reconstruction holds the mesh (vertex colours sRGB), points
sampled on it (for the scores) and turntable renders (``renders``, the authors' pan cameras).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from core.data.scene import Reconstruction, Scene
from core.errors import UserError
from core.models.lrm.mesh import sample_surface
from core.models.pointe.method import object_image
from core.models.pointe.sampler import NoiseSource
from core.models.registry import Availability, Method, all_available, checkpoint_availability
from core.options import DeviceOptions, option
from core.profiling import measure
from core.progress import Progress

from . import checkpoints
from .mesh import decode_mesh
from .modeling_shape import ShapE
from .rendering import UniformSource, pan_cameras, render_nerf, render_stf
from .tokens import tokenize

log = logging.getLogger(__name__)

VERSION = "1"
Weights = Literal["pretrained", "random-tiny", "random-full"]
Mode = Literal["text", "image"]
RenderMode = Literal["stf", "nerf"]


class ShapEInputError(UserError):
    """A view Shap-E cannot use: a picture under one CLIP patch, or an empty object mask."""


@dataclass
class ShapEOptions(DeviceOptions):
    mode: Mode = option("text", "text: generate from the prompt; image: from the first chosen view")
    prompt: str = option("a plush toy", "what to generate (text mode; at most 75 CLIP tokens)")
    weights: Weights = option("pretrained", "pretrained: published text300M/image300M + decoder + "
                                            "CLIP ViT-L/14; random-tiny: a tiny configuration with "
                                            "seeded random weights (seconds; meaningless output); "
                                            "random-full: published sizes, random weights")
    karras_steps: int = option(64, "Karras Heun steps (published 64; fewer for a quick look: "
                                   "2 x steps - 1 model calls)", min=1, max=256, step=1)
    text_guidance: float = option(15.0, "classifier-free guidance in text mode (published 15)",
                                  min=0.0, max=50.0, step=0.5)
    image_guidance: float = option(3.0, "classifier-free guidance in image mode (published 3)",
                                   min=0.0, max=20.0, step=0.5)
    seed: int = option(0, "seed of the sampler's noise and the renderer's draws", min=0, step=1)
    grid_size: int = option(64, "SDF grid per axis for the mesh (published 128)", min=16,
                            max=256, step=16)
    render_size: int = option(64, "side of the turntable renders in pixels", min=8, max=512, step=8)
    render_views: int = option(8, "turntable renders (of the authors' 20 pan cameras, evenly)",
                               min=0, max=20, step=1)
    render_mode: RenderMode = option("stf", "stf: ray-cast the coloured mesh (fast); nerf: volume "
                                            "rendering of the implicit function (slow on CPU)")
    num_points: int = option(20000, "points sampled on the mesh for the scores", min=100,
                             max=200000, step=100)
    use_object_mask: bool = option(True, "image mode: crop the object from the scene's mask onto "
                                         "a white background")
    latent_checkpoint_path: str = option("", "text_cond.pt / image_cond.pt (per mode); empty = "
                                             "look it up", advanced=True)
    decoder_checkpoint_path: str = option("", "vector_decoder.pt (or transmitter.pt)", advanced=True)
    clip_checkpoint_path: str = option("", "CLIP ViT-L/14 model.safetensors", advanced=True)


class ShapEMethod(Method):
    """Shap-E text-to-3D / image-to-3D: mesh, surface points and turntable renders."""

    name = "shape"
    label = "Shap-E"
    family = "generative"
    version = VERSION
    options_type = ShapEOptions
    min_views = 1
    max_views = 1
    label_options = ("mode", "prompt")

    def check_options(self, options) -> None:
        """An empty prompt in text mode is refused before anything is queued or loaded (its
        length in CLIP tokens is checked once the tokenizer is at hand)."""
        from core.errors import OptionError

        if options.mode == "text" and not options.prompt.strip():
            raise OptionError("the prompt is empty: type what to generate, e.g. 'a plush toy rabbit'")
    description = ("OpenAI Shap-E (2023): CLIP ViT-L/14 (text embedding or image grid) conditions "
                   "a latent diffusion transformer (1024 x 1024 latent, Karras Heun sampling with "
                   "classifier-free guidance); the latent becomes the weights of an implicit "
                   "function (SDF + colour) that is meshed by marching cubes and rendered. Text "
                   "mode uses the prompt (the view only picks the scene to score against); image "
                   "mode the first chosen view. Output in Shap-E's own object frame.")

    def checkpoints(self, options: ShapEOptions) -> tuple:
        if options.weights != "pretrained":
            return ()
        files = (checkpoints.MODE_CHECKPOINT[options.mode], checkpoints.DECODER,
                 checkpoints.CLIP_VIT_L14)
        if options.mode == "text":
            files += (checkpoints.CLIP_VOCAB, checkpoints.CLIP_MERGES)
        return files

    def availability(self, options: ShapEOptions) -> Availability:
        paths = (options.latent_checkpoint_path, options.decoder_checkpoint_path,
                 options.clip_checkpoint_path, "", "")
        return all_available(*(checkpoint_availability(checkpoint, path)
                               for checkpoint, path in zip(self.checkpoints(options), paths)))

    def model_key(self, options: ShapEOptions) -> tuple:
        """weights, mode and the three checkpoint paths (resolved)."""
        return super().model_key(options) + (
            ("mode", options.mode), ("latent", options.latent_checkpoint_path),
            ("decoder", options.decoder_checkpoint_path))

    def load(self, options: ShapEOptions, device: str) -> dict:
        """``{"model": ShapE, "tokenizer": CLIPTokenizer | None}`` for the options' mode (raises
        MissingWeights / BadCheckpoint). Random weights use seed 0 (``seed`` seeds the noise)."""
        if options.weights == "random-tiny":
            return {"model": checkpoints.random_tiny(options.mode, 0, device), "tokenizer": None}
        if options.weights == "random-full":
            return {"model": checkpoints.random_full(options.mode, 0, device), "tokenizer": None}
        files = checkpoints.resolve_all(options.mode, options.latent_checkpoint_path,
                                        options.decoder_checkpoint_path, options.clip_checkpoint_path)
        log.info("loading Shap-E from %s", ", ".join(map(str, files)))
        model = checkpoints.load_pretrained(options.mode, *files, device=device)
        tokenizer = checkpoints.clip_tokenizer() if options.mode == "text" else None
        return {"model": model, "tokenizer": tokenizer}

    def parameter_count(self, model) -> int:
        return int(sum(p.numel() for p in model["model"].parameters()))

    def cost_bytes(self, model) -> int:
        return int(sum(p.numel() * p.element_size() for p in model["model"].parameters()))

    def condition(self, loaded: dict, scene: Scene, view_ids: list[int],
                  options: ShapEOptions) -> tuple[torch.Tensor, list[str]]:
        """The conditioning (text embedding ``[1, D_clip]`` or CLIP grid ``[1, G, T]``) and notes.
        Raises PromptError / ShapEInputError before any model runs."""
        model: ShapE = loaded["model"]
        if options.mode == "text":
            tokens = tokenize(options.prompt, loaded["tokenizer"])
            notes = [f"text mode: prompt {options.prompt.strip()!r}"]
            if loaded["tokenizer"] is None:
                notes.append("random weights: the prompt is tokenised character by character "
                             "inside CLIP's vocabulary (no BPE files needed)")
            return model.condition_text(tokens), notes
        view = view_ids[0]
        image = scene.images[view]
        patch = model.config.clip_patch_size
        h, w = image.shape[:2]
        if min(h, w) < patch:
            raise ShapEInputError(f"view {view} is {w}x{h} pixels, under one CLIP patch "
                                  f"({patch}x{patch}); Shap-E cannot see an object in it")
        masked = options.use_object_mask and scene.masks is not None
        if masked and not scene.masks[view].any():
            raise ShapEInputError(f"view {view} has an empty object mask: there is no object to "
                                  "generate from (turn off use_object_mask to use the whole picture)")
        picture = object_image(image, scene.masks[view] if masked else None)
        notes = [f"image mode: view {view}, " + ("object cropped from its mask onto white"
                                                 if masked else "the whole picture")]
        return model.condition_images([picture]), notes

    def predict(self, loaded: dict, scene: Scene, view_ids: list[int], options: ShapEOptions,
                progress: Progress, device: str) -> Reconstruction:
        """Mesh, ``num_points`` surface points and ``render_views`` renders (module docstring)."""
        model: ShapE = loaded["model"]
        stages: dict[str, float] = {}
        progress(0.01, "Shap-E: CLIP conditioning")
        with measure() as m:
            cond, notes = self.condition(loaded, scene, view_ids, options)
        stages["clip"] = m.seconds
        progress.check()
        total = model.denoiser_calls(options.karras_steps)
        sampling = progress.sub(0.03, 0.8)
        start = time.perf_counter()

        def on_call(calls: int) -> None:
            elapsed = time.perf_counter() - start
            eta = elapsed / calls * (total - calls)
            sampling(calls / total, f"Shap-E {options.mode}: denoiser call {calls}/{total}, "
                                    f"ETA {eta:.0f} s")

        guidance = options.text_guidance if options.mode == "text" else options.image_guidance
        with measure() as m:
            latent = model.sample_latents(options.mode, cond, NoiseSource(options.seed), on_call,
                                          karras_steps=options.karras_steps, guidance_scale=guidance)
        stages["sampling"] = m.seconds
        progress(0.8, f"Shap-E: mesh (SDF grid {options.grid_size}³)")
        with measure() as m, torch.no_grad():
            meta = model.decoder.bottleneck_to_params(latent[:1])
            mesh = decode_mesh(model.decoder, meta, options.grid_size)
        stages["mesh"] = m.seconds
        progress.check()
        points, _ = sample_surface(mesh, options.num_points, seed=options.seed)
        if len(points):
            with torch.no_grad():
                stf = model.decoder.field(torch.from_numpy(points).to(model.device)[None], meta)
            colors = (stf.channels_stf[0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        else:
            colors = np.zeros((0, 3), dtype=np.uint8)
            notes.append("the SDF is nowhere positive: empty mesh, no points")
        renders = None
        if options.render_views:
            progress(0.85, f"Shap-E: {options.render_views} turntable renders ({options.render_mode})")
            views = np.linspace(0, 20, options.render_views, endpoint=False).astype(int)
            cameras = pan_cameras(options.render_size, views)
            with measure() as m:
                if options.render_mode == "nerf":
                    image = render_nerf(model.decoder, meta, cameras, UniformSource(options.seed),
                                        ray_batch=4096).image_uint8
                else:
                    image = render_stf(torch.from_numpy(mesh.vertices), torch.from_numpy(mesh.faces),
                                       torch.from_numpy(mesh.linear_colors), cameras).image_uint8
            stages["renders"] = m.seconds
            renders = image
        progress(1.0, "done")
        notes += [
            "Shap-E's own object frame (box [-1,1]^3, z up), not the first camera's: no cameras "
            "are predicted; align by centroid, scale and rotation",
            f"{options.karras_steps} Karras steps ({total} denoiser calls), guidance {guidance:g}"
            + ("" if options.karras_steps == 64 else " (published: 64 steps)"),
            f"mesh: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces (SDF grid "
            f"{options.grid_size}³{'' if options.grid_size == 128 else ', published 128³'})"]
        return Reconstruction(
            method=self.name, points=points, colors=colors,
            mesh_vertices=mesh.vertices, mesh_faces=mesh.faces, mesh_colors=mesh.colors_uint8,
            renders=renders, notes=notes,
            extra={"frame": "Shap-E object frame: box [-1,1]^3, z up",
                   "mode": options.mode,
                   "prompt": options.prompt.strip() if options.mode == "text" else "",
                   "stage_seconds": stages, "denoiser_calls": total,
                   "parameter_counts": model.parameter_counts(),
                   "turntable": "the authors' pan cameras: 20 views at distance 4, 26.6° above "
                                "the horizon, fov 0.7 rad"})


METHOD = ShapEMethod()


def picture_scene(data: bytes, name: str = "upload") -> Scene:
    """A one-view scene (no ground truth, no mask) from an uploaded picture's bytes (PNG/JPEG),
    for Shap-E's image mode outside the scene's views. Raises ShapEInputError for bytes that
    are no picture."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise ShapEInputError(f"{name} is not a picture Shap-E can read: {error}") from None
    h, w = image.shape[:2]
    focal = float(max(h, w))
    intrinsics = np.array([[[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1]]])
    return Scene(name=name, images=[image], image_names=[name], intrinsics=intrinsics,
                 cam_from_world=np.eye(4)[None])


def run_on_picture(data: bytes, options: dict, progress: Progress | None = None,
                   name: str = "upload") -> Reconstruction:
    """Shap-E image mode on an uploaded picture (nothing stored: there is no ground truth to
    score against). ``options``: Shap-E options; ``mode`` is forced to image and the object
    mask off (an upload has none)."""
    from core.runner import execute

    scene = picture_scene(data, name)
    return execute(METHOD, scene, [0], {**options, "mode": "image", "use_object_mask": False}, progress)
