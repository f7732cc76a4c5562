"""Loaded models, one copy per process, evicted by memory.

The runner asks :func:`get` for ``(method, model_key, device)``; the first caller loads (others
asking for the same key wait for it instead of loading a second copy) and the model stays
warm until the models held exceed the budget, when the least recently used ones are dropped.
The key is the method's :meth:`~core.models.registry.Method.model_key` (weights choice,
checkpoint, variant...), never free text beyond it.

Budget: ``RECONBENCH_MODEL_CACHE_MB`` (default: half of this machine's memory).
"""
from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)

BUDGET_ENV = "RECONBENCH_MODEL_CACHE_MB"


def budget_bytes() -> int:
    """Bytes the cache may hold: ``RECONBENCH_MODEL_CACHE_MB`` or half the machine's memory."""
    value = os.environ.get(BUDGET_ENV)
    if value:
        return int(float(value) * 2**20)
    import psutil

    return int(psutil.virtual_memory().total // 2)


@dataclass
class Entry:
    model: Any
    size_bytes: int
    load_seconds: float


_entries: "OrderedDict[tuple, Entry]" = OrderedDict()
_key_locks: dict[tuple, threading.Lock] = {}
_lock = threading.Lock()


def get(key: tuple, load: Callable[[], Any], size_of: Callable[[Any], int]) -> tuple[Any, float, bool]:
    """``(model, load_seconds, loaded_now)`` for ``key``, loading it with ``load()`` if absent.

    Concurrent callers with the same key share one load; after loading, least recently used
    entries are evicted until the total ``size_of`` fits the budget (the new model always
    stays, even when it alone exceeds the budget).
    """
    with _lock:
        entry = _entries.get(key)
        if entry is not None:
            _entries.move_to_end(key)
            return entry.model, entry.load_seconds, False
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        with _lock:
            entry = _entries.get(key)
            if entry is not None:
                _entries.move_to_end(key)
                return entry.model, entry.load_seconds, False
        started = time.perf_counter()
        model = load()
        seconds = time.perf_counter() - started
        entry = Entry(model, int(size_of(model)), seconds)
        with _lock:
            _entries[key] = entry
            _evict(keep=key)
        return model, seconds, True


def _evict(keep: tuple) -> None:
    budget = budget_bytes()
    total = sum(e.size_bytes for e in _entries.values())
    for key in list(_entries):
        if total <= budget:
            break
        if key == keep:
            continue
        total -= _entries.pop(key).size_bytes
        log.info("model cache: evicted %s (over %d MB)", key, budget // 2**20)
    gc.collect()


def held() -> list[tuple]:
    """Keys of the models held, least recently used first."""
    with _lock:
        return list(_entries)


def clear() -> None:
    """Drop every held model."""
    with _lock:
        _entries.clear()
    gc.collect()
