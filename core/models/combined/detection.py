"""Stage 1, text-prompted detection: Grounding DINO (Hugging Face transformers).

``Detector.detect(image, prompt)`` returns every box whose score passes the box threshold (and
whose prompt tokens pass the text threshold), sorted by score, in pixels of the input image.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from core.models.combined.checkpoints import DETECTORS, ModelWithProcessor


@dataclass
class Detections:
    """Boxes found for one prompt in one image.

    Attributes:
        boxes: ``float32 [K,4]`` (x0, y0, x1, y1) in pixels of the input image, best first.
        scores: ``float32 [K]`` box scores in [0,1], descending.
        labels: K prompt phrases matched by each box.
        prompt: the prompt as given to the model (lower case, ending with ``.``).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: list[str] = field(default_factory=list)
    prompt: str = ""

    def __len__(self) -> int:
        return len(self.scores)

    def choose(self, index: int = -1) -> int:
        """Index of the box to use: ``index`` when given (>= 0), else the top-scoring one (0).

        Raises ValueError when there is no box or ``index`` is out of range.
        """
        if len(self) == 0:
            raise ValueError(f"no box detected for the prompt {self.prompt!r}: lower the box/text "
                             "thresholds or change the prompt")
        if index < 0:
            return 0
        if index >= len(self):
            raise ValueError(f"box {index} was asked for but only {len(self)} box(es) were detected")
        return int(index)


def normalise_prompt(prompt: str) -> str:
    """Grounding DINO expects lower-case phrases separated and ended by a period."""
    text = " ".join(str(prompt).lower().split()).strip()
    if not text.strip("."):
        raise ValueError("the detection prompt is empty: name the object to find (e.g. 'toy')")
    return text if text.endswith(".") else text + "."


_SPECIAL_TOKENS = re.compile(r"\[(?:CLS|SEP|PAD|UNK|MASK)\]")


def clean_label(label: str) -> str:
    """A matched phrase as a person reads it: the tokenizer's special tokens (``[SEP]``,
    ``[CLS]``...) and the prompt's closing full stop removed (``"toy. [SEP]"`` -> ``"toy"``)."""
    text = " ".join(_SPECIAL_TOKENS.sub(" ", str(label)).split())
    return text.rstrip(" .")


class Detector(ModelWithProcessor):
    """A Grounding DINO model with its processor (image resizing/normalising + BERT tokenizer)."""

    def detect(self, image: np.ndarray, prompt: str, box_threshold: float = 0.35,
               text_threshold: float = 0.25) -> Detections:
        """Boxes of ``prompt`` in ``image`` (``uint8 HxWx3``), best first."""
        text = normalise_prompt(prompt)
        h, w = image.shape[:2]
        inputs = self.processor(images=image, text=text, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        with warnings.catch_warnings():  # transformers warns about the deprecated "labels" key it still fills
            warnings.simplefilter("ignore", FutureWarning)
            result = self.processor.post_process_grounded_object_detection(
                outputs, inputs["input_ids"], threshold=float(box_threshold), text_threshold=float(text_threshold),
                target_sizes=[(h, w)])[0]
        scores = result["scores"].float().cpu().numpy()
        boxes = result["boxes"].float().cpu().numpy().reshape(-1, 4)
        raw_labels = result["text_labels"] if "text_labels" in result else result.get("labels", [])
        labels = [clean_label(label) for label in raw_labels]
        order = np.argsort(-scores, kind="stable")
        boxes = boxes[order]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w - 1)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h - 1)
        return Detections(boxes=boxes.astype(np.float32), scores=scores[order].astype(np.float32),
                          labels=[labels[i] for i in order] if len(labels) == len(scores) else [],
                          prompt=text)


def load_detector(key: str, device: str = "cpu") -> Detector:
    """The pretrained Grounding DINO ``key`` (from the local cache only; raises MissingWeights)."""
    from transformers import AutoProcessor, GroundingDinoForObjectDetection

    return Detector.from_local(DETECTORS[key], GroundingDinoForObjectDetection, AutoProcessor, device)


def tiny_detector(seed: int = 0, device: str = "cpu") -> Detector:
    """Grounding DINO in its tiny random configuration (see :mod:`.tiny`)."""
    from transformers import GroundingDinoForObjectDetection

    from core.models.combined import tiny

    tokenizer = tiny.tiny_tokenizer()
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(tiny.tiny_grounding_dino_config(len(tokenizer)))
    return Detector(model, tiny.tiny_grounding_dino_processor(tokenizer), device, "grounding-dino (random tiny)")
