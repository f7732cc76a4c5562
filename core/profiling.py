"""Wall time and peak memory of a block of work (CPU RSS or CUDA allocator)."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import psutil


@dataclass
class Measurement:
    seconds: float = 0.0
    peak_rss_bytes: int = 0        # peak resident set size of the process during the block
    peak_rss_delta_bytes: int = 0  # peak RSS minus RSS at the start of the block
    peak_cuda_bytes: int = 0       # torch.cuda.max_memory_allocated during the block (0 on CPU)

    @property
    def peak_memory_bytes(self) -> int:
        """The number a Reconstruction records: CUDA peak when on GPU, else the RSS increase."""
        return self.peak_cuda_bytes or self.peak_rss_delta_bytes


@contextmanager
def measure(interval_s: float = 0.005, cuda: bool = False):
    """Measure the enclosed block; RSS is sampled by a background thread every ``interval_s``.

    Yields a :class:`Measurement` that is filled in when the block ends.
    """
    process = psutil.Process()
    result = Measurement()
    start_rss = process.memory_info().rss
    peak = [start_rss]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            done.wait(interval_s)

    if cuda:
        import torch
        torch.cuda.reset_peak_memory_stats()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    started = time.perf_counter()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - started
        done.set()
        thread.join()
        peak[0] = max(peak[0], process.memory_info().rss)
        result.peak_rss_bytes = int(peak[0])
        result.peak_rss_delta_bytes = int(peak[0] - start_rss)
        if cuda:
            import torch
            result.peak_cuda_bytes = int(torch.cuda.max_memory_allocated())
