"""Published checkpoints of the three stages and how to find them on this machine.

- detection: Grounding DINO in Hugging Face transformers (``IDEA-Research/grounding-dino-tiny``,
  ``-base``); a model folder holds ``config.json``, ``model.safetensors``,
  ``preprocessor_config.json`` and the BERT tokenizer files.
- segmentation: the official Segment Anything ``.pth`` files (``vit_b``, ``vit_l``, ``vit_h``).
- depth: Depth Anything (V1 and V2, ``-hf`` repositories) in transformers.

Every file is a :class:`core.models.weights.Checkpoint` with its model's licence, so ``python -m
core weights fetch grounding-dino sam depth-anything`` downloads the default variant of each stage
(one fetch key names all files of one model) and :func:`model_folder` finds them again, never
downloading: ``$RECONBENCH_WEIGHTS/<key>/<file>``, ``$RECONBENCH_WEIGHTS/<file>`` or the Hugging
Face cache. :func:`missing_files` lists what a model still lacks.

Licences as the authors publish them: Grounding DINO Apache-2.0; Segment Anything Apache-2.0;
Depth Anything V1 (all sizes) and V2 Small Apache-2.0, V2 Base and Large CC BY-NC 4.0.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.models import weights
from core.models.weights import Checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HFModel:
    """A transformers model on the Hub.

    Attributes:
        key: choice name shown in the options (``grounding-dino-tiny``...).
        repo_id: Hub repository.
        files: files ``from_pretrained`` needs (the first is ``config.json``).
        size_mb: approximate download size.
        fetch_key: name for ``python -m core weights fetch``.
        label: one line for users.
        licence: the weights' licence as the authors publish it.
    """

    key: str
    repo_id: str
    files: tuple[str, ...]
    size_mb: float
    fetch_key: str
    label: str
    licence: str

    def checkpoints(self) -> list[Checkpoint]:
        """One Checkpoint per file; the config's key is the model key, the others ``key.stem``."""
        out = []
        for name in self.files:
            key = self.key if name == "config.json" else f"{self.key}.{name.split('.')[0]}"
            size = self.size_mb if name.endswith(".safetensors") else 0.0
            out.append(Checkpoint(key=key, filename=name, repo_id=self.repo_id, size_mb=size,
                                  description=f"{self.label} ({name})", fetch_key=self.fetch_key,
                                  licence=self.licence))
        return out

    @property
    def weights_checkpoint(self) -> Checkpoint:
        """The Checkpoint of the weights file (``model.safetensors``): the model's one checkpoint
        for provenance and licences."""
        return next(c for c in self.checkpoints() if c.filename.endswith(".safetensors"))


_DINO_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json",
               "tokenizer_config.json")
_DEPTH_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")

_APACHE = "Apache-2.0"
_CC_BY_NC = "CC BY-NC 4.0"

# The option types' choices; each is a key of its table below (tests check they agree).
DetectorName = Literal["grounding-dino-tiny", "grounding-dino-base"]
SegmenterName = Literal["sam-vit-b", "sam-vit-l", "sam-vit-h"]
DepthModelName = Literal["depth-anything-v2-small", "depth-anything-v2-base", "depth-anything-v2-large",
                         "depth-anything-small", "depth-anything-base", "depth-anything-large"]

DETECTORS: dict[str, HFModel] = {
    "grounding-dino-tiny": HFModel("grounding-dino-tiny", "IDEA-Research/grounding-dino-tiny", _DINO_FILES,
                                   690, "grounding-dino", "Grounding DINO (Swin-T)", _APACHE),
    "grounding-dino-base": HFModel("grounding-dino-base", "IDEA-Research/grounding-dino-base", _DINO_FILES,
                                   930, "grounding-dino-base", "Grounding DINO (Swin-B)", _APACHE),
}

DEPTH_MODELS: dict[str, HFModel] = {
    "depth-anything-v2-small": HFModel("depth-anything-v2-small", "depth-anything/Depth-Anything-V2-Small-hf",
                                       _DEPTH_FILES, 99, "depth-anything", "Depth Anything V2 Small", _APACHE),
    "depth-anything-v2-base": HFModel("depth-anything-v2-base", "depth-anything/Depth-Anything-V2-Base-hf",
                                      _DEPTH_FILES, 390, "depth-anything-v2-base", "Depth Anything V2 Base",
                                      _CC_BY_NC),
    "depth-anything-v2-large": HFModel("depth-anything-v2-large", "depth-anything/Depth-Anything-V2-Large-hf",
                                       _DEPTH_FILES, 1340, "depth-anything-v2-large", "Depth Anything V2 Large",
                                       _CC_BY_NC),
    "depth-anything-small": HFModel("depth-anything-small", "LiheYoung/depth-anything-small-hf",
                                    _DEPTH_FILES, 99, "depth-anything-v1-small", "Depth Anything V1 Small", _APACHE),
    "depth-anything-base": HFModel("depth-anything-base", "LiheYoung/depth-anything-base-hf",
                                   _DEPTH_FILES, 390, "depth-anything-v1-base", "Depth Anything V1 Base", _APACHE),
    "depth-anything-large": HFModel("depth-anything-large", "LiheYoung/depth-anything-large-hf",
                                    _DEPTH_FILES, 1340, "depth-anything-v1-large", "Depth Anything V1 Large", _APACHE),
}

