"""The VGGT global-attention viewer: one forward pass with capture, then any clicked pixel's
correspondences (with occlusion) and the global attention its patch gives to every view; the
tracking head's tracks of clicked points (up to 32), compared with the depth correspondence and
the ground truth. The gradient attribution of a clicked pixel is :mod:`core.studies.attribution`.

Memory: the capture keeps each global block's queries and keys (``2·S·P·C`` numbers per layer;
for 8 views at 392x518 with VGGT-1B about 68 MB per layer in float32, 1.6 GB for all 24) and
never an ``(S·P)x(S·P)`` matrix: a clicked token's attention row is ``softmax(q_t Kᵀ/√d)``, and the
rollout multiplies a row vector through the layers, building each layer's matrix a chunk of
rows at a time (:func:`core.models.vggt.attention_rollout`).

Pixel coordinates: "network" pixels index the VGGT input (integer = pixel centre, as VGGT's own
unprojection); "original" pixels index the scene image (core.geometry's convention).
"""
from __future__ import annotations

import logging
import typing
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from core import geometry
from core.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class AttentionSession:
    """Everything the viewer needs after one captured forward pass (arrays are numpy, capture torch).

    Attributes:
        view_ids: scene views, in input order (frame 0 is VGGT's reference).
        images: ``uint8 [S,H',W',3]`` network inputs (for display).
        transforms: per-frame :class:`core.models.vggt.ImageTransform` (original -> network).
        grid: (rows, cols) of patches per frame; tokens_per_frame: 1 camera + registers + patches.
        patch_start: index of the first patch token within a frame.
        depth: ``[S,H',W']`` VGGT depth; cam_from_world ``[S,4,4]``; intrinsics ``[S,3,3]`` (network pixels).
        capture: the AttentionCapture holding queries/keys per global layer.
        layers: captured global layers, ascending.
        heads: attention heads per layer.
        random_weights: True when the model had random weights (attention then means nothing).
        inputs: ``float32 [S,3,H',W']`` the network input in [0, 1] (tracking and attribution rerun
            the model on it); weights, checkpoint, checkpoint_path: the model's options.
        model_config: the model's :meth:`core.models.vggt.VGGTConfig.to_dict` (sizes for memory
            estimates without loading the model).
        key: the capture key when the session is stored in the cache
            (:mod:`core.studies.attention_store`; its queries and keys are then memory-mapped
            files), else "".
    """

    view_ids: list[int]
    images: np.ndarray
    transforms: list
    grid: tuple[int, int]
    tokens_per_frame: int
    patch_start: int
    depth: np.ndarray
    cam_from_world: np.ndarray
    intrinsics: np.ndarray
    capture: object = field(repr=False)
    layers: list[int] = field(default_factory=list)
    heads: int = 0
    random_weights: bool = False
    seconds: float = 0.0
    peak_memory_bytes: int = 0
    rollouts: dict = field(default_factory=dict, repr=False)
    inputs: np.ndarray | None = field(default=None, repr=False)
    weights: str = "pretrained"
    checkpoint: str = "vggt-1b"
    checkpoint_path: str = ""
    tracks: dict = field(default_factory=dict, repr=False)
    model_config: dict | None = field(default=None, repr=False)
    key: str = ""

    MAX_KEPT_ROLLOUTS = 64
    MAX_KEPT_TRACKS = 16

    @property
    def capture_bytes(self) -> int:
        """Bytes held by the captured queries and keys (all layers)."""
        return sum(t.numel() * t.element_size() for pair in self.capture.qk.values() for t in pair)

    @property
    def num_frames(self) -> int:
        return len(self.view_ids)

    def config(self):
        """The :class:`core.models.vggt.VGGTConfig` of the captured model (from ``model_config``;
        loads the model only for a session made without it)."""
        from core.models.vggt import VGGTConfig

        if self.model_config is not None:
            return VGGTConfig.from_dict(self.model_config)
        return vggt_model(self.weights, self.checkpoint, self.checkpoint_path).config

    def token_for_pixel(self, frame: int, u: float, v: float) -> int:
        """Global token index of the patch holding network pixel (u, v) of ``frame``."""
        from core.models.vggt import token_index

        rows, cols = self.grid
        patch = self.images.shape[2] // cols
        row = min(max(int(v // patch), 0), rows - 1)
        col = min(max(int(u // patch), 0), cols - 1)
        return token_index(frame, row, col, cols, self.tokens_per_frame, self.patch_start)

    def _patch_maps(self, row_vector: np.ndarray) -> np.ndarray:
        """``[S·P]`` -> ``[S, rows, cols]`` keeping only patch tokens."""
        rows, cols = self.grid
        per_frame = row_vector.reshape(self.num_frames, self.tokens_per_frame)
        return per_frame[:, self.patch_start:].reshape(self.num_frames, rows, cols)

    def layer_attention(self, token: int, layer: int, reduce: str | int = "max") -> np.ndarray:
        """Global attention of ``token`` in ``layer`` over every frame's patches: ``[S, rows, cols]``.

        ``reduce``: ``"max"`` or ``"mean"`` over heads, or a head index.
        """
        import torch

        if layer not in self.capture.qk:
            raise UserError(f"layer {layer} was not captured (captured: {self.layers})")
        q, k = self.capture.qk[layer]
        logits = (q[0, :, token:token + 1].float() @ k[0].float().transpose(-1, -2)) * q.shape[-1] ** -0.5
        probs = logits.softmax(-1)[:, 0]  # [heads, N]
        if reduce == "max":
            row = probs.amax(0)
        elif reduce == "mean":
            row = probs.mean(0)
        else:
            row = probs[int(reduce)]
        return self._patch_maps(row.to(torch.float32).cpu().numpy())

    def rollout(self, token: int, first_layer: int, last_layer: int, discard_fraction: float = 0.9,
                progress=None) -> np.ndarray:
        """Attention rollout of ``token`` over layers ``first..last`` (inclusive): ``[S, rows, cols]``.

        Results are kept per (token, layers, discard) in the session (a few KB each), so showing
        the same query again costs nothing; ``progress(fraction, message)`` is called per layer.
        """
        from core.models.vggt import AttentionCapture, attention_rollout

        chosen = [l for l in self.layers if first_layer <= l <= last_layer]
        if not chosen:
            raise UserError(f"no captured layer in {first_layer}..{last_layer}")
        key = (int(token), chosen[0], chosen[-1], float(discard_fraction))
        if key not in self.rollouts:
            view = AttentionCapture([token], layers=chosen, keep_qk=True)
            view.qk = {l: self.capture.qk[l] for l in chosen}
            rolled = attention_rollout(view, [token], discard_fraction=discard_fraction, progress=progress)
            if len(self.rollouts) >= self.MAX_KEPT_ROLLOUTS:
                self.rollouts.pop(next(iter(self.rollouts)))
            self.rollouts[key] = self._patch_maps(rolled[0, 0].cpu().numpy())
        return self.rollouts[key]

    def network_to_original(self, frame: int, u: float, v: float) -> tuple[float, float]:
        """Network pixel (u, v) of ``frame`` -> the original image's pixel (integer centres)."""
        t = self.transforms[frame]
        ou, ov = geometry.resize_crop_pixels((u, v), t.scale, t.offset, inverse=True)
        return float(ou), float(ov)

    def original_to_network(self, frame: int, u: float, v: float) -> tuple[float, float]:
        """Original pixel (u, v) of ``frame`` -> network pixel (integer centres)."""
        t = self.transforms[frame]
        nu, nv = geometry.resize_crop_pixels((u, v), t.scale, t.offset)
        return float(nu), float(nv)

    def correspondences(self, frame: int, u: float, v: float, scene=None) -> dict:
        """Where network pixel (u, v) of ``frame`` lands in every frame.

        Returns ``{"predicted": [...], "ground_truth": [...] or None}``, one entry per frame (the
        source included) with ``uv`` in network pixels, ``in_bounds`` and ``occluded`` (see
        :func:`core.geometry.transfer_pixel`). Ground truth uses the scene's depth and cameras.
        """
        predicted = geometry.transfer_pixel((u, v), self.depth[frame], self.intrinsics[frame],
                                            self.cam_from_world[frame], self.intrinsics, self.cam_from_world,
                                            self.depth)
        truth = None
        if scene is not None and scene.depths is not None and scene.registered[self.view_ids].all():
            ou, ov = self.network_to_original(frame, u, v)
            source = self.view_ids[frame]
            truth = geometry.transfer_pixel((ou, ov), scene.depths[source], scene.intrinsics[source],
                                            scene.cam_from_world[source], scene.intrinsics[self.view_ids],
                                            scene.cam_from_world[self.view_ids], scene.depths[self.view_ids])
            for index, entry in enumerate(truth):
                if entry["uv"] is not None:
                    entry["uv"] = self.original_to_network(index, *entry["uv"])
        return {"predicted": predicted, "ground_truth": truth}

    def track(self, frame: int, points, progress=None) -> "Tracks":
        """Track network pixels ``points [N,2]`` (x, y) of ``frame`` through every view with VGGT's
        tracking head (kept per (frame, points) in the session; see :func:`track_points`)."""
        key = (int(frame), tuple((float(x), float(y)) for x, y in np.asarray(points, np.float64).reshape(-1, 2)))
        if key not in self.tracks:
            if len(self.tracks) >= self.MAX_KEPT_TRACKS:
                self.tracks.pop(next(iter(self.tracks)))
            model = tracking_model(self.weights, self.checkpoint, self.checkpoint_path)
            self.tracks[key] = track_points(model, self.inputs, frame, points, progress=progress)
        return self.tracks[key]

    def track_table(self, tracks: "Tracks", scene=None) -> list[dict]:
        """One row per (point, view): the tracking head's pixel with visibility and confidence, the
        correspondence through VGGT's depth and cameras, the ground-truth transfer with its
        occlusion flag, and both predictions' pixel errors against the ground truth (network
        pixels; None where there is no ground-truth pixel in the image)."""
        rows = []
        for index, (x, y) in enumerate(tracks.queries):
            links = self.correspondences(tracks.source, float(x), float(y), scene)
            truth = links["ground_truth"]
            for frame in range(self.num_frames):
                head_uv = tracks.uv[frame, index]
                depth_uv = links["predicted"][frame]["uv"]
                gt = truth[frame] if truth else None
                gt_uv = gt["uv"] if gt is not None and gt["in_bounds"] else None
                rows.append({
                    "point": index, "view": self.view_ids[frame],
                    "track x": float(head_uv[0]), "track y": float(head_uv[1]),
                    "visibility": float(tracks.visibility[frame, index]),
                    "confidence": float(tracks.confidence[frame, index]),
                    "depth x": None if depth_uv is None else float(depth_uv[0]),
                    "depth y": None if depth_uv is None else float(depth_uv[1]),
                    "truth x": None if gt_uv is None else float(gt_uv[0]),
                    "truth y": None if gt_uv is None else float(gt_uv[1]),
                    "truth": ("no ground truth" if gt is None else "outside" if gt_uv is None
                              else "occluded" if gt["occluded"] else "visible"),
                    "track error px": None if gt_uv is None else float(np.hypot(*(head_uv - np.asarray(gt_uv)))),
                    "depth error px": None if gt_uv is None or depth_uv is None
                    else float(np.hypot(*(np.asarray(depth_uv) - np.asarray(gt_uv)))),
                })
        return rows

    def track_truth(self, tracks: "Tracks", scene=None) -> np.ndarray:
        """``[S,N,2]`` ground-truth network pixels of the tracked points (NaN where the scene has no
        ground truth or the point leaves the image; occluded points keep their pixel)."""
        truth = np.full(tracks.uv.shape, np.nan)
        for index, (x, y) in enumerate(tracks.queries):
            links = self.correspondences(tracks.source, float(x), float(y), scene)["ground_truth"]
            for frame, entry in enumerate(links or []):
                if entry["uv"] is not None and entry["in_bounds"]:
                    truth[frame, index] = entry["uv"]
        return truth


def track_summary(rows: list[dict], source_view: int) -> list[dict]:
    """Per point, over the views other than the source where the ground truth is visible: how many,
    and the mean pixel error of the tracking head and of the depth correspondence."""
    out = []
    for point in sorted({row["point"] for row in rows}):
        chosen = [r for r in rows if r["point"] == point and r["view"] != source_view and r["truth"] == "visible"]
        track = [r["track error px"] for r in chosen]
        depth = [r["depth error px"] for r in chosen if r["depth error px"] is not None]
        out.append({"point": point, "views compared": len(chosen),
                    "track mean error px": float(np.mean(track)) if track else None,
                    "depth mean error px": float(np.mean(depth)) if depth else None})
    return out


MAX_TRACK_QUERIES = 32


@dataclass
class Tracks:
    """VGGT tracking-head output for query pixels of one view, in the session's view order.

    Attributes:
        source: the view the queries were clicked in; queries: ``[N,2]`` its network pixels (x, y).
        uv: ``[S,N,2]`` tracked network pixels in every view (the source's are the queries'
            refinement); visibility, confidence: ``[S,N]`` in [0, 1] (sigmoid outputs).
        seconds: the forward pass's wall time.
    """

    source: int
    queries: np.ndarray
    uv: np.ndarray
    visibility: np.ndarray
    confidence: np.ndarray
    seconds: float = 0.0


def validate_queries(points, height: int, width: int) -> np.ndarray:
    """``float64 [N,2]`` (x, y) network pixels, or UserError: none, more than
    :data:`MAX_TRACK_QUERIES`, or a point outside the ``width x height`` image."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    if len(points) == 0:
        raise UserError("click at least one point to track")
    if len(points) > MAX_TRACK_QUERIES:
        raise UserError(f"at most {MAX_TRACK_QUERIES} points can be tracked at once, got {len(points)}")
    outside = ~((points[:, 0] >= 0) & (points[:, 0] <= width - 1) & (points[:, 1] >= 0) & (points[:, 1] <= height - 1))
    if outside.any():
        x, y = points[np.argmax(outside)]
        raise UserError(f"query ({x:g}, {y:g}) is outside the {width}x{height} network image")
    return points


def track_points(model, inputs, frame: int, points, progress=None) -> Tracks:
    """Track ``points [N,2]`` (network pixels x, y of ``frame``) through every view of ``inputs``
    (``[S,3,H,W]`` in [0, 1]) with VGGT's tracking head.

    The tracking head follows queries of its first frame, so the views are reordered with
    ``frame`` first (VGGT's reference frame is then ``frame``; for ``frame = 0`` the order is the
    session's) and the outputs put back in the session's order. Raises UserError before running
    for no queries, more than 32, or one outside the image.
    """
    import torch

    from core.profiling import measure

    inputs = torch.as_tensor(np.asarray(inputs, np.float32))
    s, _, h, w = inputs.shape
    if not 0 <= frame < s:
        raise UserError(f"view {frame} is out of range: {s} view(s) were given")
    points = validate_queries(points, h, w)
    if getattr(model, "track_head", None) is None:
        raise UserError("this VGGT has no tracking head (its configuration leaves it out)")
    order = [frame] + [f for f in range(s) if f != frame]
    back = np.argsort(order)
    if progress is not None:
        progress(0.1, f"tracking {len(points)} point(s) through {s} view(s)")
    queries = torch.as_tensor(points, dtype=torch.float32)[None]
    with measure() as measured, torch.inference_mode():
        out = model(inputs[order][None], heads=(), query_points=queries)
    if progress is not None:
        progress(1.0, "tracked")
    uv = out.track[0].float().numpy()[back]
    return Tracks(source=frame, queries=points, uv=uv, visibility=out.vis[0].float().numpy()[back],
                  confidence=out.conf[0].float().numpy()[back], seconds=measured.seconds)


def vggt_options(weights: str = "pretrained", checkpoint: str = "vggt-1b", checkpoint_path: str = ""):
    """The CPU VGGT options for these weights, validated and with their availability checked like
    a run's (raises UserError otherwise); nothing is loaded."""
    from core.models import registry

    method = registry.get("vggt")
    options = method.parse_options({"weights": weights, "checkpoint": checkpoint,
                                    "checkpoint_path": checkpoint_path, "device": "cpu"})
    available = method.availability(options)
    if not available.ok:
        raise registry.CannotRun(f"VGGT cannot run: {available.message()}")
    return options


def vggt_model(weights: str = "pretrained", checkpoint: str = "vggt-1b", checkpoint_path: str = ""):
    """The CPU VGGT for these weights from the runner's model cache (:func:`vggt_options`)."""
    from core.models import registry
    from core.runner import load_model

    return load_model(registry.get("vggt"), vggt_options(weights, checkpoint, checkpoint_path), "cpu")[0]


_TRACKERS: dict = {}


def tracking_model(weights: str = "pretrained", checkpoint: str = "vggt-1b", checkpoint_path: str = ""):
    """The cached VGGT for these weights with a track head: one ``VGGT(config, with_track_head=True)``
    holding the cached model's own tensors (no second copy of the trunk and heads) plus the track
    head's. The track head's weights: the checkpoint's ``track_head.*`` tensors (pretrained), or
    seeded random ones (random-tiny: default init perturbed by N(0, 0.05) like the tiny model;
    random-full: :func:`core.models.random_weights.fill_random_`). One tracking model is kept."""
    import torch

    from core.models.vggt import VGGT, TrackHead
    from core.models.vggt.checkpoints import TRACK_PREFIX, materialize_buffers
    from core.models.random_weights import fill_random_
    from core.models.vggt.method import CHECKPOINTS

    base = vggt_model(weights, checkpoint, checkpoint_path)
    key = (id(base), weights, checkpoint, checkpoint_path)
    if key in _TRACKERS:
        return _TRACKERS[key]
    config = base.config
    if weights == "pretrained":
        from core.models import weights as checkpoints

        state = checkpoints.load_state_dict(checkpoints.resolve(CHECKPOINTS[checkpoint], checkpoint_path or None))
        head_state = {k[len(TRACK_PREFIX):]: v.float() for k, v in state.items() if k.startswith(TRACK_PREFIX)}
        del state
        if not head_state:
            raise UserError(f"the {checkpoint} checkpoint holds no track head (no {TRACK_PREFIX}* tensors)")
        head = TrackHead(config)
        head.load_state_dict(head_state, strict=True)
    elif weights == "random-tiny":
        with torch.random.fork_rng():
            torch.manual_seed(0)
            head = TrackHead(config)
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for param in head.parameters():
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    else:
        head = fill_random_(TrackHead(config))
    with torch.device("meta"):
        tracker = VGGT(config, with_track_head=True)
    state = dict(base.state_dict())
    state.update({TRACK_PREFIX + k: v for k, v in head.state_dict().items()})
    tracker.load_state_dict(state, strict=True, assign=True)
    materialize_buffers(tracker)
    _TRACKERS.clear()
    _TRACKERS[key] = tracker.eval()
    return tracker


def capture_session(scene, view_ids: list[int], weights: str = "pretrained", checkpoint_path: str = "",
                    preprocess: str = "crop", layers: list[int] | None = None, half_precision_keys: bool = False,
                    progress=None, checkpoint: str = "vggt-1b") -> AttentionSession:
    """Run VGGT once on ``scene.images[v]`` for ``v`` in ``view_ids`` with global-attention capture
    (queries and keys kept; ``scene`` needs only ``images``).

    ``weights`` is a VGGT weights option (pretrained, random-tiny, random-full); ``seconds`` and
    ``peak_memory_bytes`` of the result cover the captured forward pass, not the model load.
    """
    import torch

    from core.models.vggt import AttentionCapture, pose_encoding_to_extrinsics_intrinsics, preprocess_images
    from core.options import RANDOM_WEIGHTS, refuse_paths_when_hosted

    refuse_paths_when_hosted({"checkpoint_path": checkpoint_path})
    from core.profiling import measure

    if not view_ids:
        raise UserError("choose at least one view")
    report = progress or (lambda fraction, message="": None)
    report(0.05, "loading VGGT")
    model = vggt_model(weights, checkpoint, checkpoint_path)
    report(0.15, "preprocessing")
    tensor, transforms = preprocess_images([scene.images[v] for v in view_ids], preprocess)
    capture = AttentionCapture([], layers=layers, keep_qk=True,
                               qk_dtype=torch.float16 if half_precision_keys else torch.float32)
    report(0.2, f"VGGT forward with capture on {len(view_ids)} view(s)")
    with measure() as measured, torch.inference_mode():
        out = model(tensor, heads=("camera", "depth"), capture=capture)
    hw = tuple(tensor.shape[-2:])
    cams, k_net = pose_encoding_to_extrinsics_intrinsics(out.pose_enc[0].float(), hw, homogeneous=True)
    patch = model.config.patch_size
    grid = (hw[0] // patch, hw[1] // patch)
    patch_start = 1 + model.config.num_register_tokens
    captured = sorted(capture.qk)
    heads = capture.qk[captured[0]][0].shape[1] if captured else 0
    report(1.0, f"captured {len(captured)} global layers")
    images = (tensor.permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    return AttentionSession(
        view_ids=list(view_ids), images=images, transforms=list(transforms), grid=grid,
        tokens_per_frame=patch_start + grid[0] * grid[1], patch_start=patch_start,
        depth=out.depth[0, ..., 0].float().numpy(), cam_from_world=cams.double().numpy(),
        intrinsics=k_net.double().numpy(), capture=capture, layers=captured, heads=heads,
        random_weights=weights in RANDOM_WEIGHTS, seconds=measured.seconds,
        peak_memory_bytes=measured.peak_memory_bytes, inputs=tensor.numpy(), weights=weights,
        checkpoint=checkpoint, checkpoint_path=checkpoint_path, model_config=model.config.to_dict())


def bench(argv: list[str] | None = None) -> list[dict]:
    """``python -m core bench attention``: time and peak memory of the viewer's capture and rollout.

    Loads the scene (default ``sample_data/toy``), runs :func:`capture_session` on ``--views``
    evenly spaced views with every global layer captured (default weights ``random-full``:
    VGGT-1B's architecture, so time and memory are the real model's), then computes one clicked
    token's per-layer map and its rollout across all captured layers. Reports seconds, the
    process's peak RSS (the number that must stay under 16 GB), the increase over the loaded
    model, and the bytes held by the captured queries and keys.
    """
    import argparse
    import time

    import psutil

    from core.cli import load_scene
    from core.data.prepare.frames import crop_to_aspect
    from core.models.vggt.method import Weights
    from core.profiling import measure

    parser = argparse.ArgumentParser(prog="python -m core bench attention", description=bench.__doc__)
    parser.add_argument("--scene", default="sample_data/toy")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--weights", default="random-full", choices=typing.get_args(Weights))
    parser.add_argument("--checkpoint-path", default="")
    parser.add_argument("--half", action="store_true", help="keep queries and keys in float16")
    parser.add_argument("--height", type=int, default=392, help="network input height (multiple of 14)")
    parser.add_argument("--width", type=int, default=518, help="network input width (crop mode: 518)")
    args = parser.parse_args(list(argv or []))

    scene = load_scene(args.scene)
    view_ids = scene.uniform_views(args.views)
    cropped = SimpleNamespace(images=[crop_to_aspect(scene.images[v], args.height / args.width) for v in view_ids])
    process = psutil.Process()
    base_rss = process.memory_info().rss
    started = time.perf_counter()
    model = vggt_model(args.weights, "vggt-1b", args.checkpoint_path)
    load_s = time.perf_counter() - started
    model_rss = process.memory_info().rss
    with measure() as whole:
        session = capture_session(cropped, list(range(len(view_ids))), weights=args.weights,
                                  checkpoint_path=args.checkpoint_path, half_precision_keys=args.half)
        token = session.token_for_pixel(0, session.images.shape[2] / 2, session.images.shape[1] / 2)
        with measure() as one_layer:
            session.layer_attention(token, session.layers[-1], "max")
        with measure() as rollout:
            rolled = session.rollout(token, session.layers[0], session.layers[-1])
    height, width = session.images.shape[1:3]
    if (height, width) != (args.height, args.width):
        log.warning("network input is %dx%d, not the requested %dx%d", height, width, args.height, args.width)
    return [{
        "bench": "attention", "weights": args.weights, "scene": scene.name, "views": len(view_ids),
        "view_ids": view_ids, "height": int(height), "width": int(width),
        "layers_captured": len(session.layers), "heads": session.heads,
        "tokens": session.num_frames * session.tokens_per_frame,
        "key_dtype": "float16" if args.half else "float32",
        "parameters": sum(p.numel() for p in model.parameters()),
        "model_load_seconds": round(load_s, 2), "model_rss_bytes": model_rss - base_rss,
        "capture_seconds": session.seconds, "capture_bytes": session.capture_bytes,
        "layer_map_seconds": one_layer.seconds, "rollout_seconds": rollout.seconds,
        "rollout_mass_on_patches": float(rolled.sum()),
        "peak_rss_bytes": whole.peak_rss_bytes, "peak_rss_over_model_bytes": whole.peak_rss_bytes - model_rss,
        "peak_rss_gib": round(whole.peak_rss_bytes / 2**30, 3)}]
