"""The VGGT global-attention viewer: one forward pass with capture, then any clicked pixel's
correspondences (with occlusion) and the global attention its patch gives to every view.

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
from dataclasses import dataclass, field

import numpy as np

from core import geometry

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

    @property
    def num_frames(self) -> int:
        return len(self.view_ids)

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
            raise ValueError(f"layer {layer} was not captured (captured: {self.layers})")
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

    def rollout(self, token: int, first_layer: int, last_layer: int, discard_fraction: float = 0.9) -> np.ndarray:
        """Attention rollout of ``token`` over layers ``first..last`` (inclusive): ``[S, rows, cols]``."""
        from core.models.vggt import AttentionCapture, attention_rollout

        chosen = [l for l in self.layers if first_layer <= l <= last_layer]
        if not chosen:
            raise ValueError(f"no captured layer in {first_layer}..{last_layer}")
        view = AttentionCapture([token], layers=chosen, keep_qk=True)
        view.qk = {l: self.capture.qk[l] for l in chosen}
        rolled = attention_rollout(view, [token], discard_fraction=discard_fraction)
        return self._patch_maps(rolled[0, 0].cpu().numpy())

    def network_to_original(self, frame: int, u: float, v: float) -> tuple[float, float]:
        (sx, sy), (tx, ty) = self.transforms[frame].scale, self.transforms[frame].offset
        return (u + 0.5 - tx) / sx - 0.5, (v + 0.5 - ty) / sy - 0.5

    def original_to_network(self, frame: int, u: float, v: float) -> tuple[float, float]:
        (sx, sy), (tx, ty) = self.transforms[frame].scale, self.transforms[frame].offset
        return sx * (u + 0.5) + tx - 0.5, sy * (v + 0.5) + ty - 0.5

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


def capture_session(scene, view_ids: list[int], weights: str = "pretrained", checkpoint_path: str = "",
                    preprocess: str = "crop", layers: list[int] | None = None, half_precision_keys: bool = False,
                    progress=None) -> AttentionSession:
    """Run VGGT once on ``view_ids`` with global-attention capture (queries and keys kept)."""
    import torch

    from core.models.vggt import AttentionCapture, pose_encoding_to_extrinsics_intrinsics, preprocess_images
    from core.models.vggt.method import load_model
    from core.profiling import measure

    if not view_ids:
        raise ValueError("choose at least one view")
    report = progress or (lambda fraction, message="": None)
    report(0.05, "loading VGGT")
    model = load_model(weights, "VGGT-1B", checkpoint_path, "cpu")
    report(0.15, "preprocessing")
    tensor, transforms = preprocess_images([scene.images[v] for v in view_ids], preprocess)
    capture = AttentionCapture([], layers=layers, keep_qk=True,
                               qk_dtype=torch.float16 if half_precision_keys else torch.float32)
    report(0.2, f"VGGT forward with capture on {len(view_ids)} view(s)")
    with measure() as measured, torch.inference_mode():
        out = model(tensor, heads=("camera", "depth"), capture=capture)
    hw = tuple(tensor.shape[-2:])
    cams, k_net = pose_encoding_to_extrinsics_intrinsics(out["pose_enc"][0].float(), hw, homogeneous=True)
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
        depth=out["depth"][0, ..., 0].float().numpy(), cam_from_world=cams.double().numpy(),
        intrinsics=k_net.double().numpy(), capture=capture, layers=captured, heads=heads,
        random_weights=weights == "random-tiny", seconds=measured.seconds,
        peak_memory_bytes=measured.peak_memory_bytes)
