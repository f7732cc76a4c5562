"""Scene graphs: which image pairs DUSt3R predicts before global alignment.

A scene graph is named as in the DUSt3R demo:

- ``complete``: every pair; unsymmetrized order (i, j) for i = 0…N−1, j < i.
- ``swin-k`` (cyclic sliding window, k defaults to 3) and ``swin-k-noncyclic``: each view with its
  k successors (modulo N when cyclic). Pairs are stored as (min, max) in a set and listed in that
  set's iteration order, as the reference does.
- ``oneref-r`` (``oneref`` = ``oneref-0``): the reference view r with every other view, (r, j).

With ``symmetrize`` (the default, as the aligner expects) the swapped pairs follow, in the same
order: [(a, b)…] + [(b, a)…]. Pairs are (view-1 index, view-2 index) of the network's two inputs.
"""
from __future__ import annotations

from typing import Literal

SceneGraph = Literal["complete", "swin", "oneref"]
"""The graphs offered as a method option (each with its default window / reference)."""


def make_pairs(n_views: int, scene_graph: str = "complete", symmetrize: bool = True) -> list[tuple[int, int]]:
    """Image-index pairs of a scene graph.

    Args:
        n_views: number of views N (≥ 2).
        scene_graph: ``complete``, ``swin[-k][-noncyclic]`` or ``oneref[-r]``.
        symmetrize: append every pair swapped.
    Returns:
        list of (i, j) view-index pairs.
    Raises:
        ValueError: unknown graph name, bad window/reference index, or fewer than 2 views.
    """
    n = int(n_views)
    if n < 2:
        raise ValueError(f"a scene graph needs at least 2 views, got {n}")
    name = scene_graph.strip()
    pairs: list[tuple[int, int]] = []
    if name == "complete":
        for i in range(n):
            for j in range(i):
                pairs.append((i, j))
    elif name.startswith("swin"):
        parts = name.split("-")
        cyclic = not name.endswith("noncyclic")
        winsize = 3
        if len(parts) >= 2 and parts[1] != "noncyclic":
            try:
                winsize = int(parts[1])
            except ValueError:
                raise ValueError(f"bad sliding-window size in scene graph {scene_graph!r}") from None
        if winsize < 1:
            raise ValueError(f"sliding-window size must be >= 1, got {winsize}")
        ids: set[tuple[int, int]] = set()
        for i in range(n):
            for step in range(1, winsize + 1):
                j = i + step
                if cyclic:
                    j %= n
                if j >= n or j == i:
                    continue
                ids.add((i, j) if i < j else (j, i))
        pairs.extend(ids)
    elif name.startswith("oneref"):
        ref = 0
        if "-" in name:
            try:
                ref = int(name.split("-")[1])
            except ValueError:
                raise ValueError(f"bad reference index in scene graph {scene_graph!r}") from None
        if not 0 <= ref < n:
            raise ValueError(f"reference view {ref} out of range for {n} views")
        pairs = [(ref, j) for j in range(n) if j != ref]
    else:
        raise ValueError(f"unknown scene graph {scene_graph!r}; use complete, swin-k[-noncyclic] or oneref-i")
    if symmetrize:
        pairs = pairs + [(j, i) for i, j in pairs]
    return pairs