_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
SEGMENTERS: dict[str, tuple[str, Checkpoint]] = {
    "sam-vit-b": ("vit_b", Checkpoint("sam-vit-b", "sam_vit_b_01ec64.pth", url=_SAM_URL + "sam_vit_b_01ec64.pth",
                                      size_mb=375, description="Segment Anything ViT-B", fetch_key="sam",
                                      licence=_APACHE)),
    "sam-vit-l": ("vit_l", Checkpoint("sam-vit-l", "sam_vit_l_0b3195.pth", url=_SAM_URL + "sam_vit_l_0b3195.pth",
                                      size_mb=1250, description="Segment Anything ViT-L", licence=_APACHE)),
    "sam-vit-h": ("vit_h", Checkpoint("sam-vit-h", "sam_vit_h_4b8939.pth", url=_SAM_URL + "sam_vit_h_4b8939.pth",
                                      size_mb=2560, description="Segment Anything ViT-H", licence=_APACHE)),
}


def register_all() -> None:
    """Register every stage's checkpoints with :mod:`core.models.weights`."""
    for table in (DETECTORS, DEPTH_MODELS):
        for model in table.values():
            weights.register(*model.checkpoints())
    weights.register(*(checkpoint for _, checkpoint in SEGMENTERS.values()))


register_all()


def model_folder(model: HFModel) -> Path:
    """A local folder ``from_pretrained`` can read for ``model`` (never downloads).

    When ``$RECONBENCH_WEIGHTS/<key>/`` holds every file, or every file resolves into one folder
    (the Hugging Face cache snapshot), that folder is returned; otherwise (files fetched into
    per-file folders) a folder of symbolic links is assembled under ``~/.cache/reconbench``.
    Raises :class:`MissingWeights` naming the first missing file and the fetch command.
    """
    folder = weights.weights_folder()
    if folder is not None and all((folder / model.key / name).is_file() for name in model.files):
        return folder / model.key  # a whole snapshot placed in $RECONBENCH_WEIGHTS/<key>/
    paths = [weights.resolve(checkpoint) for checkpoint in model.checkpoints()]
    if len({p.parent for p in paths}) == 1:
        return paths[0].parent
    digest = hashlib.sha256("|".join(str(p) for p in paths).encode()).hexdigest()[:12]
    folder = Path.home() / ".cache" / "reconbench" / "assembled" / f"{model.key}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        link = folder / path.name
        if not link.exists():
            os.symlink(path.resolve(), link)
    return folder


def missing_files(model: HFModel) -> list[Checkpoint]:
    """The Checkpoints (one per file) of ``model`` that are not on this machine; empty when
    :func:`model_folder` can load it (a whole snapshot in ``$RECONBENCH_WEIGHTS/<key>/``, or every
    file resolving on its own)."""
    folder = weights.weights_folder()
    if folder is not None and all((folder / model.key / name).is_file() for name in model.files):
        return []
    return [checkpoint for checkpoint in model.checkpoints() if not weights.is_available(checkpoint)]


def sam_checkpoint(key: str, explicit_path: str = "") -> Path:
    """Local ``.pth`` of SAM variant ``key`` (explicit path first); raises MissingWeights."""
    return weights.resolve(SEGMENTERS[key][1], explicit_path or None)


class ModelWithProcessor:
    """A transformers model (eval mode, on ``device``) with its image/text processor."""

    def __init__(self, model, processor, device: str = "cpu", name: str = "") -> None:
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.name = name

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @classmethod
    def from_local(cls, spec: HFModel, model_cls, processor_cls, device: str = "cpu"):
        """Load ``spec`` with ``model_cls`` / ``processor_cls`` from :func:`model_folder` (never
        downloads; raises MissingWeights)."""
        folder = model_folder(spec)
        log.info("loading %s from %s", spec.key, folder)
        return cls(model_cls.from_pretrained(folder, local_files_only=True),
                   processor_cls.from_pretrained(folder, local_files_only=True), device, spec.key)
