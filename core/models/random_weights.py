"""Seeded random weights for full-size architectures (``weights = random-full``)."""
from __future__ import annotations

import zlib
from typing import Callable

import torch


def vggt_norm_weight(name: str, param: torch.Tensor) -> bool:
    """VGGT's and π³'s rule for a normalisation scale: a ``*norm*.weight`` tensor."""
    return "norm" in name and name.endswith("weight")


def fill_random_(model: torch.nn.Module, seed: int = 0, layer_scale: float = 0.01,
                 is_norm_weight: Callable[[str, torch.Tensor], bool] = vggt_norm_weight) -> torch.nn.Module:
    """Overwrite every parameter in place: LayerScale (``*gamma``) ``layer_scale``, norm weights 1,
    biases 0, others N(0, 0.02). Each tensor's draw is seeded by its name, so two models with the
    same parameter names get identical weights whatever their registration order."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("gamma"):
                param.fill_(layer_scale)
            elif is_norm_weight(name, param):
                param.fill_(1.0)
            elif name.endswith("bias"):
                param.zero_()
            else:
                generator = torch.Generator(device=param.device)
                generator.manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
                param.normal_(0.0, 0.02, generator=generator)
    return model
