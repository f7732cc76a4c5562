"""Global-attention capture and attention rollout for the attention viewer.

Capturing records, for chosen query tokens, the softmax attention ROWS of every (or chosen)
global block, per head: ``rows[layer] [B, heads, n_queries, S*P]`` — the attention the query
pays to every token of every frame. Token index ``t = frame * P + k`` with ``P = 1 + R + patches``
and ``k`` in the order camera, registers, patches (row-major); see :func:`token_index`.
Nothing of size ``(S*P) x (S*P)`` is stored. When ``keep_qk`` is on, the (post-norm, post-RoPE)
queries and keys of each captured layer are kept too (``2 * B * S*P * C`` numbers per layer),
which is what :func:`attention_rollout` needs.

Rollout (Abnar & Zuidema 2020, with the usual "discard" heuristic), for the captured global
layers ``l_1 < ... < l_L``::

    A_l      = max over heads of the softmax attention of layer l         [N, N]
    A_l      = A_l with the lowest ``discard_fraction`` of each row set to 0
    A_l      = (A_l + I) / 2, then each row divided by its sum
    rollout  = e_q^T  A_{l_L} A_{l_{L-1}} ... A_{l_1}                       [N]

computed right-to-left as row-vector x matrix products, building each A_l a chunk of rows
at a time from the stored queries and keys (rows whose weight is zero are skipped). The
frame-attention blocks between global blocks are not part of the product. Note the discard is
per row (a global quantile cannot be computed chunk by chunk).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch


class AttentionCapture:
    """Collects global-attention rows during one :class:`~.modeling_vggt.VGGT` forward pass.

    Args:
        query_indices: token indices in ``[0, S*P)`` (see :func:`token_index`).
        layers: global blocks to capture (None: all).
        keep_qk: also keep queries and keys (needed by :func:`attention_rollout`).
        store_device: where captured tensors are kept (default: CPU).
        qk_dtype: dtype of the kept queries/keys (float32 by default; float16 halves memory).

    After the forward pass: ``rows[layer]`` is ``[B, heads, n_queries, S*P]`` float32;
    ``qk[layer]`` is ``(q, k)``, each ``[B, heads, S*P, head_dim]``.
    """

    def __init__(self, query_indices: Iterable[int], layers: Iterable[int] | None = None,
                 keep_qk: bool = False, store_device: str | torch.device = "cpu",
                 qk_dtype: torch.dtype = torch.float32) -> None:
        self.query_indices = torch.as_tensor(list(query_indices), dtype=torch.long)
        self.layers = None if layers is None else set(int(l) for l in layers)
        self.keep_qk = keep_qk
        self.store_device = torch.device(store_device)
        self.qk_dtype = qk_dtype
        self.rows: dict[int, torch.Tensor] = {}
        self.qk: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(self, layer: int):
        """The capture function for global block ``layer``, or None when not captured."""
        if self.layers is not None and layer not in self.layers:
            return None

        def capture(q: torch.Tensor, k: torch.Tensor) -> None:
            idx = self.query_indices.to(q.device)
            if len(idx) and int(idx.max()) >= q.shape[2]:
                raise ValueError(f"query index {int(idx.max())} outside the {q.shape[2]} tokens")
            logits = (q[:, :, idx].float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
            self.rows[layer] = logits.softmax(-1).to(self.store_device)
            if self.keep_qk:
                self.qk[layer] = (q.detach().to(self.store_device, self.qk_dtype).contiguous(),
                                  k.detach().to(self.store_device, self.qk_dtype).contiguous())
        return capture


def token_index(frame: int, row: int, col: int, grid_w: int, tokens_per_frame: int,
                patch_start_idx: int = 5) -> int:
    """Global token index of patch (row, col) of ``frame``."""
    return frame * tokens_per_frame + patch_start_idx + row * grid_w + col


def _fused_rows(q: torch.Tensor, k: torch.Tensor, start: int, end: int,
                discard_fraction: float) -> torch.Tensor:
    """Rows ``start:end`` of the processed matrix (max over heads, discard, +I, normalise):
    ``[B, end-start, N]``.

    The softmax runs in place on the one ``[B, heads, rows, N]`` buffer, and the discard keeps the
    top ``N - drop`` values rather than ranking the lowest ``drop`` (the same set barring exact
    ties, several times cheaper for the usual 90 %).
    """
    logits = (q[:, :, start:end].float() * q.shape[-1] ** -0.5) @ k.float().transpose(-1, -2)
    logits -= logits.amax(-1, keepdim=True)
    logits.exp_()
    logits /= logits.sum(-1, keepdim=True)
    a = logits.amax(dim=1)
    del logits
    n = a.shape[-1]
    drop = int(n * discard_fraction)
    if drop > 0:
        top = a.topk(n - drop, dim=-1)
        a = torch.zeros_like(a).scatter_(-1, top.indices, top.values)
    rows = torch.arange(start, end, device=a.device)
    a[:, rows - start, rows] += 1.0
    a *= 0.5
    return a / a.sum(-1, keepdim=True)


@torch.no_grad()
def attention_rollout(capture: AttentionCapture, query_indices: Iterable[int] | None = None,
                      discard_fraction: float = 0.9, chunk_size: int = 256,
                      progress: Callable[[float, str], None] | None = None) -> torch.Tensor:
    """Rolled-out attention of query tokens over all tokens.

    Args:
        capture: a capture run with ``keep_qk=True``.
        query_indices: tokens whose rollout is wanted (default: the captured queries).
        discard_fraction: fraction in [0, 1) of each row's lowest values set to zero.
        chunk_size: rows of each attention matrix built at a time (memory:
            ``B * heads * chunk_size * N`` floats).
        progress: called as ``progress(fraction done, message)`` before each layer (a full-size
            layer at 8 views takes seconds on a CPU).

    Returns:
        ``[B, n_queries, N]`` float32; each row sums to 1.
    """
    if not capture.qk:
        raise ValueError("attention_rollout needs a capture made with keep_qk=True")
    if not 0.0 <= discard_fraction < 1.0:
        raise ValueError(f"discard_fraction must be in [0, 1), got {discard_fraction}")
    queries = capture.query_indices if query_indices is None else torch.as_tensor(
        list(query_indices), dtype=torch.long)
    layers = sorted(capture.qk)
    q0, _ = capture.qk[layers[-1]]
    b, n = q0.shape[0], q0.shape[2]
    v = torch.zeros(b, len(queries), n, device=q0.device)
    v[:, torch.arange(len(queries)), queries.to(q0.device)] = 1.0
    for done, layer in enumerate(reversed(layers)):
        if progress is not None:
            progress(done / len(layers), f"rollout: layer {layer} ({done + 1}/{len(layers)})")
        q, k = capture.qk[layer]
        out = torch.zeros_like(v)
        for start in range(0, n, chunk_size):
            end = min(n, start + chunk_size)
            weights = v[:, :, start:end]
            if not bool(weights.any()):
                continue
            out += weights @ _fused_rows(q, k, start, end, discard_fraction)
        v = out
    return v
