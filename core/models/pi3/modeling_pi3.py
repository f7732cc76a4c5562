"""The π³ and Pi3X models: ``Pi3(config)(images, ...)`` -> :class:`Pi3Output`.

``images`` are ``[B,S,3,H,W]`` (or ``[S,3,H,W]``, B = 1 added) RGB in [0, 1], H and W multiples
of 14; :mod:`.processing` prepares them as the authors do. The model normalises with its own
``image_mean`` / ``image_std`` buffers (ImageNet; part of the checkpoints' state dict).

Pipeline (both variants): DINOv2 encoder per view -> ``[5 registers, patch tokens]`` per view ->
``dec_depth`` blocks alternating per-view (even) and all-view (odd) attention with qk-norm and
2-D RoPE (no view embedding, no reference view: permuting the views permutes every output) ->
the last two blocks' outputs concatenated -> three head transformers (points, confidence,
camera) -> heads. π³'s point/confidence heads are per-patch linear maps; Pi3X's are convolutional,
it predicts a metric scale, and it optionally takes known rays or intrinsics, camera poses and
depth (:meth:`Pi3.forward`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from core.errors import UserError

from .config import Pi3Config
from .layers import (NORM_EPS, Block, CameraHead, ConvHead, Encoder, HeadTransformer,
                     LinearPointHead, MetricDecoder, PoseInjectBlock, ProjectiveRoPE, RayEmbed,
                     RotaryTable)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MULTIMODAL_PREFIXES = ("depth_encoder.", "depth_emb", "ray_embed.", "pose_inject_blk.")


class Pi3InputError(UserError):
    """Inputs π³ / Pi3X cannot take (shapes, sizes, non-finite conditioning)."""


@dataclass(frozen=True, eq=False)
class Pi3Output:
    """What one π³ / Pi3X forward pass predicts (float32).

    Frames: the authors' world frame is the model's own (π³ has no reference view; it is learned,
    not tied to any input view); OpenCV camera axes (x right, y down, z forward). Lengths: π³ is
    up to one similarity shared by all outputs; Pi3X multiplies points, local points and pose
    translations by its predicted ``metric`` scale (metres when trained so).

    Attributes:
        points: ``[B,S,H,W,3]`` per-pixel points in the world frame (``R·local + t``).
        local_points: ``[B,S,H,W,3]`` each view's point map in its own camera frame (z > 0).
        conf: ``[B,S,H,W,1]`` confidence logit (sigmoid gives a probability).
        camera_poses: ``[B,S,4,4]`` camera-to-world.
        rays: Pi3X: ``[B,S,H,W,3]`` unit viewing directions in each camera; None for π³.
        metric: Pi3X: ``[B]`` metric scale (> 0); None for π³.
        intermediates: with ``return_intermediates``: ``encoder_tokens [B*S,P,D]``,
            ``decoder_tokens [B*S,5+P,2D]``, ``pos [B*S,5+P,2]`` int64, ``point_hidden``,
            ``conf_hidden``, ``camera_hidden`` ``[B*S,5+P,·]``; Pi3X adds ``encode_hidden``,
            ``encode_poses [B,S,4,4]``, ``encode_norm_factor [B]``, ``encode_use_depth_mask``,
            ``encode_use_pose_mask`` ``[B,S]`` and ``metric_hidden [B,1,·]``.
    """

    points: torch.Tensor
    local_points: torch.Tensor
    conf: torch.Tensor
    camera_poses: torch.Tensor
    rays: torch.Tensor | None = None
    metric: torch.Tensor | None = None
    intermediates: dict = field(default_factory=dict)


def patch_positions(grid_h: int, grid_w: int, registers: int, device=None) -> torch.Tensor:
    """``int64 [registers + h*w, 2]`` RoPE positions (y, x): registers at (0, 0), the patch in row
    y, column x at (y + 1, x + 1), row-major."""
    y, x = torch.meshgrid(torch.arange(grid_h, device=device), torch.arange(grid_w, device=device),
                          indexing="ij")
    patches = torch.stack((y.reshape(-1), x.reshape(-1)), -1) + 1
    return torch.cat((torch.zeros(registers, 2, dtype=torch.long, device=device), patches))


class Pi3(nn.Module):
    """π³ (``config.variant == "pi3"``) or Pi3X (``"pi3x"``); see the module docstring."""

    def __init__(self, config: Pi3Config | None = None) -> None:
        super().__init__()
        self.config = c = config or Pi3Config()
        d, p = c.embed_dim, c.patch_size
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.encoder = Encoder(c.img_size, p, d, c.enc_depth, c.enc_heads, c.mlp_ratio,
                               c.enc_registers)
        self.decoder = nn.ModuleList(Block(d, c.dec_heads, c.mlp_ratio, qk_norm=True,
                                           init_values=0.01, norm_eps=NORM_EPS)
                                     for _ in range(c.dec_depth))
        self.register_token = nn.Parameter(torch.zeros(1, 1, c.dec_registers, d))
        head = lambda out: HeadTransformer(2 * d, c.head_embed_dim, c.head_depth,  # noqa: E731
                                           c.head_heads, out, c.mlp_ratio)
        self.point_decoder = head(c.head_out_dim)
        self.conf_decoder = head(c.head_out_dim)
        self.camera_decoder = head(c.cam_dim)
        self.camera_head = CameraHead(c.cam_dim)
        if c.variant == "pi3":
            self.point_head = LinearPointHead(c.head_out_dim, 3, p)
            self.conf_head = LinearPointHead(c.head_out_dim, 1, p)
        else:
            conv = (c.head_out_dim, c.conv_upsample, c.conv_last_channels, c.conv_res_blocks)
            self.point_head = ConvHead(*conv, out_channels=(2, 1))
            self.conf_head = ConvHead(*conv, out_channels=(1,))
            self.metric_token = nn.Parameter(torch.zeros(1, 1, 2 * d))
            self.metric_decoder = MetricDecoder(2 * d, c.metric_embed_dim, c.metric_depth,
                                                c.metric_heads, c.metric_out_dim, c.mlp_ratio)
            self.metric_head = nn.Linear(c.metric_out_dim, 1)
            if c.multimodal:
                self.depth_encoder = Encoder(c.img_size, p, d, c.enc_depth, c.enc_heads,
                                             c.mlp_ratio, c.enc_registers, in_chans=2)
                self.depth_emb = nn.Parameter(torch.zeros(1, 1, d))
                self.ray_embed = RayEmbed(p, d)
                self.pose_inject_blk = nn.ModuleList(PoseInjectBlock(d, c.pose_heads, c.mlp_ratio)
                                                     for _ in range(c.pose_inject_blocks))

    # ------------------------------------------------------------------ helpers
    @property
    def parameter_count(self) -> int:
        return sum(t.numel() for t in self.parameters())

    def reset_buffers(self) -> None:
        """Refill ``image_mean`` / ``image_std`` (after a meta-device build and ``to_empty``)."""
        device = self.image_mean.device
        self.image_mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.image_std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    @property
    def takes_conditions(self) -> bool:
        return self.config.variant == "pi3x" and self.config.multimodal

    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 4:
            images = images[None]
        if images.dim() != 5 or images.shape[2] != 3:
            raise Pi3InputError(f"images must be [S,3,H,W] or [B,S,3,H,W] RGB; got {list(images.shape)}")
        if images.shape[1] == 0 or images.shape[0] == 0:
            raise Pi3InputError("π³ needs at least one view; got 0")
        h, w = images.shape[-2:]
        p = self.config.patch_size
        if h % p or w % p or h < p or w < p:
            raise Pi3InputError(f"image height and width must be positive multiples of the patch "
                                f"size {p}; got {h}x{w}")
        return images

    # ------------------------------------------------------------------ stages
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B,S,3,H,W]`` in [0, 1] -> patch tokens ``[B*S, P, D]``."""
        b, s, _, h, w = images.shape
        x = (images.reshape(b * s, 3, h, w) - self.image_mean) / self.image_std
        return self.encoder(x)

    def decode(self, tokens: torch.Tensor, b: int, s: int, grid_hw: tuple[int, int],
               inject: "_Injection | None" = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens ``[B*S, P, D]`` -> (decoder output ``[B*S, R+P, 2D]``, positions
        ``[R+P, 2]``); ``inject`` adds Pi3X's pose injection after the blocks it names."""
        c = self.config
        r, d = c.dec_registers, tokens.shape[-1]
        x = torch.cat((self.register_token.reshape(1, r, d).expand(b * s, r, d).to(tokens.dtype),
                       tokens), dim=1)
        hw = x.shape[1]
        pos = patch_positions(*grid_hw, r, device=x.device)
        rope = RotaryTable(pos, d // c.dec_heads, c.rope_freq)
        rope_all = rope.repeat(s)
        outputs = []
        for i, block in enumerate(self.decoder):
            if i % 2 == 0:
                x = block(x.reshape(b * s, hw, d), rope=rope)
            else:
                x = block(x.reshape(b, s * hw, d), rope=rope_all)
            if inject is not None and i in inject.after:
                x = inject(self.pose_inject_blk[inject.after[i]], x.reshape(b, s, hw, d), r)
            if i >= len(self.decoder) - 2:
                outputs.append(x.reshape(b * s, hw, d))
        return torch.cat(outputs, dim=-1), pos

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor, intrinsics: torch.Tensor | None = None,
                rays: torch.Tensor | None = None, poses: torch.Tensor | None = None,
                depths: torch.Tensor | None = None, mask_add_ray: torch.Tensor | None = None,
                mask_add_pose: torch.Tensor | None = None, mask_add_depth: torch.Tensor | None = None,
                return_intermediates: bool = False,
                autocast_dtype: torch.dtype | None = None) -> Pi3Output:
        """Run the model.

        Args:
            images: ``[B,S,3,H,W]`` or ``[S,3,H,W]`` RGB in [0, 1].
            intrinsics: Pi3X: ``[B,S,3,3]`` pinhole intrinsics in the input's pixels, the
                authors' convention (pixel (u, v) has its centre at (u + 0.5, v + 0.5)).
            rays: Pi3X: ``[B,S,H,W,3]`` viewing directions per pixel (used instead of intrinsics).
            poses: Pi3X: ``[B,S,4,4]`` camera-to-world (OpenCV), any world frame and scale.
            depths: Pi3X: ``[B,S,H,W]`` z-depth, 0 = unknown.
            mask_add_ray, mask_add_pose, mask_add_depth: Pi3X: ``bool [B,S]``, which views use the
                condition (default: all when it is given). A pose mask with one view is dropped
                (a single pose says nothing).
            return_intermediates: fill :attr:`Pi3Output.intermediates`.
            autocast_dtype: run the encoder and decoder under CUDA autocast (the heads in float32).
        """
        images = self._check_images(images)
        b, s, _, h, w = images.shape
        p = self.config.patch_size
        grid_hw = (h // p, w // p)
        conditions = (intrinsics, rays, poses, depths, mask_add_ray, mask_add_pose, mask_add_depth)
        if any(t is not None for t in conditions) and not self.takes_conditions:
            raise Pi3InputError("this model takes images only (conditioning needs Pi3X built with "
                                "multimodal=True)")
        autocast = (torch.autocast("cuda", dtype=autocast_dtype) if autocast_dtype is not None
                    else contextlib.nullcontext())
        inter: dict = {}
        with autocast:
            tokens = self.encode(images)
            inter["encoder_tokens"] = tokens
            inject = None
            if self.config.variant == "pi3x":
                tokens, inject = self._condition(tokens, images, grid_hw, *conditions, inter)
            decoded, pos = self.decode(tokens, b, s, grid_hw, inject)
            rope = RotaryTable(pos, self.config.head_embed_dim // self.config.head_heads,
                               self.config.rope_freq)
            hidden = {name: getattr(self, f"{name}_decoder")(decoded, rope)
                      for name in ("point", "conf", "camera")}
        with torch.autocast("cuda", enabled=False) if autocast_dtype is not None \
                else contextlib.nullcontext():
            hidden = {k: v.float() for k, v in hidden.items()}
            decoded = decoded.float()
            out = self._heads(hidden, decoded, pos, b, s, grid_hw, (h, w))
        if return_intermediates:
            inter.update(decoder_tokens=decoded, pos=pos.expand(b * s, -1, -1),
                         **{f"{k}_hidden": v for k, v in hidden.items()})
            if "metric_hidden" in out:
                inter["metric_hidden"] = out.pop("metric_hidden")
        out.pop("metric_hidden", None)
        return Pi3Output(**out, intermediates=inter if return_intermediates else {})

    def _heads(self, hidden: dict, decoded: torch.Tensor, pos: torch.Tensor, b: int, s: int,
               grid_hw: tuple[int, int], image_hw: tuple[int, int]) -> dict:
        r = self.config.dec_registers
        h, w = image_hw
        poses = self.camera_head(hidden["camera"][:, r:]).view(b, s, 4, 4)
        if self.config.variant == "pi3":
            xyz = self.point_head(hidden["point"][:, r:], grid_hw)
            conf = self.conf_head(hidden["conf"][:, r:], grid_hw)
            z = torch.exp(xyz[..., 2:])
            local = torch.cat((xyz[..., :2] * z, z), dim=-1).view(b, s, h, w, 3)
            points = _apply_pose(poses, local)
            return dict(points=points, local_points=local, conf=conf.view(b, s, h, w, 1),
                        camera_poses=poses)
        xy, z_logit = self.point_head(hidden["point"][:, r:], grid_hw, image_hw)
        (conf,) = self.conf_head(hidden["conf"][:, r:], grid_hw, image_hw)
        xy = xy.permute(0, 2, 3, 1).reshape(b, s, h, w, 2)
        z = torch.exp(z_logit.clamp(max=15.0)).permute(0, 2, 3, 1).reshape(b, s, h, w, 1)
        local = torch.cat((xy * z, z), dim=-1)
        rays = torch.cat((xy, torch.ones_like(z)), dim=-1)
        rays = rays / rays.norm(dim=-1, keepdim=True)
        c = self.config
        context = decoded.reshape(b, -1, decoded.shape[-1])
        rope = RotaryTable(pos, c.metric_embed_dim // c.metric_heads, c.rope_freq).repeat(s)
        metric_hidden = self.metric_decoder(self.metric_token.expand(b, -1, -1), context, rope)
        metric = torch.exp(self.metric_head(metric_hidden)).view(b)
        scale = metric.view(b, 1, 1, 1, 1)
        points = _apply_pose(poses, local) * scale
        poses = torch.cat((poses[..., :3], poses[..., 3:] * metric.view(b, 1, 1, 1)), dim=-1)
        poses[..., 3, 3] = 1.0
        return dict(points=points, local_points=local * scale, conf=conf.permute(0, 2, 3, 1)
                    .reshape(b, s, h, w, 1), camera_poses=poses, rays=rays, metric=metric,
                    metric_hidden=metric_hidden)

    # ------------------------------------------------------------------ Pi3X conditioning
    def _condition(self, tokens, images, grid_hw, intrinsics, rays, poses, depths, mask_ray,
                   mask_pose, mask_depth, inter):
        """Pi3X's conditioning: image tokens + ray and depth embeddings of the views that have
        them, and the pose injection for the decoder (see :func:`normalise_conditions`)."""
        b, s, _, h, w = images.shape
        if not self.takes_conditions:
            inter.update(encode_hidden=tokens,
                         encode_poses=torch.eye(4, device=tokens.device).expand(b, s, 4, 4),
                         encode_norm_factor=torch.ones(b, device=tokens.device),
                         encode_use_depth_mask=torch.zeros(b, s, dtype=torch.bool),
                         encode_use_pose_mask=torch.zeros(b, s, dtype=torch.bool))
            return tokens, None
        cond = normalise_conditions(b, s, h, w, intrinsics, rays, poses, depths, mask_ray,
                                    mask_pose, mask_depth, tokens.device)
        d = tokens.shape[-1]
        tokens = tokens.view(b, s, -1, d)
        if cond.ray_mask.any():
            ray_map = cond.ray_map.reshape(b * s, h, w, 2).permute(0, 3, 1, 2).to(tokens.dtype)
            emb = self.ray_embed(ray_map).view(b, s, -1, d)
            tokens = tokens + emb * cond.ray_mask[..., None, None].to(tokens.dtype)
        if cond.depth_mask.any():
            depth = cond.depth.reshape(b * s, 1, h, w)
            x = torch.cat((depth, (depth > 0).to(depth.dtype)), dim=1).to(tokens.dtype)
            emb = (self.depth_encoder(x) + self.depth_emb).view(b, s, -1, d)
            tokens = tokens + emb * cond.depth_mask[..., None, None].to(tokens.dtype)
        tokens = tokens.reshape(b * s, -1, d)
        inter.update(encode_hidden=tokens, encode_poses=cond.poses,
                     encode_norm_factor=cond.norm_factor, encode_use_depth_mask=cond.depth_mask,
                     encode_use_pose_mask=cond.pose_mask)
        inject = None
        if cond.pose_mask.any():
            inject = _Injection(self.config, cond.poses, cond.pose_mask, grid_hw)
        return tokens, inject


def _apply_pose(poses: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """``R·local + t`` per view: poses ``[B,S,4,4]``, local ``[B,S,H,W,3]``."""
    rotation, translation = poses[..., :3, :3], poses[..., :3, 3]
    return torch.einsum("bsij,bshwj->bshwi", rotation, local) + translation[:, :, None, None]


@dataclass
class Conditions:
    """Pi3X's conditioning after the authors' normalisation.

    Attributes:
        ray_map: ``[B,S,H,W,2]`` (x/z, y/z) of each pixel's ray (zeros when absent).
        depth: ``[B,S,H,W]`` depth divided by the batch item's scale (0 = unknown).
        poses: ``[B,S,4,4]`` camera-to-world relative to view 0 (``P_0^-1 P_i``), translations
            divided by the same scale.
        norm_factor: ``[B]`` the scale.
        ray_mask, pose_mask, depth_mask: ``bool [B,S]`` views whose condition is used.
    """

    ray_map: torch.Tensor
    depth: torch.Tensor
    poses: torch.Tensor
    norm_factor: torch.Tensor
    ray_mask: torch.Tensor
    pose_mask: torch.Tensor
    depth_mask: torch.Tensor


def _mask(mask, given: bool, b: int, s: int, device, name: str) -> torch.Tensor:
    if mask is None:
        return torch.full((b, s), given, dtype=torch.bool, device=device)
    mask = torch.as_tensor(mask, device=device)
    if tuple(mask.shape) != (b, s):
        raise Pi3InputError(f"{name} must be [B,S] = [{b},{s}]; got {list(mask.shape)}")
    return mask.to(torch.bool) & given


def _checked(t, shape: tuple, name: str, device) -> torch.Tensor | None:
    if t is None:
        return None
    t = torch.as_tensor(t, device=device, dtype=torch.float32)
    if tuple(t.shape) != shape:
        want = ",".join(str(n) for n in shape)
        raise Pi3InputError(f"{name} must be [{want}] (B, S{', H, W' if len(shape) > 3 else ''}...); "
                            f"got {list(t.shape)}")
    if not torch.isfinite(t).all():
        raise Pi3InputError(f"{name} has {int((~torch.isfinite(t)).sum())} non-finite value(s) "
                            "(NaN or inf)")
    return t


def normalise_conditions(b: int, s: int, h: int, w: int, intrinsics=None, rays=None, poses=None,
                         depths=None, mask_ray=None, mask_pose=None, mask_depth=None,
                         device=None) -> Conditions:
    """Validate and normalise Pi3X's conditions as the authors' encoder does.

    Masks: a given condition is used for every view unless a mask is passed; an absent one for
    none; a pose mask with exactly one view is dropped. Rays: given rays -> (x/(z+1e-6),
    y/(z+1e-6)); else intrinsics -> the first two components of ``K^-1 (u+0.5, v+0.5, 1)``.
    Depth: f = mean positive depth of the batch item (1 if none), depth / (f + 1e-8). Poses:
    ``P_0^-1 P_i``, translations / f; without any depth mask and S > 1, when the largest
    ``|t_i|`` (i >= 1) reaches 0.02, translations and depth are divided by mean ``|t_i|`` + 1e-8
    and f multiplied by it.

    Raises:
        Pi3InputError: a condition of the wrong shape or with NaN / inf values.
    """
    intrinsics = _checked(intrinsics, (b, s, 3, 3), "intrinsics", device)
    rays = _checked(rays, (b, s, h, w, 3), "rays", device)
    poses = _checked(poses, (b, s, 4, 4), "poses", device)
    depths = _checked(depths, (b, s, h, w), "depths", device)
    if poses is not None and (torch.linalg.det(poses[..., :3, :3]).abs() < 1e-6).any():
        raise Pi3InputError("poses must be invertible camera-to-world matrices")
    if intrinsics is not None and (torch.linalg.det(intrinsics).abs() < 1e-12).any():
        raise Pi3InputError("intrinsics must be invertible 3x3 matrices")
    ray_mask = _mask(mask_ray, rays is not None or intrinsics is not None, b, s, device, "mask_add_ray")
    pose_mask = _mask(mask_pose, poses is not None, b, s, device, "mask_add_pose")
    depth_mask = _mask(mask_depth, depths is not None, b, s, device, "mask_add_depth")
    pose_mask = pose_mask & (pose_mask.sum(1, keepdim=True) != 1)

    if rays is not None:
        ray_map = rays[..., :2] / (rays[..., 2:] + 1e-6)
    elif intrinsics is not None:
        v, u = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32) + 0.5,
                              torch.arange(w, device=device, dtype=torch.float32) + 0.5,
                              indexing="ij")
        pixels = torch.stack((u, v, torch.ones_like(u)), -1)                      # [H,W,3]
        ray_map = torch.einsum("bsij,hwj->bshwi", torch.linalg.inv(intrinsics), pixels)[..., :2]
    else:
        ray_map = torch.zeros(b, s, h, w, 2, device=device)

    depth = depths if depths is not None else torch.zeros(b, s, h, w, device=device)
    positive = depth > 0
    count = positive.flatten(1).sum(1)
    total = torch.where(positive, depth, torch.zeros_like(depth)).flatten(1).sum(1)
    factor = torch.where(count > 0, total / count.clamp(min=1), torch.ones_like(total))
    depth = depth / (factor.view(b, 1, 1, 1) + 1e-8)

    if poses is None:
        poses = torch.eye(4, device=device).expand(b, s, 4, 4)
    rel = (torch.linalg.inv(poses[:, :1]) @ poses).clone()
    rel[..., :3, 3] = rel[..., :3, 3] / factor.view(b, 1, 1)
    if s > 1:
        spans = rel[:, 1:, :3, 3].norm(dim=-1)                                   # [B, S-1]
        mean = spans.mean(1)
        rescale = (~depth_mask.any(1)) & (spans.max(1).values >= 0.02)
        divisor = torch.where(rescale, mean + 1e-8, torch.ones_like(mean))
        rel[..., :3, 3] = rel[..., :3, 3] / divisor.view(b, 1, 1)
        depth = depth / divisor.view(b, 1, 1, 1)
        factor = torch.where(rescale, factor * mean, factor)
    return Conditions(ray_map, depth, rel, factor, ray_mask, pose_mask, depth_mask)


class _Injection:
    """Pi3X's pose injection for one forward pass: after decoder block i (``after``), block
    ``pose_inject_blk[k]`` reads the patch tokens of all views (registers excluded) and its
    output is added to the patch tokens of the views with a pose."""

    def __init__(self, config: Pi3Config, poses: torch.Tensor, pose_mask: torch.Tensor,
                 grid_hw: tuple[int, int]) -> None:
        b, s = pose_mask.shape
        patches = grid_hw[0] * grid_hw[1]
        self.after = config.inject_after
        viewmats = torch.linalg.inv(poses)                                    # camera-from-world
        viewmats = viewmats[:, :, None].expand(b, s, patches, 4, 4).reshape(b, s * patches, 4, 4)
        y, x = torch.meshgrid(torch.arange(grid_hw[0]), torch.arange(grid_hw[1]), indexing="ij")
        positions = torch.stack((y.reshape(-1), x.reshape(-1)), -1).repeat(s, 1).to(poses.device)
        self.prope = ProjectiveRoPE(viewmats, positions, config.embed_dim // config.pose_heads,
                                    config.rope_freq)
        token_mask = pose_mask[:, :, None].expand(b, s, patches).reshape(b, s * patches)
        self.mask = None if bool(pose_mask.all()) else token_mask[:, :, None] & token_mask[:, None, :]
        self.view_mask = pose_mask

    def __call__(self, block: PoseInjectBlock, x: torch.Tensor, registers: int) -> torch.Tensor:
        """``x [B,S,R+P,D]`` -> the same with the injection added to the patch tokens."""
        b, s, hw, d = x.shape
        patches = x[:, :, registers:].reshape(b, s * (hw - registers), d)
        delta = block(patches, self.prope, self.mask).view(b, s, hw - registers, d)
        delta = delta * self.view_mask[:, :, None, None].to(delta.dtype)
        return torch.cat((x[:, :, :registers], x[:, :, registers:] + delta), dim=2)
