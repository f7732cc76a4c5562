"""Published VGGT checkpoints and the single loading entry point.

``facebook/VGGT-1B`` (non-commercial licence) and ``facebook/VGGT-1B-Commercial`` share the
architecture (:class:`~.config.VGGTConfig` defaults) and tensor names, 1,256,537,516 parameters
including the track head (``track_head.*``, 65,941,396).

``with_track_head=True`` loads everything with ``strict=True``. ``with_track_head=False`` (the
default: point-cloud runs do not track, and the head is 264 MB in float32) still checks the
checkpoint's ``track_head.*`` tensors against the track head's names and shapes, then drops them;
a checkpoint without any ``track_head.*`` tensor is accepted only then.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from core.models import weights

from .config import VGGTConfig
from .modeling_vggt import VGGT

log = logging.getLogger(__name__)

VGGT_1B = weights.Checkpoint(
    key="vggt-1b", filename="model.pt", repo_id="facebook/VGGT-1B", size_mb=5030, fetch_key="vggt",
    description="VGGT-1B (facebook/VGGT-1B, non-commercial licence)",
    licence="CC BY-NC 4.0")
VGGT_1B_COMMERCIAL = weights.Checkpoint(
    key="vggt-1b-commercial", filename="model.pt", repo_id="facebook/VGGT-1B-Commercial",
    size_mb=5030, description="VGGT-1B-Commercial (facebook/VGGT-1B-Commercial, gated)",
    licence="VGGT commercial licence (Meta; gated on the Hub)")
weights.register(VGGT_1B, VGGT_1B_COMMERCIAL)

CHECKPOINTS = {"vggt-1b": VGGT_1B, "vggt-1b-commercial": VGGT_1B_COMMERCIAL}
TRACK_PREFIX = "track_head."


def materialize_buffers(model: VGGT, device: torch.device | str = "cpu") -> None:
    """Recreate the non-persistent buffers (ImageNet mean/std) after a meta-device build."""
    from .aggregator import IMAGENET_MEAN, IMAGENET_STD
    agg = model.aggregator
    agg._mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 1, 3, 1, 1)
    agg._std = torch.tensor(IMAGENET_STD, device=device).view(1, 1, 3, 1, 1)


def model_from_state_dict(state: dict, config: VGGTConfig | None = None,
                          with_track_head: bool = False) -> VGGT:
    """Build a VGGT holding ``state``'s tensors (no second copy of the weights is made).

    Args:
        state: the checkpoint's tensors.
        config: sizes (default VGGT-1B).
        with_track_head: build and load the track head too; otherwise the checkpoint's
            ``track_head.*`` tensors (if any) are checked, then dropped.

    Raises:
        core.models.weights.BadCheckpoint: naming missing, unexpected or mis-shaped tensors
            (``track_head.*`` included).
    """
    config = config or VGGTConfig()
    has_track = any(k.startswith(TRACK_PREFIX) for k in state)
    with torch.device("meta"):
        model = VGGT(config, with_track_head=with_track_head or has_track)
    weights.check_state_dict(model, state, ignore_prefixes=() if has_track else (TRACK_PREFIX,))
    if not with_track_head:
        model.track_head = None
    kept = {k: v for k, v in state.items() if with_track_head or not k.startswith(TRACK_PREFIX)}
    model.load_state_dict(kept, strict=True, assign=True)
    device = next(iter(kept.values())).device
    materialize_buffers(model, device)
    return model.eval()


def load_pretrained(checkpoint: weights.Checkpoint = VGGT_1B, explicit_path: str | Path = "",
                    device: str | torch.device = "cpu", config: VGGTConfig | None = None,
                    with_track_head: bool = False) -> VGGT:
    """Resolve (never download) and load a published checkpoint in float32 on ``device``
    (with its track head when ``with_track_head``, see :func:`model_from_state_dict`).

    Raises:
        core.models.weights.MissingWeights: the file is not on this machine.
        core.models.weights.BadCheckpoint: the file is not a VGGT-1B state dict.
    """
    path = weights.resolve(checkpoint, explicit_path or None)
    log.info("loading VGGT weights from %s", path)
    state = weights.load_state_dict(path)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return model_from_state_dict(state, config, with_track_head).to(device)
