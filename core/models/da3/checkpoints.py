"""Published DA3 any-view checkpoints and the single strict loading entry point.

``depth-anything/DA3-SMALL`` (34,299,463 parameters) and ``depth-anything/DA3-BASE``
(135,366,599), Apache-2.0: each a ``model.safetensors`` (names ``model.*``) and a ``config.json``.
``python -m core weights fetch da3-small`` (or ``da3-base``) fetches both files.

The hub writer keeps one name per tied tensor, so the file lacks the six
``model.head.scratch.output_conv2_aux.{1,2,3}.2.{weight,bias}`` entries (one LayerNorm shared by
the four ray-output levels): :func:`fill_tied_aliases` restores them from level 0, then every
name and shape is checked and loaded with ``strict=True``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from core.models import weights

from .config import DA3Config
from .modeling_da3 import DepthAnything3

log = logging.getLogger(__name__)

LICENCE = "Apache-2.0"


def _pair(variant: str, repo: str, size_mb: float) -> tuple[weights.Checkpoint, weights.Checkpoint]:
    label = f"Depth Anything 3 {variant.capitalize()} ({repo}, {LICENCE})"
    model = weights.Checkpoint(key=f"da3-{variant}", filename="model.safetensors", repo_id=repo,
                               size_mb=size_mb, fetch_key=f"da3-{variant}", description=label,
                               licence=LICENCE)
    config = weights.Checkpoint(key=f"da3-{variant}-config", filename="config.json", repo_id=repo,
                                size_mb=0.01, fetch_key=f"da3-{variant}",
                                description=f"{label}: config.json", licence=LICENCE)
    return model, config


DA3_SMALL, DA3_SMALL_CONFIG = _pair("small", "depth-anything/DA3-SMALL", 137)
DA3_BASE, DA3_BASE_CONFIG = _pair("base", "depth-anything/DA3-BASE", 541)
weights.register(DA3_SMALL, DA3_SMALL_CONFIG, DA3_BASE, DA3_BASE_CONFIG)

# variant -> (model file, config.json, default configuration)
VARIANTS = {"small": (DA3_SMALL, DA3_SMALL_CONFIG, DA3Config.small),
            "base": (DA3_BASE, DA3_BASE_CONFIG, DA3Config.base)}
# Names the hub file omits (tied to level 0's LayerNorm): alias -> stored name.
TIED_LEVELS = (1, 2, 3)


def tied_aliases() -> dict[str, str]:
    """``{alias: stored name}`` of the six tensors the hub files leave out."""
    out = {}
    for level in TIED_LEVELS:
        for kind in ("weight", "bias"):
            out[f"model.head.scratch.output_conv2_aux.{level}.2.{kind}"] = \
                f"model.head.scratch.output_conv2_aux.0.2.{kind}"
    return out


def fill_tied_aliases(state: dict) -> dict:
    """``state`` with each absent alias pointing at its stored tensor (no copy)."""
    state = dict(state)
    for alias, stored in tied_aliases().items():
        if alias not in state and stored in state:
            state[alias] = state[stored]
    return state


def model_from_state_dict(state: dict, config: DA3Config | None = None) -> DepthAnything3:
    """A :class:`DepthAnything3` holding ``state``'s tensors (built on the meta device; no
    second copy of the weights).

    Raises:
        core.models.weights.BadCheckpoint: naming missing, unexpected or mis-shaped tensors
            (e.g. a checkpoint of another model).
    """
    config = config or DA3Config()
    state = fill_tied_aliases(state)
    with torch.device("meta"):
        model = DepthAnything3(config)
    weights.check_state_dict(model, state)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def read_config(path: Path | None, variant: str) -> DA3Config:
    """The configuration of ``config.json`` at ``path`` (the variant's default when None).

    Raises:
        core.models.weights.BadCheckpoint: unreadable JSON.
        .config.UnsupportedDA3Model: a model outside the any-view Small/Base family.
    """
    if path is None or not Path(path).is_file():
        return VARIANTS[variant][2]()
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise weights.BadCheckpoint(f"{Path(path).name} is not a readable config.json: {error}") \
            from None
    return DA3Config.from_hub_config(values)


def load_pretrained(variant: str = "small", explicit_path: str | Path = "",
                    device: str | torch.device = "cpu") -> DepthAnything3:
    """Resolve (never download) and load DA3-SMALL or DA3-BASE in float32 on ``device``.

    With ``explicit_path`` the ``config.json`` beside it is read when present.

    Raises:
        core.models.weights.MissingWeights: a file is not on this machine.
        core.models.weights.BadCheckpoint: the file does not fit the configuration.
    """
    model_ckpt, config_ckpt, _ = VARIANTS[variant]
    path = weights.resolve(model_ckpt, explicit_path or None)
    config_path = (Path(path).with_name("config.json") if explicit_path
                   else weights.resolve(config_ckpt))
    config = read_config(config_path, variant)
    log.info("loading Depth Anything 3 %s weights from %s", variant, path)
    state = weights.load_state_dict(path)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return model_from_state_dict(state, config).to(device)
