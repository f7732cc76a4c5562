"""Gradient attribution of one predicted pixel of VGGT: what the prediction depends on.

For a clicked pixel ``(u, v)`` of view ``frame`` (network pixels of the VGGT input, integer =
pixel centre) and a scalar target ``y`` read at that pixel (``depth``: the depth head's z-depth;
``point-x|y|z``: one coordinate of the point head's 3-D point, first camera's frame;
``point-distance``: that point's distance from the first camera's centre), one backward pass
gives

* ``∂y/∂images`` ``[S,3,H,W]`` (images in [0, 1], before VGGT's ImageNet normalisation) and the
  per-view map **input × gradient** ``|Σ_c x_c ∂y/∂x_c|`` ``[S,H,W]``;
* ``∂y/∂t`` for the patch tokens ``t`` that enter the trunk (DINOv2's output) and its norm per
  token ``[S,rows,cols]``;
* **Grad-CAM for regression** on trunk layer ``l``: with ``A [S,rows,cols,C]`` the residual stream
  after layer ``l``'s global block (patch tokens only) and ``G = ∂y/∂A``, the channel weights are
  the gradients averaged over every patch of every view, ``α_c = mean G_c``, and the map is
  ``ReLU(Σ_c α_c A_c)`` ``[S,rows,cols]`` (one set of weights for all views, so the maps of
  different views share one scale). The sign kept by the ReLU is "increases y".

Memory is bounded by activation checkpointing (``Aggregator(checkpoint=True)``: one segment per
frame's DINOv2 pass and per trunk block pair), and only the clicked frame goes through the DPT
head (the head is per frame, so the other frames' head outputs cannot influence ``y``).
:func:`memory_estimate` states what the pass needs beyond the loaded model; :func:`check_memory`
refuses before running when that exceeds the machine's available memory.

Beside the attribution, :func:`compare_with_rollout` puts the same pixel's attention rollout
(:meth:`core.studies.attention.AttentionSession.rollout`) and the per-view Spearman rank
correlation between each attribution map (at the patch grid) and the rollout map.
"""
from __future__ import annotations

import logging
import typing
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from core.errors import UserError

if typing.TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Target = Literal["point-distance", "point-x", "point-y", "point-z", "depth"]
TARGETS: tuple[str, ...] = typing.get_args(Target)

