"""Measure wall time and peak memory of one step (CPU RSS sampled; CUDA from torch)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil
import torch


@dataclass
class Usage:
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    peak_cuda_mb: float | None = None


@dataclass
class measure:
    """Context manager: ``with measure() as usage: ...`` fills ``usage`` on exit.

    RSS is sampled every ``interval_s`` in a daemon thread: the peak of a process-wide
    counter such as ru_maxrss would carry over from earlier cells.
    """

    interval_s: float = 0.05
    usage: Usage = field(default_factory=Usage)

    def __enter__(self) -> Usage:
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._t0 = time.perf_counter()
        return self.usage

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self.usage.seconds = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._proc.memory_info().rss)
        self.usage.peak_rss_mb = self._peak / 2**20
        if torch.cuda.is_available():
            self.usage.peak_cuda_mb = torch.cuda.max_memory_allocated() / 2**20
