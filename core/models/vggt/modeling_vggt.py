"""The VGGT model: trunk (aggregator) + camera, depth and point heads.

``VGGT(config)(images)`` with ``images [S,3,H,W]`` or ``[B,S,3,H,W]`` in [0, 1] (H, W multiples
of 14) returns a :class:`VGGTOutput` (the reference's shapes; B = 1 is added for 4-D input).

Only the requested heads run (``heads=``), and only the trunk layers they read are kept.

Track head: built only with ``VGGT(config, with_track_head=True)`` (VGGT-1B's is 65.9 M parameters,
264 MB in float32, which point-cloud runs and the scaling study do not need, so the default model
stays as large as before); it runs only when ``query_points`` are given:
``VGGT(config, with_track_head=True)(images, query_points=q)`` returns ``track``, ``vis``, ``conf``
and ``track_list`` besides the requested heads' outputs.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from .aggregator import Aggregator
from .camera_head import CameraHead
from .config import VGGTConfig
from .dpt_head import DPTHead
from .track_head import TrackHead, check_query_points
from .tracker import TrackCapture

HEADS = ("camera", "depth", "point")


@dataclass(frozen=True, eq=False)
class VGGTOutput:
    """What one VGGT forward pass predicts; a field is None when its head did not run.

    Frames: cameras are camera-from-world with the first frame's camera as the world frame
    (OpenCV axes: x right, y down, z forward); lengths are in VGGT's scale-normalised units,
    shared by ``pose_enc``'s translation, ``depth`` and ``world_points``.

    Attributes:
        pose_enc: ``[B,S,9]`` float32 camera encoding ``[tx,ty,tz, qx,qy,qz,qw, fov_h,fov_w]``
            (translation of camera-from-world, quaternion scalar last, fields of view in
            radians >= 0; see :mod:`.pose_encoding`); None when the camera head did not run.
        depth: ``[B,S,H,W,1]`` float32 z-depth > 0 along each camera's optical axis, in the
            first camera's scale; None when the depth head did not run.
        depth_conf: ``[B,S,H,W]`` float32 confidence of ``depth``, >= 1 (``1 + exp``); None when
            the depth head did not run.
        world_points: ``[B,S,H,W,3]`` float32 per-pixel 3-D points in the first camera's frame;
            None when the point head did not run.
        world_points_conf: ``[B,S,H,W]`` float32 confidence of ``world_points``, >= 1; None when
            the point head did not run.
        track: ``[B,S,N,2]`` float32 pixel (x, y) of every query in every frame, in pixels of the
            input images (x along W, y along H, integer = pixel centre), after the last
            refinement iteration; frame 0 holds the queries exactly. None without queries.
        vis: ``[B,S,N]`` float32 visibility of each track point in (0, 1); None without queries.
        conf: ``[B,S,N]`` float32 confidence of each track point in (0, 1); None without queries.
        track_list: ``track_iters`` tensors ``[B,S,N,2]``, the tracks after each refinement
            iteration (input pixels; the last equals ``track``); None without queries.
    """

    pose_enc: torch.Tensor | None = None
    depth: torch.Tensor | None = None
    depth_conf: torch.Tensor | None = None
    world_points: torch.Tensor | None = None
    world_points_conf: torch.Tensor | None = None
    track: torch.Tensor | None = None
    vis: torch.Tensor | None = None
    conf: torch.Tensor | None = None
    track_list: list[torch.Tensor] | None = None


class VGGT(nn.Module):
    """VGGT with the parameter names of ``facebook/VGGT-1B`` (``model.pt``).

    Args:
        config: sizes (default VGGT-1B).
        with_track_head: also build the track head (``track_head.*``; default off: see the module
            docstring). With it, the full-size model holds all 1,256,537,516 parameters of the
            published checkpoint.
    """

    def __init__(self, config: VGGTConfig | None = None, with_track_head: bool = False) -> None:
        super().__init__()
        config = config or VGGTConfig()
        self.config = config
        dim = 2 * config.embed_dim
        self.aggregator = Aggregator(config)
        self.camera_head = CameraHead(dim, config.camera_trunk_depth, config.camera_num_heads,
                                      config.mlp_ratio, config.init_values,
                                      config.camera_iterations) if config.enable_camera else None
        dpt = dict(patch_size=config.patch_size, features=config.dpt_features,
                   out_channels=config.dpt_out_channels,
                   intermediate_layer_idx=config.dpt_intermediate_layer_idx)
        self.point_head = DPTHead(dim, output_dim=4, activation="inv_log", **dpt) \
            if config.enable_point else None
        self.depth_head = DPTHead(dim, output_dim=2, activation="exp", **dpt) \
            if config.enable_depth else None
        self.track_head = TrackHead(config) if with_track_head else None

    def layers_needed(self, heads: Iterable[str], track: bool = False) -> set[int]:
        """Trunk layers the given heads (and the track head when ``track``) read."""
        need: set[int] = set()
        heads = set(heads)
        if "camera" in heads:
            need.add(self.config.depth - 1)
        if heads & {"depth", "point"} or track:
            need.update(self.config.dpt_intermediate_layer_idx)
        return need

    def forward(self, images: torch.Tensor, heads: Iterable[str] = HEADS,
                frames_chunk_size: int | None = 8, capture=None,
                autocast_dtype: torch.dtype | None = None,
                query_points: torch.Tensor | None = None, track_iters: int | None = None,
                track_capture: TrackCapture | None = None) -> VGGTOutput:
        """Predict cameras, depth and points, and track query points when given.

        Args:
            images: ``[S,3,H,W]`` or ``[B,S,3,H,W]`` float in [0, 1].
            heads: subset of ("camera", "depth", "point") to run.
            frames_chunk_size: frames per DPT chunk (None: all frames at once).
            capture: optional :class:`~.attention.AttentionCapture`.
            autocast_dtype: bf16/fp16 autocast for the trunk, honoured on CUDA only (the heads
                always run in float32, as in the reference).
            query_points: ``[N,2]`` or ``[B,N,2]`` pixel (x, y) of frame 0 to track (integer =
                pixel centre; any N >= 1); the track head runs only when given (and needs
                ``with_track_head=True``).
            track_iters: refinement iterations (default ``config.track_iters``).
            track_capture: optional :class:`~.tracker.TrackCapture` recording the tracker's
                intermediates.

        Returns:
            :class:`VGGTOutput` with the requested heads' fields set (the others None).

        Raises:
            ValueError: bad image shape, unknown or missing head.
            TrackInputError: (a UserError) query points of the wrong shape or outside the image.
        """
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be [S,3,H,W] or [B,S,3,H,W], got {list(images.shape)}")
        if images.shape[1] == 0:
            raise ValueError("VGGT needs at least one view")
        heads = tuple(heads)
        unknown = set(heads) - set(HEADS)
        if unknown:
            raise ValueError(f"unknown head(s) {sorted(unknown)}; known: {HEADS}")
        missing = [h for h in heads if getattr(self, f"{h}_head") is None]
        if missing:
            raise ValueError(f"this model was built without the {missing} head(s)")
        track = query_points is not None
        if track:
            if self.track_head is None:
                raise ValueError("this VGGT was built without its track head: build it with "
                                 "VGGT(config, with_track_head=True) (or load the checkpoint with "
                                 "with_track_head=True) to track query points")
            query_points = check_query_points(query_points, tuple(images.shape[-2:]),
                                              batch=images.shape[0]).to(images.device, images.dtype)
        use_autocast = autocast_dtype is not None and images.device.type == "cuda"
        ctx = torch.autocast("cuda", dtype=autocast_dtype) if use_autocast \
            else contextlib.nullcontext()
        with ctx:
            layers = self.aggregator(images, keep_layers=self.layers_needed(heads, track),
                                     capture=capture)
        if use_autocast:
            layers = {k: v.float() for k, v in layers.items()}
        start = self.aggregator.patch_start_idx
        hw = tuple(images.shape[-2:])
        pose_enc = depth = depth_conf = world_points = world_points_conf = None
        off = torch.autocast("cuda", enabled=False) if images.device.type == "cuda" \
            else contextlib.nullcontext()
        with off:
            if "camera" in heads:
                pose_enc = self.camera_head(layers[self.config.depth - 1][:, :, 0])[-1]
                if not heads_need_full_last(self.config, heads, track):
                    layers.pop(self.config.depth - 1, None)
            if "depth" in heads:
                depth, depth_conf = self.depth_head(layers, hw, start, frames_chunk_size)
            if "point" in heads:
                world_points, world_points_conf = self.point_head(layers, hw, start,
                                                                  frames_chunk_size)
            track_list = vis = conf = None
            if track:
                track_list, vis, conf = self.track_head(layers, hw, start, query_points,
                                                        track_iters, frames_chunk_size,
                                                        track_capture)
        return VGGTOutput(pose_enc=pose_enc, depth=depth, depth_conf=depth_conf,
                          world_points=world_points, world_points_conf=world_points_conf,
                          track=track_list[-1] if track else None, vis=vis, conf=conf,
                          track_list=track_list)

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def heads_need_full_last(config: VGGTConfig, heads: Iterable[str], track: bool = False) -> bool:
    """Whether a DPT head (or the track head's feature extractor) also reads the trunk's last
    layer."""
    return (bool(set(heads) & {"depth", "point"}) or track) and \
        (config.depth - 1) in config.dpt_intermediate_layer_idx