# Numbers a pre-norm transformer block keeps for its backward pass, per token and per channel of
# its width C, weights excluded: norm inputs/outputs, q/k/v and their norms, the attention output
# (CPU flash attention keeps no N x N matrix), the projection and LayerScale inputs (14 C) and the
# MLP's hidden activations before and after GELU (2 · mlp_ratio · C). Measured with
# torch.autograd.graph.saved_tensors_hooks on a trunk block: 22.3 C at mlp_ratio 4 (DINOv2's
# block, without QK norm: 19.2 C).
BLOCK_SAVED_FIXED = 14.0
# Numbers the DPT head keeps for backward per output pixel and per feature channel of one frame
# (measured the same way on VGGT-1B's point head at 112x140 and 168x224: 2.9).
HEAD_SAVED_PER_PIXEL_FEATURE = 3.0
# Allocated once by a process's first backward pass whatever the sizes (see memory_estimate).
RUNTIME_BYTES = 512 * 2**20


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one attribution pass needs beyond the loaded model, by part (see :func:`memory_estimate`)."""

    parts: dict[str, int]

    @property
    def total_bytes(self) -> int:
        return int(sum(self.parts.values()))

    def describe(self) -> str:
        """One line: the total and its three largest parts."""
        top = sorted(self.parts.items(), key=lambda kv: -kv[1])[:3]
        return (f"about {format_bytes(self.total_bytes)} beyond the loaded model ("
                + ", ".join(f"{name} {format_bytes(value)}" for name, value in top) + ")")


def format_bytes(count: int) -> str:
    """``"1.23 GiB"`` from 1 GiB up, else ``"12.3 MiB"``."""
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def memory_estimate(config, views: int, height: int, width: int, checkpoint: bool = True,
                    dtype_bytes: int = 4) -> MemoryEstimate:
    """What one attribution pass keeps at its peak, analytically, beyond the model's weights.

    Model (``b`` = ``dtype_bytes``; ``n = (H/p)(W/p)`` patches and ``P = 1 + R + n`` tokens per
    frame for both the trunk and DINOv2; ``k = 14 + 2·mlp_ratio`` numbers per token and channel
    kept by one block, see ``BLOCK_SAVED_FIXED``; ``T = S·P·C·b`` one trunk token tensor):

    * ``dinov2``: checkpointed, the ``S`` frames' patch tokens ``S·n·C·b`` plus one frame's
      recomputed pass ``dino_depth·k·P·C·b``; otherwise every frame's pass ``S·dino_depth·k·P·C·b``.
    * ``trunk``: checkpointed, every block pair's input ``depth·T`` plus one recomputed pair
      ``2·k·T``; otherwise every block ``2·depth·k·T``.
    * ``head inputs``: the four DPT layers and the Grad-CAM layer ``(4·2C + C)·S·P·b``.
    * ``dpt head``: one frame, ``3·features·H·W·b`` (``HEAD_SAVED_PER_PIXEL_FEATURE``).
    * ``backward``: gradients in flight: the largest recomputed segment again (its gradients),
      plus ``4·T`` for the token gradients and ``2·S·3·H·W·b`` for the image and its gradient.
    * ``runtime``: a fixed ``RUNTIME_BYTES`` for what a process's first backward pass allocates
      once (autograd engine, kernel workspaces; measured about 0.4 GiB).

    Checked on a reduced configuration (C 256, 8 + 8 blocks, 4 views at 196x266, checkpointed):
    estimated 206 MiB for the tensors, measured 163 MiB peak RSS increase in a warm process, so
    the tensor parts are an upper-side estimate (saved tensors shared by two operations are
    counted twice).
    """
    c, s = config.embed_dim, int(views)
    patch = config.patch_size
    n = (height // patch) * (width // patch)
    tokens = 1 + config.num_register_tokens + n
    k = BLOCK_SAVED_FIXED + 2 * config.mlp_ratio
    t = s * tokens * c * dtype_bytes
    one_dino = config.dino_depth * k * tokens * c * dtype_bytes
    if checkpoint:
        dino = s * n * c * dtype_bytes + one_dino
        trunk = config.depth * t + 2 * k * t
        largest = max(one_dino, 2 * k * t)
    else:
        dino = s * one_dino
        trunk = 2 * config.depth * k * t
        largest = max(one_dino, k * t)
    parts = {
        "dinov2": dino,
        "trunk": trunk,
        "head inputs": (4 * 2 * c + c) * s * tokens * dtype_bytes,
        "dpt head": HEAD_SAVED_PER_PIXEL_FEATURE * config.dpt_features * height * width * dtype_bytes,
        "backward": largest + 4 * t + 2 * s * 3 * height * width * dtype_bytes,
        "runtime": RUNTIME_BYTES,
    }
    return MemoryEstimate({name: int(value) for name, value in parts.items()})


def available_memory_bytes() -> int:
    """Memory the machine can still give this process (psutil's ``available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(estimate: MemoryEstimate, available: int | None = None) -> None:
    """Raise UserError when ``estimate`` exceeds the available memory (checked before running)."""
    available = available_memory_bytes() if available is None else available
    if estimate.total_bytes > available:
        raise UserError(f"the attribution needs {estimate.describe()} but only {format_bytes(available)} "
                        "is free: choose fewer views or free memory")


@dataclass
class Attribution:
    """One pixel's gradient attribution over every view (arrays numpy float64 or float32).

    Attributes:
        frame, pixel: the clicked view (input order) and network pixel ``(u, v)``.
        target, layer: the scalar read at the pixel and the trunk layer of Grad-CAM.
        value: ``y``, the target's value (VGGT's scale-normalised units).
        input_gradient: ``[S,3,H,W]`` ``∂y/∂images`` (images in [0, 1]).
        input_x_gradient: ``[S,H,W]`` ``|Σ_c x_c ∂y/∂x_c|``.
        token_gradient: ``[S,rows,cols]`` ``‖∂y/∂t‖₂`` of each patch token entering the trunk.
        grad_cam: ``[S,rows,cols]`` Grad-CAM on ``layer`` (see the module docstring).
        estimate: the memory estimate checked before the pass; seconds and peak_memory_bytes
            (the process's RSS increase) measured around it.
    """

    frame: int
    pixel: tuple[int, int]
    target: str
    layer: int
    value: float
    input_gradient: np.ndarray = field(repr=False)
    input_x_gradient: np.ndarray = field(repr=False)
    token_gradient: np.ndarray = field(repr=False)
    grad_cam: np.ndarray = field(repr=False)
    estimate: MemoryEstimate | None = None
    seconds: float = 0.0
    peak_memory_bytes: int = 0

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.grad_cam.shape[1:])

    def pooled(self, image_map: np.ndarray) -> np.ndarray:
        """``[S,H,W]`` -> ``[S,rows,cols]``: the sum over each patch's pixels."""
        s, h, w = image_map.shape
        rows, cols = self.grid
        ph, pw = h // rows, w // cols
        return image_map[:, :rows * ph, :cols * pw].reshape(s, rows, ph, cols, pw).sum(axis=(2, 4))

    def upsampled(self, grid_map: np.ndarray) -> np.ndarray:
        """``[S,rows,cols]`` -> ``[S,H,W]`` (bilinear, patch centres at the patch grid's samples)."""
        import torch
        import torch.nn.functional as F

        h, w = self.input_x_gradient.shape[1:]
        return F.interpolate(torch.as_tensor(np.asarray(grid_map, np.float64))[:, None], size=(h, w),
                             mode="bilinear", align_corners=False)[:, 0].numpy()

    def maps(self) -> dict[str, np.ndarray]:
        """The attribution maps at the patch grid, by name: ``[S,rows,cols]`` each."""
        return {"input × gradient": self.pooled(self.input_x_gradient), "Grad-CAM": self.grad_cam,
                "token gradient": self.token_gradient}


