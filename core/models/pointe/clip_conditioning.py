"""CLIP ViT-L/14 image conditioning for Point-E, through ``transformers``.

- :func:`preprocess` reproduces the reference preprocessing: shorter side resized to the CLIP
  size with PIL bicubic (longer side ``int(size * long / short)``), centre crop at
  ``round((L - size) / 2)`` (Python round), RGB / 255, then (x - mean) / std.
- :class:`CLIPImageGrid` wraps ``CLIPVisionModelWithProjection``: ``grid`` is the last hidden
  state *without* ``post_layernorm``, CLS dropped, channels first ``[B, width, grid^2]``;
  ``embed`` is the L2-normalised projected CLS embedding ``[B, proj_dim]``.
- :class:`CLIPTextEmbedding` wraps ``CLIPTextModelWithProjection`` (Shap-E's text300M
  conditioning): the L2-normalised projected embedding at the end-of-text token ``[B, proj_dim]``.
- :func:`openai_clip_to_transformers` renames a ``clip``-package state dict (as in
  ``ViT-L-14.pt``: ``visual.*`` and the text tower's ``token_embedding``, ``positional_embedding``,
  ``transformer.resblocks.*``, ``ln_final``, ``text_projection``) into transformers naming
  (``vision_model.*``, ``visual_projection.weight``, ``text_model.*``, ``text_projection.weight``).

Used by Point-E (vision grid) and Shap-E (vision grid for image300M, text embedding for
text300M): one implementation for both models.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def preprocess_one(image: np.ndarray, size: int = 224) -> torch.Tensor:
    """``uint8 [H, W, 3]`` RGB -> normalised ``float32 [3, size, size]`` pixel values."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 HxWx3 RGB image, got {image.dtype} {list(image.shape)}")
    h, w = image.shape[:2]
    if min(h, w) < 1:
        raise ValueError("empty image")
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    pil = Image.fromarray(np.ascontiguousarray(image))
    if (new_h, new_w) != (h, w):
        pil = pil.resize((new_w, new_h), Image.BICUBIC)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    pil = pil.crop((left, top, left + size, top + size))
    array = np.asarray(pil.convert("RGB"), dtype=np.float32) / 255.0
    pixels = torch.from_numpy(array).permute(2, 0, 1)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=torch.float32)[:, None, None]
    return (pixels - mean) / std


def preprocess(images: list[np.ndarray], size: int = 224) -> torch.Tensor:
    """List of ``uint8 HxWx3`` images -> ``float32 [B, 3, size, size]`` CLIP pixel values."""
    return torch.stack([preprocess_one(image, size) for image in images])


@dataclass(frozen=True, eq=False)
class CLIPGridOutput:
    """The CLIP vision tower's conditioning for a batch of B images (float32 unless the tower
    runs in another dtype).

    Attributes:
        grid: ``[B, width, (S/14)^2]`` last hidden state without ``post_layernorm``, CLS dropped,
            channels first, patch tokens row-major (Point-E's conditioning grid).
        embed: ``[B, proj_dim]`` projected CLS embedding, L2-normalised (unit length).
    """

    grid: torch.Tensor
    embed: torch.Tensor


