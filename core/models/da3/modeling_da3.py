"""The Depth Anything 3 any-view network and its typed output.

:class:`DepthAnything3` is the API object of the published checkpoints: it holds the network as
``model`` (:class:`DepthAnything3Net`: ``backbone``, ``head``, ``cam_dec``, ``cam_enc``), so its
parameter names are the hub files' (``model.backbone.pretrained.*``, ``model.head.*``,
``model.cam_dec.*``, ``model.cam_enc.*``).

One forward pass on S views (``images [B, S, 3, H, W]``, ImageNet-normalised, H and W multiples
of 14) predicts per view a depth map and its confidence, per-pixel rays, and a camera:

- default: from the camera decoder (the last out layer's camera token);
- ``use_ray_pose=True``: decoded from the rays (:mod:`.raypose`, RANSAC with replayable draws);
- known cameras (``extrinsics``/``intrinsics`` given, normalised as
  :func:`.processing.normalize_extrinsics`): the camera encoder's tokens replace the camera
  tokens, no reference view is selected; the decoder still predicts cameras.

Frame: the reference view's camera (for 3+ views without cameras the view chosen by
``ref_view_strategy``, else the first) is the world frame of the predicted cameras, up to the
network's accuracy (the network is trained so, not constrained); scale arbitrary.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from .backbone import DinoV2
from .camera import CameraDec, CameraEnc, pose_encoding_to_cameras
from .config import DA3Config
from .head import DualDPT
from .raypose import rays_to_cameras

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DA3Output:
    """Predictions for ``B`` batch elements of ``S`` views of ``H x W`` pixels (views in input
    order unless stated).

    Attributes:
        depth: ``[B, S, H, W]`` depth along the optical axis (network scale).
        depth_conf: ``[B, S, H, W]`` confidence (>= 1).
        extrinsics: ``[B, S, 3, 4]`` world-to-camera (OpenCV).
        intrinsics: ``[B, S, 3, 3]`` in network pixels, principal point (W/2, H/2) for the
            camera decoder.
        ray: ``[B, S, 8h, 8w, 6]`` ray directions and camera centres (h, w: patch grid).
        ray_conf: ``[B, S, 8h, 8w]``.
        pose_enc: ``[B, S, 9]`` the camera decoder's encoding (None with ``use_ray_pose``).
        feats / cam_tokens: what the head / camera decoder read, per out layer
            (``[B, S, h·w, 2D]`` / ``[B, S, 2D]``).
        aux: ``{block: [B, S, h, w, D]}`` exported features (see :class:`.backbone.BackboneOutput`
            for their view order).
        ref_index: ``int64 [B]`` the selected reference view, or None.
        ref_cls_tokens: ``[B, S, D]`` the tokens the selection read, or None.
        cam_enc_pose_encoding / cam_enc_tokens: ``[B, S, 9]`` / ``[B, S, D]`` when cameras were
            given.
        ransac_draws: ``int64 [100, 8]`` the draws of the ray decoder (``use_ray_pose``).
    """

    depth: torch.Tensor
    depth_conf: torch.Tensor
    extrinsics: torch.Tensor
    intrinsics: torch.Tensor
    ray: torch.Tensor
    ray_conf: torch.Tensor
    pose_enc: torch.Tensor | None = None
    feats: list[torch.Tensor] = field(default_factory=list)
    cam_tokens: list[torch.Tensor] = field(default_factory=list)
    aux: dict[int, torch.Tensor] = field(default_factory=dict)
    ref_index: torch.Tensor | None = None
    ref_cls_tokens: torch.Tensor | None = None
    cam_enc_pose_encoding: torch.Tensor | None = None
    cam_enc_tokens: torch.Tensor | None = None
    ransac_draws: torch.Tensor | None = None


class DepthAnything3Net(nn.Module):
    """``model``: backbone, DualDPT head, camera decoder and camera encoder."""

    def __init__(self, config: DA3Config) -> None:
        super().__init__()
        self.backbone = DinoV2(config)
        self.head = DualDPT(config)
        self.cam_dec = CameraDec(config)
        self.cam_enc = CameraEnc(config)


class DepthAnything3(nn.Module):
    """Depth Anything 3 any-view model (DA3-SMALL / DA3-BASE family); see the module docstring.

    Args:
        config: sizes (default DA3-SMALL).
    """

    def __init__(self, config: DA3Config | None = None) -> None:
        super().__init__()
        self.config = config or DA3Config()
        self.model = DepthAnything3Net(self.config)

    def forward(self, images: torch.Tensor, extrinsics: torch.Tensor | None = None,
                intrinsics: torch.Tensor | None = None, use_ray_pose: bool = False,
                ref_view_strategy: str | None = None,
                export_feat_layers: tuple[int, ...] | None = None,
                ransac_draws: torch.Tensor | None = None,
                generator: torch.Generator | None = None,
                autocast_dtype: torch.dtype | None = None) -> DA3Output:
        """Predict depth, rays and cameras.

        Args:
            images: ``[B, S, 3, H, W]`` normalised (:func:`.processing.preprocess_images`).
            extrinsics: ``[B, S, 4, 4]`` known world-to-camera poses (normalised) or None.
            intrinsics: ``[B, S, 3, 3]`` their intrinsics in network pixels (with extrinsics).
            use_ray_pose: cameras from the rays instead of the camera decoder.
            ref_view_strategy: ``first`` | ``middle`` | ``saddle_balanced`` (default: config).
            export_feat_layers: blocks to export (default: config).
            ransac_draws / generator: the ray decoder's draws, or their source (see
                :func:`.raypose.rays_to_cameras`).
            autocast_dtype: run the backbone under autocast in this dtype (CUDA), as the API;
                heads and cameras stay float32.
        """
        net = self.model
        if images.ndim != 5:
            raise ValueError(f"images must be [B, S, 3, H, W], got {list(images.shape)}")
        hw = tuple(images.shape[-2:])
        if (extrinsics is None) != (intrinsics is None):
            raise ValueError("give both extrinsics and intrinsics, or neither")
        pose_encoding = cam_token = None
        if extrinsics is not None:
            pose_encoding = net.cam_enc.encode(extrinsics, intrinsics, hw)
            cam_token = net.cam_enc(extrinsics, intrinsics, hw)
        autocast = (torch.autocast(images.device.type, dtype=autocast_dtype)
                    if autocast_dtype is not None else contextlib.nullcontext())
        with autocast:
            features = net.backbone(images, cam_token=cam_token,
                                    ref_view_strategy=ref_view_strategy,
                                    export_feat_layers=export_feat_layers)
        feats = [f.float() for f in features.feats]
        cam_tokens = [c.float() for c in features.cam_tokens]
        dense = net.head(feats, hw)
        out = DA3Output(depth=dense.depth, depth_conf=dense.depth_conf, extrinsics=None,
                        intrinsics=None, ray=dense.ray, ray_conf=dense.ray_conf, feats=feats,
                        cam_tokens=cam_tokens,
                        aux={k: v.float() for k, v in features.aux.items()},
                        ref_index=features.ref_index, ref_cls_tokens=features.ref_cls_tokens,
                        cam_enc_pose_encoding=pose_encoding, cam_enc_tokens=cam_token)
        if use_ray_pose:
            cams = rays_to_cameras(dense.ray, dense.ray_conf, hw, ransac_draws, generator)
            out.extrinsics, out.intrinsics, out.ransac_draws = (cams.extrinsics, cams.intrinsics,
                                                                cams.draws)
        else:
            out.pose_enc = net.cam_dec(cam_tokens[-1])
            out.extrinsics, out.intrinsics = pose_encoding_to_cameras(out.pose_enc, hw)
        return out
