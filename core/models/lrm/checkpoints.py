"""Published OpenLRM v1.1 checkpoints by variant (Hugging Face, ``PyTorchModelHubMixin`` layout:
``model.safetensors`` + ``config.json``; weights CC BY-NC 4.0), registered with
:mod:`core.models.weights`."""
from __future__ import annotations

from core.models import weights

CHECKPOINTS = {
    "small": weights.Checkpoint(
        key="openlrm-mix-small-1.1", filename="model.safetensors",
        repo_id="zxhezexin/openlrm-mix-small-1.1", size_mb=446,
        description="OpenLRM mix-small v1.1 (111M parameters)", licence="CC BY-NC 4.0"),
    "base": weights.Checkpoint(
        key="openlrm-mix-base-1.1", filename="model.safetensors",
        repo_id="zxhezexin/openlrm-mix-base-1.1", size_mb=1040,
        description="OpenLRM mix-base v1.1 (260M parameters)", licence="CC BY-NC 4.0"),
    "large": weights.Checkpoint(
        key="openlrm-mix-large-1.1", filename="model.safetensors",
        repo_id="zxhezexin/openlrm-mix-large-1.1", size_mb=1810,
        description="OpenLRM mix-large v1.1", licence="CC BY-NC 4.0"),
}

weights.register(*CHECKPOINTS.values())

