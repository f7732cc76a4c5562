"""Published OpenLRM v1.1 checkpoints (Hugging Face, ``PyTorchModelHubMixin`` layout:
``model.safetensors`` + ``config.json``), registered with :mod:`core.models.weights`."""
from __future__ import annotations

from core.models import weights

CHECKPOINTS = {
    "small": weights.Checkpoint(
        key="openlrm-mix-small-1.1", filename="model.safetensors",
        repo_id="zxhezexin/openlrm-mix-small-1.1", size_mb=446,
        description="OpenLRM mix-small v1.1 (111M parameters)"),
    "base": weights.Checkpoint(
        key="openlrm-mix-base-1.1", filename="model.safetensors",
        repo_id="zxhezexin/openlrm-mix-base-1.1", size_mb=1040,
        description="OpenLRM mix-base v1.1 (260M parameters)"),
    "large": weights.Checkpoint(
        key="openlrm-mix-large-1.1", filename="model.safetensors",
        repo_id="zxhezexin/openlrm-mix-large-1.1", size_mb=1810,
        description="OpenLRM mix-large v1.1"),
}

weights.register(*CHECKPOINTS.values())


def checkpoint_for(variant: str) -> weights.Checkpoint:
    """The registered checkpoint of ``small`` / ``base`` / ``large``."""
    if variant not in CHECKPOINTS:
        raise ValueError(f"unknown LRM variant {variant!r}; choose small, base or large")
    return CHECKPOINTS[variant]