class CLIPImageGrid(nn.Module):
    """CLIP vision tower giving Point-E's conditioning grid.

    Holds ``model`` (a transformers ``CLIPVisionModelWithProjection``); its state dict names are
    transformers' (``vision_model.*``, ``visual_projection.weight``) under the prefix ``model.``.
    """

    def __init__(self, vision_config) -> None:
        super().__init__()
        from transformers import CLIPVisionModelWithProjection
        self.image_size = int(vision_config.image_size)
        self.model = CLIPVisionModelWithProjection(vision_config)

    @property
    def grid_size(self) -> int:
        return self.image_size // int(self.model.config.patch_size)

    def load_transformers_state_dict(self, state: dict, strict: bool = True) -> None:
        """Load tensors in transformers naming; ``vision_model.*`` / ``visual_projection.*`` are
        picked from a full ``CLIPModel`` checkpoint, ``visual.*`` (clip package) are converted."""
        if any(k.startswith("visual.") for k in state):
            state = openai_clip_to_transformers(state)
        keep = {k: v for k, v in state.items()
                if k.startswith(("vision_model.", "visual_projection."))
                and not k.endswith("position_ids")}
        missing, unexpected = self.model.load_state_dict(keep, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if strict and (missing or unexpected):
            from core.models.weights import BadCheckpoint
            raise BadCheckpoint(f"CLIP vision checkpoint does not fit: missing {missing[:5]}, "
                                f"unexpected {unexpected[:5]}")

    def forward(self, pixel_values: torch.Tensor) -> CLIPGridOutput:
        """pixel_values ``[B, 3, S, S]`` (normalised by :func:`preprocess`) -> :class:`CLIPGridOutput`."""
        out = self.model(pixel_values=pixel_values)
        grid = out.last_hidden_state[:, 1:].permute(0, 2, 1).contiguous()
        embed = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
        return CLIPGridOutput(grid=grid, embed=embed)

    def grid(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Only the conditioning grid ``[B, width, tokens]``."""
        return self.forward(pixel_values).grid


CONTEXT_LENGTH = 77  # CLIP's text context: start token + 75 BPE tokens + end token
SOT_TOKEN, EOT_TOKEN = 49406, 49407


class CLIPTextEmbedding(nn.Module):
    """CLIP text tower giving Shap-E text300M's conditioning.

    Holds ``model`` (a transformers ``CLIPTextModelWithProjection``; state dict names
    ``text_model.*`` and ``text_projection.weight`` under the prefix ``model.``). The reference
    passes no attention mask (the causal mask alone), so padding after the end token does not
    change the embedding.
    """

    def __init__(self, text_config) -> None:
        super().__init__()
        from transformers import CLIPTextModelWithProjection
        self.context_length = int(text_config.max_position_embeddings)
        self.model = CLIPTextModelWithProjection(text_config)

    def load_transformers_state_dict(self, state: dict, strict: bool = True) -> None:
        """Load ``text_model.*`` / ``text_projection.*`` tensors (a full ``CLIPModel`` checkpoint
        is filtered; ``clip``-package names are converted first)."""
        if "token_embedding.weight" in state or "ln_final.weight" in state:
            state = openai_clip_to_transformers(state)
        keep = {k: v for k, v in state.items()
                if k.startswith(("text_model.", "text_projection.")) and not k.endswith("position_ids")}
        missing, unexpected = self.model.load_state_dict(keep, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if strict and (missing or unexpected):
            from core.models.weights import BadCheckpoint
            raise BadCheckpoint(f"CLIP text checkpoint does not fit: missing {missing[:5]}, "
                                f"unexpected {unexpected[:5]}")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens ``int [B, 77]`` ([SOT, BPE ids..., EOT, 0...]) -> unit embedding ``[B, proj_dim]``:
        token + position embeddings -> causal transformer -> final LayerNorm -> the row at the
        end token -> projection, L2-normalised."""
        out = self.model(input_ids=tokens.long())
        return out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)


_LAYER = re.compile(r"^visual\.transformer\.resblocks\.(\d+)\.(.+)$")
_TEXT_LAYER = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")
_TEXT_TOP = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
_LAYER_PARTS = {
    "ln_1.weight": "layer_norm1.weight", "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight", "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias",
}
_TOP = {
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
}


def _convert_layer(part: str, tensor: torch.Tensor, prefix: str, name: str, out: dict) -> None:
    """One residual block tensor (``ln_1``, ``attn.*``, ``mlp.*``) -> transformers names."""
    if part in ("attn.in_proj_weight", "attn.in_proj_bias"):
        kind = "weight" if part.endswith("weight") else "bias"
        for piece, tensor_part in zip(("q", "k", "v"), tensor.chunk(3, dim=0)):
            out[f"{prefix}self_attn.{piece}_proj.{kind}"] = tensor_part.contiguous()
    elif part in _LAYER_PARTS:
        out[prefix + _LAYER_PARTS[part]] = tensor
    else:
        raise ValueError(f"unknown CLIP tensor {name}")


def openai_clip_to_transformers(state: dict) -> dict:
    """Rename the ``clip`` package's tensors to transformers ``CLIPModel`` naming.

    Vision (``visual.*``) and text tower (``token_embedding``, ``positional_embedding``,
    ``transformer.resblocks.<i>``, ``ln_final``, ``text_projection``; ``logit_scale`` kept).
    ``attn.in_proj_weight [3W, W]`` / ``in_proj_bias [3W]`` are split (q, k, v order) into
    ``self_attn.{q,k,v}_proj``; ``proj [W, D]`` / ``text_projection [W, D]`` become
    ``visual_projection.weight`` / ``text_projection.weight [D, W]`` (transposed).
    Raises ValueError on an unknown name.
    """
    out = {}
    for name, tensor in state.items():
        if not name.startswith("visual."):
            if name in _TEXT_TOP:
                out[_TEXT_TOP[name]] = tensor
            elif name == "text_projection":
                out["text_projection.weight"] = tensor.t().contiguous()
            else:
                match = _TEXT_LAYER.match(name)
                if match is None:
                    raise ValueError(f"unknown CLIP tensor {name}")
                index, part = match.groups()
                _convert_layer(part, tensor, f"text_model.encoder.layers.{index}.", name, out)
            continue
        if name in _TOP:
            out[_TOP[name]] = tensor
        elif name == "visual.proj":
            out["visual_projection.weight"] = tensor.t().contiguous()
        else:
            match = _LAYER.match(name)
            if match is None:
                raise ValueError(f"unknown CLIP tensor {name}")
            index, part = match.groups()
            _convert_layer(part, tensor, f"vision_model.encoder.layers.{index}.", name, out)
    return out