# forward(images [S,3,H,W]) -> (value map [H,W] of the clicked frame, patch tokens [S,n,C], layer
# activations [S,n,C]); the tokens must be tensors of the autograd graph that produced the value.
Forward = Callable[["torch.Tensor"], tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]]


def input_x_gradient(images: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """``|Σ_c x_c g_c|``: ``images, gradient [S,3,H,W]`` -> ``[S,H,W]``."""
    return np.abs((images * gradient).sum(axis=1))


def grad_cam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM for regression: ``activations, gradients [S,rows,cols,C]`` -> ``[S,rows,cols]``
    ``= ReLU(Σ_c α_c A_c)`` with ``α_c`` the mean of ``G_c`` over every view's patches."""
    alpha = gradients.reshape(-1, gradients.shape[-1]).mean(axis=0)
    return np.maximum(activations @ alpha, 0.0)


def gradient_attribution(forward: Forward, images, frame: int, pixel: tuple[int, int], grid: tuple[int, int]
                         ) -> dict[str, np.ndarray | float]:
    """One backward pass of ``y = forward(images)[0][v, u]``.

    Args:
        forward: see ``Forward``; images: ``[S,3,H,W]`` tensor in [0, 1] (its dtype is the
            pass's); frame: the clicked view (only checked against ``S``); pixel: ``(u, v)``
            integer network pixel; grid: (rows, cols) of patches.

    Returns:
        ``value``, ``input_gradient``, ``input_x_gradient``, ``token_gradient``, ``grad_cam``
        (shapes as in :class:`Attribution`).
    """
    import torch

    s, _, h, w = images.shape
    rows, cols = grid
    u, v = pixel
    with torch.enable_grad():
        x = images.detach().clone().requires_grad_(True)
        value_map, tokens, activations = forward(x)
        y = value_map[v, u]
        g_image, g_tokens, g_act = torch.autograd.grad(y, (x, tokens, activations), allow_unused=True)
    zero = lambda t: torch.zeros_like(t)  # noqa: E731 (a view whose tokens do not reach y)
    g_tokens = zero(tokens) if g_tokens is None else g_tokens
    g_act = zero(activations) if g_act is None else g_act
    image_np = x.detach().cpu().numpy()
    g_image_np = (zero(x) if g_image is None else g_image).cpu().numpy()
    act = activations.detach().reshape(s, rows, cols, -1).cpu().numpy()
    return {
        "value": float(y.detach()),
        "input_gradient": g_image_np,
        "input_x_gradient": input_x_gradient(image_np, g_image_np),
        "token_gradient": np.linalg.norm(g_tokens.reshape(s, rows, cols, -1).cpu().numpy(), axis=-1),
        "grad_cam": grad_cam(act, g_act.reshape(s, rows, cols, -1).cpu().numpy()),
    }


def vggt_forward(model, frame: int, target: str, layer: int, checkpoint: bool = True) -> Forward:
    """The :data:`Forward` of a VGGT: trunk (checkpointed when asked), then the point or depth
    head on ``frame`` alone; the patch tokens and the layer's residual stream are taken with
    forward hooks that are removed once the trunk has run (so recomputed segments do not fire
    them)."""
    import torch

    aggregator = model.aggregator
    start = aggregator.patch_start_idx
    head = model.depth_head if target == "depth" else model.point_head
    if head is None:
        raise UserError(f"this VGGT was built without the head that predicts {target}")

    def forward(images: torch.Tensor):
        recorded: dict[str, list] = {"tokens": [], "layer": []}
        hooks = [aggregator.patch_embed.register_forward_hook(
                     lambda module, args, out: recorded["tokens"].append(out)),
                 aggregator.global_blocks[layer].register_forward_hook(
                     lambda module, args, out: recorded["layer"].append(out))]
        try:
            layers = aggregator(images[None], keep_layers=set(model.config.dpt_intermediate_layer_idx),
                                checkpoint=checkpoint)
        finally:
            for hook in hooks:
                hook.remove()
        s = images.shape[0]
        chosen = {index: tokens[:, frame:frame + 1] for index, tokens in layers.items()}
        values, _ = head(chosen, tuple(images.shape[-2:]), start, frames_chunk_size=1)
        values = values[0, 0]  # [H, W, 1 or 3]
        if target == "depth":
            value_map = values[..., 0]
        elif target == "point-distance":
            value_map = values.norm(dim=-1)
        else:
            value_map = values[..., "xyz".index(target[-1])]
        tokens = torch.cat(recorded["tokens"])          # [S, n, C]
        streamed = recorded["layer"][0].reshape(s, -1, recorded["layer"][0].shape[-1])[:, start:]
        return value_map, tokens, streamed

    return forward


def validate(config, views: int, height: int, width: int, frame: int, pixel, target: str, layer: int) -> None:
    """UserError for a clicked pixel outside the image, an unknown target, a frame or layer out of range."""
    u, v = pixel
    if not (0 <= frame < views):
        raise UserError(f"view {frame} is out of range: {views} view(s) were given")
    if not (float(u).is_integer() and float(v).is_integer() and 0 <= u < width and 0 <= v < height):
        raise UserError(f"pixel ({u}, {v}) is outside the {width}x{height} network image "
                        f"(integer x in 0..{width - 1}, y in 0..{height - 1})")
    if target not in TARGETS:
        raise UserError(f"unknown attribution target {target!r}; choose one of {', '.join(TARGETS)}")
    if not (isinstance(layer, (int, np.integer)) and 0 <= layer < config.depth):
        raise UserError(f"layer {layer} is out of range: the trunk has layers 0..{config.depth - 1}")


def attribute(model, images, frame: int, pixel: tuple[int, int], target: str = "point-distance",
              layer: int | None = None, checkpoint: bool = True, available: int | None = None) -> Attribution:
    """Gradient attribution of VGGT's ``target`` at network pixel ``pixel = (u, v)`` of ``frame``.

    Args:
        model: a :class:`core.models.vggt.VGGT` (its dtype sets the pass's; float64 for checks).
        images: ``[S,3,H,W]`` tensor in [0, 1] (H, W multiples of the patch size).
        layer: Grad-CAM's trunk layer (default: the last).
        checkpoint: activation checkpointing over the trunk (same gradients, bounded memory).
        available: free bytes to check the estimate against (default: psutil's).

    Raises UserError before running for a pixel outside the image, a layer out of range, an
    unknown target, or a memory estimate above the available memory.
    """
    import torch

    from core.profiling import measure

    config = model.config
    layer = config.depth - 1 if layer is None else layer
    s, _, h, w = images.shape
    validate(config, s, h, w, frame, pixel, target, layer)
    dtype = next(model.parameters()).dtype
    estimate = memory_estimate(config, s, h, w, checkpoint, torch.finfo(dtype).bits // 8)
    check_memory(estimate, available)
    grid = (h // config.patch_size, w // config.patch_size)
    images = torch.as_tensor(images).to(dtype)
    with measure() as measured:
        result = gradient_attribution(vggt_forward(model, frame, target, layer, checkpoint), images, frame,
                                      (int(pixel[0]), int(pixel[1])), grid)
    return Attribution(frame=frame, pixel=(int(pixel[0]), int(pixel[1])), target=target, layer=int(layer),
                       estimate=estimate, seconds=measured.seconds,
                       peak_memory_bytes=measured.peak_memory_bytes, **result)


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman rank correlation of two maps (flattened); NaN when either is constant."""
    from scipy.stats import spearmanr

    a, b = np.ravel(first).astype(np.float64), np.ravel(second).astype(np.float64)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def rank_correlations(maps: np.ndarray, reference: np.ndarray) -> list[float]:
    """Per view, the Spearman correlation of ``maps [S,rows,cols]`` with ``reference [S,rows,cols]``."""
    return [spearman(m, r) for m, r in zip(maps, reference)]


def session_attribution(session, frame: int, pixel: tuple[int, int], target: str = "point-distance",
                        layer: int | None = None, checkpoint: bool = True, available: int | None = None
                        ) -> Attribution:
    """:func:`attribute` on an attention session's views, with the session's model and inputs."""
    from core.studies.attention import vggt_model

    model = vggt_model(session.weights, session.checkpoint, session.checkpoint_path)
    return attribute(model, session.inputs, frame, pixel, target, layer, checkpoint, available)


def session_estimate(session, checkpoint: bool = True) -> MemoryEstimate:
    """The memory an attribution on this session's views will need (stated before it runs; from
    the session's model configuration, without loading the model)."""
    s, _, h, w = session.inputs.shape
    return memory_estimate(session.config(), s, h, w, checkpoint)


def compare_with_rollout(session, attribution: Attribution, first_layer: int, last_layer: int,
                         discard_fraction: float = 0.9, progress=None) -> dict:
    """The clicked pixel's attention rollout and its per-view rank correlation with each map.

    Returns ``{"rollout": [S,rows,cols], "correlations": {map name: [S] Spearman ρ (NaN: a constant
    map)}}``.
    """
    token = session.token_for_pixel(attribution.frame, *attribution.pixel)
    rolled = session.rollout(token, first_layer, last_layer, discard_fraction, progress=progress)
    return {"rollout": rolled,
            "correlations": {name: rank_correlations(values, rolled) for name, values in attribution.maps().items()}}


def correlation_rows(session, correlations: dict[str, list[float]]) -> list[dict]:
    """One row per view: the Spearman ρ of each attribution map with the rollout (None: a constant map)."""
    return [{"view": view, **{f"ρ {name} vs rollout": (None if np.isnan(values[frame]) else round(values[frame], 3))
                              for name, values in correlations.items()}}
            for frame, view in enumerate(session.view_ids)]


def bench(argv: list[str] | None = None) -> list[dict]:
    """``python -m core bench attribution``: seconds and peak RSS of one gradient attribution.

    Loads the scene (default ``sample_data/toy``), crops ``--views`` evenly spaced views to the
    network size (default 392x518), loads the model (default ``random-full``: VGGT-1B's
    architecture) and attributes the centre pixel of view 0 (``--target``, Grad-CAM on
    ``--layer``, checkpointing unless ``--no-checkpointing``). Reports the seconds of the pass, the
    process's peak RSS (the number that must stay under 16 GB), the increase over the loaded model
    and the analytic estimate it was checked against.
    """
    import argparse
    import time
    from types import SimpleNamespace

    import psutil

    from core.cli import load_scene
    from core.data.prepare.frames import crop_to_aspect
    from core.models.vggt import preprocess_images
    from core.models.vggt.method import Weights
    from core.profiling import measure
    from core.studies.attention import vggt_model

    parser = argparse.ArgumentParser(prog="python -m core bench attribution", description=bench.__doc__)
    parser.add_argument("--scene", default="sample_data/toy")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--weights", default="random-full", choices=typing.get_args(Weights))
    parser.add_argument("--checkpoint-path", default="")
    parser.add_argument("--target", default="point-distance", choices=TARGETS)
    parser.add_argument("--layer", type=int, default=None, help="Grad-CAM layer (default: the last)")
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--height", type=int, default=392, help="network input height (multiple of 14)")
    parser.add_argument("--width", type=int, default=518, help="network input width (crop mode: 518)")
    args = parser.parse_args(list(argv or []))

    scene = load_scene(args.scene)
    view_ids = scene.uniform_views(args.views)
    cropped = SimpleNamespace(images=[crop_to_aspect(scene.images[v], args.height / args.width) for v in view_ids])
    tensor, _ = preprocess_images(cropped.images, "crop")
    height, width = tensor.shape[-2:]
    if (height, width) != (args.height, args.width):
        log.warning("network input is %dx%d, not the requested %dx%d", height, width, args.height, args.width)
    process = psutil.Process()
    base_rss = process.memory_info().rss
    started = time.perf_counter()
    model = vggt_model(args.weights, "vggt-1b", args.checkpoint_path)
    load_s = time.perf_counter() - started
    model_rss = process.memory_info().rss
    pixel = (int(width) // 2, int(height) // 2)
    with measure() as whole:
        result = attribute(model, tensor, 0, pixel, args.target, args.layer, not args.no_checkpointing)
    return [{
        "bench": "attribution", "weights": args.weights, "scene": scene.name, "views": len(view_ids),
        "view_ids": view_ids, "height": int(height), "width": int(width), "target": args.target,
        "layer": result.layer, "checkpointing": not args.no_checkpointing,
        "parameters": sum(p.numel() for p in model.parameters()),
        "model_load_seconds": round(load_s, 2), "model_rss_bytes": model_rss - base_rss,
        "attribution_seconds": round(result.seconds, 3),
        "estimated_bytes": result.estimate.total_bytes,
        "estimated_parts": result.estimate.parts,
        "peak_rss_bytes": whole.peak_rss_bytes, "peak_rss_over_model_bytes": whole.peak_rss_bytes - model_rss,
        "peak_rss_gib": round(whole.peak_rss_bytes / 2**30, 3)}]
