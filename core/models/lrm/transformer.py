"""Camera embedding and the image-to-triplane transformer of OpenLRM v1.1.

Names follow the checkpoints: ``camera_embedder.mlp.{0,2}``, ``transformer.layers.<i>.{norm1,
cross_attn, norm2, self_attn, norm3, mlp.0, mlp.3}``, ``transformer.norm``. Each ``norm<k>`` is
a camera-modulated LayerNorm (``norm`` + ``mlp.1``: SiLU -> Linear to shift and scale).

Attention is PyTorch multi-head attention without biases: the input projection is one
``in_proj_weight [3D,D]`` when keys/values have the query width, else separate
``q_proj_weight [D,D]``, ``k_proj_weight [D,E]``, ``v_proj_weight [D,E]``.
"""
from __future__ import annotations

import torch
from torch import nn


class CameraEmbedder(nn.Module):
    """Linear -> SiLU -> Linear: ``[B,16]`` raw camera -> ``[B,camera_embed_dim]``.

    The 16 numbers are the source camera's camera-to-world ``[:3,:4]`` row-major (OpenLRM's
    canonical frame) followed by normalised fx, fy, cx, cy.
    """

    def __init__(self, raw_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(raw_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, camera: torch.Tensor) -> torch.Tensor:
        return self.mlp(camera)


class ModLN(nn.Module):
    """adaLN: ``LayerNorm(x)·(1 + scale) + shift`` with ``shift, scale = Linear(SiLU(mod))``.

    Shapes: x ``[B,L,D]``, mod ``[B,M]`` -> ``[B,L,D]``.
    """

    def __init__(self, dim: int, mod_dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(mod_dim, 2 * dim))

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        shift, scale = self.mlp(mod).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class ConditionModulationBlock(nn.Module):
    """Cross-attention to image features, self-attention, MLP; each after a ModLN.

    Shapes: x ``[B,L,D]`` (triplane tokens), cond ``[B,Lc,E]`` (image features),
    mod ``[B,M]`` (camera embedding) -> ``[B,L,D]``.
    """

    def __init__(self, dim: int, cond_dim: int, mod_dim: int, heads: int,
                 mlp_ratio: float = 4.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = ModLN(dim, mod_dim, eps)
        self.cross_attn = nn.MultiheadAttention(dim, heads, bias=False, kdim=cond_dim,
                                                vdim=cond_dim, batch_first=True)
        self.norm2 = ModLN(dim, mod_dim, eps)
        self.self_attn = nn.MultiheadAttention(dim, heads, bias=False, batch_first=True)
        self.norm3 = ModLN(dim, mod_dim, eps)
        hidden = int(dim * mlp_ratio)
        # indices 0 and 3 as in the checkpoints (Linear, GELU, Dropout, Linear, Dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Identity(),
                                 nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        x = x + self.cross_attn(self.norm1(x, mod), cond, cond, need_weights=False)[0]
        y = self.norm2(x, mod)
        x = x + self.self_attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm3(x, mod))


class TransformerDecoder(nn.Module):
    """Stack of :class:`ConditionModulationBlock` and a final LayerNorm (eps 1e-6)."""

    def __init__(self, layers: int, heads: int, dim: int, cond_dim: int, mod_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ConditionModulationBlock(dim, cond_dim, mod_dim, heads)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, cond, mod)
        return self.norm(x)
