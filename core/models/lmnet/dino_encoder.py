"""Improved image encoder: DINOv2 (transformers ``Dinov2Model``) with a projection head.

Only the last ``trainable_blocks`` transformer blocks, the final layer norm and the head train;
the patch embedding and earlier blocks are frozen. The real weights (``facebook/dinov2-small``
or ``-base``) come through :mod:`core.models.weights` (never downloaded here).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.models import weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DINOV2_PRESETS = {
    "facebook/dinov2-small": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6,
                              "intermediate_size": 1536, "image_size": 518, "patch_size": 14},
    "facebook/dinov2-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                             "intermediate_size": 3072, "image_size": 518, "patch_size": 14},
}

CHECKPOINTS = {
    name: weights.Checkpoint(key="lmnet-" + name.split("/")[1], filename="model.safetensors", repo_id=name,
                             size_mb={"facebook/dinov2-small": 88, "facebook/dinov2-base": 346}[name],
                             description=f"DINOv2 backbone for 3D-LMNet ({name})")
    for name in DINOV2_PRESETS
}
weights.register(*CHECKPOINTS.values())


class DinoImageEncoder(nn.Module):
    """``images [B,3,S,S] in [0,1] -> [B,out_dim]``.

    The image is resized to ``input_size`` (a multiple of the patch size; 224 for the real
    backbones), ImageNet-normalised, encoded by DINOv2; the CLS token and the mean patch token
    (both after the final norm) are concatenated and projected by a 2-layer MLP head.
    """

    def __init__(self, dinov2: dict, out_dim: int, trainable_blocks: int, input_size: int | None = None) -> None:
        super().__init__()
        from transformers import Dinov2Config, Dinov2Model

        config = Dinov2Config(**(dinov2 or DINOV2_PRESETS["facebook/dinov2-small"]))
        self.backbone = Dinov2Model(config)
        patch = config.patch_size
        self.input_size = input_size or (224 if config.image_size >= 224 else config.image_size // patch * patch)
        hidden = config.hidden_size
        self.head = nn.Sequential(nn.Linear(2 * hidden, 512), nn.GELU(), nn.Linear(512, out_dim))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.set_trainable_blocks(trainable_blocks)

    def set_trainable_blocks(self, count: int) -> None:
        """Freeze the backbone except its last ``count`` blocks and final norm (0 = all frozen)."""
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        blocks = self.backbone.encoder.layer
        for block in list(blocks)[len(blocks) - count:] if count > 0 else []:
            for p in block.parameters():
                p.requires_grad_(True)
        if count > 0:
            for p in self.backbone.layernorm.parameters():
                p.requires_grad_(True)

    def load_pretrained(self, name: str = "facebook/dinov2-small", explicit_path: str | None = None) -> None:
        """Load the published backbone ``name`` found by :func:`weights.resolve` (never downloads;
        raises MissingWeights with the fetch command). The configuration must be ``name``'s."""
        if name not in CHECKPOINTS:
            raise ValueError(f"unknown DINOv2 backbone {name!r}; known: {', '.join(CHECKPOINTS)}")
        self.load_backbone(weights.resolve(CHECKPOINTS[name], explicit_path))

    def load_backbone(self, path) -> None:
        """Load a published ``Dinov2Model`` safetensors file (names checked, ``dinov2.`` prefix allowed)."""
        state = weights.load_state_dict(path)
        state = {k.removeprefix("dinov2."): v for k, v in state.items()}
        weights.check_state_dict(self.backbone, state, ignore_prefixes=("classifier.",))
        self.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.")})

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        tokens = self.backbone(pixel_values=x).last_hidden_state      # [B,1+P,H]
        features = torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=-1)
        return self.head(features)
