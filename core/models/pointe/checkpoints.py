"""Published Point-E checkpoints and loading them into :class:`PointE`.

base40M and upsample come from the authors' URLs (openai/point-e ``point_e/models/download.py``);
CLIP ViT-L/14 from the Hugging Face Hub (``openai/clip-vit-large-patch14``, the full CLIP model
whose vision tower is used). A CLIP file in the ``clip`` package's naming (``visual.*``, e.g. a
state dict saved from ``ViT-L-14.pt``) is converted on load.
"""
from __future__ import annotations

import dataclasses

import logging
from pathlib import Path

import torch

from core.models import weights
from core.models.weights import Checkpoint

from .config import PointEConfig
from .modeling_pointe import PointE, build_random

log = logging.getLogger(__name__)

BASE40M = Checkpoint(
    key="pointe-base40M", filename="base_40m.pt",
    url="https://openaipublic.azureedge.net/main/point-e/base_40m.pt", size_mb=162,
    description="Point-E base40M (CLIP image-grid conditioned, 1024 points)", licence="MIT")
UPSAMPLE = Checkpoint(
    key="pointe-upsample", filename="upsample_40m.pt",
    url="https://openaipublic.azureedge.net/main/point-e/upsample_40m.pt", size_mb=162,
    description="Point-E upsample (1024 -> 4096 points)", licence="MIT")
CLIP_VIT_L14 = Checkpoint(
    key="clip-vit-large-patch14", filename="model.safetensors",
    repo_id="openai/clip-vit-large-patch14", size_mb=1710,
    description="CLIP ViT-L/14 (Point-E image conditioning)", licence="MIT")

weights.register(BASE40M, UPSAMPLE, CLIP_VIT_L14)


def _clip_state(path: Path) -> dict:
    """The vision tensors of a CLIP checkpoint (safetensors: only those keys are read)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as handle:
            keys = [k for k in handle.keys()
                    if k.startswith(("vision_model.", "visual_projection.", "visual."))]
            if not keys:
                raise weights.BadCheckpoint(f"{path.name} holds no CLIP vision tensors")
            return {k: handle.get_tensor(k) for k in keys}
    return weights.load_state_dict(path)


def load_pretrained(base_path: str | Path, upsample_path: str | Path, clip_path: str | Path,
                    device: str | torch.device = "cpu", config: PointEConfig | None = None) -> PointE:
    """:class:`PointE` (default: full size) from the three checkpoint files, eval mode on ``device``.

    Raises :class:`core.models.weights.BadCheckpoint` naming any tensor that does not fit.
    """
    model = PointE(config or PointEConfig())
    for module, path in ((model.base, base_path), (model.upsampler, upsample_path)):
        state = weights.load_state_dict(path)
        weights.check_state_dict(module, state)
        module.load_state_dict(state, strict=True)
    model.clip.load_transformers_state_dict(_clip_state(Path(clip_path)), strict=True)
    return model.to(device).eval()


def resolve_all(base_path: str = "", upsample_path: str = "", clip_path: str = "") -> tuple[Path, Path, Path]:
    """Local files of the three checkpoints (raises :class:`weights.MissingWeights`)."""
    return (weights.resolve(BASE40M, base_path or None),
            weights.resolve(UPSAMPLE, upsample_path or None),
            weights.resolve(CLIP_VIT_L14, clip_path or None))


def random_tiny(seed: int = 0, device: str | torch.device = "cpu", published_points: bool = False) -> PointE:
    """The fixture's tiny configuration with seeded random weights.

    ``published_points``: sample the published 1,024 + 3,072 points instead of the fixture's
    64 + 128 (the transformers have no position embedding, so the weights are the same).
    """
    config = PointEConfig.tiny()
    if published_points:
        config = dataclasses.replace(config, base_points=1024, up_points=3072)
    return build_random(config, seed).to(device)
