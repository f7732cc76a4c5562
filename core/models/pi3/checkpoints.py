"""Published π³ / Pi3X checkpoints and the strict loader.

``yyfz233/Pi3`` (958,696,732 parameters, 1210 tensors) and ``yyfz233/Pi3X`` (1,360,032,433
parameters, 1873 tensors), each a ``model.safetensors`` whose names are :class:`~.modeling_pi3.Pi3`'s
(the ``image_mean`` / ``image_std`` buffers included). Weights licence: CC BY-NC 4.0
(non-commercial; the authors' README, stricter than the Pi3 hub page's tag).

A Pi3X built without its conditioning modules (``multimodal=False``) skips exactly the
checkpoint's ``depth_encoder.``, ``depth_emb``, ``ray_embed.`` and ``pose_inject_blk.`` tensors
(the authors' ``disable_multimodal()``); everything else loads strictly.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from core.models import weights

from .config import Pi3Config
from .modeling_pi3 import MULTIMODAL_PREFIXES, Pi3

log = logging.getLogger(__name__)

LICENCE = "CC BY-NC 4.0"
PI3 = weights.Checkpoint(
    key="pi3", filename="model.safetensors", repo_id="yyfz233/Pi3", size_mb=3835, fetch_key="pi3",
    description="π³ (yyfz233/Pi3, weights non-commercial)", licence=LICENCE)
PI3X = weights.Checkpoint(
    key="pi3x", filename="model.safetensors", repo_id="yyfz233/Pi3X", size_mb=5440,
    fetch_key="pi3x", description="Pi3X (yyfz233/Pi3X, weights non-commercial)", licence=LICENCE)
weights.register(PI3, PI3X)
CHECKPOINTS = {"pi3": PI3, "pi3x": PI3X}


def model_from_state_dict(state: dict, config: Pi3Config) -> Pi3:
    """A :class:`Pi3` holding ``state``'s tensors (no second copy of the weights).

    Raises:
        core.models.weights.BadCheckpoint: naming missing, unexpected or mis-shaped tensors.
    """
    with torch.device("meta"):
        model = Pi3(config)
    skip = MULTIMODAL_PREFIXES if config.variant == "pi3x" and not config.multimodal else ()
    weights.check_state_dict(model, state, ignore_prefixes=skip)
    kept = {k: v for k, v in state.items() if not (skip and k.startswith(skip))}
    model.load_state_dict(kept, strict=True, assign=True)
    return model.eval()


def load_pretrained(variant: str = "pi3", explicit_path: str | Path = "",
                    device: str | torch.device = "cpu", multimodal: bool = True,
                    config: Pi3Config | None = None) -> Pi3:
    """Resolve (never download) and load a published checkpoint in float32 on ``device``.

    Raises:
        core.models.weights.MissingWeights: the file is not on this machine.
        core.models.weights.BadCheckpoint: the file is not a state dict of this model.
    """
    path = weights.resolve(CHECKPOINTS[variant], explicit_path or None)
    log.info("loading %s weights from %s", variant, path)
    state = weights.load_state_dict(path)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    config = dataclasses.replace(config or Pi3Config(variant=variant), variant=variant,
                                 multimodal=multimodal)
    return model_from_state_dict(state, config).to(device)
