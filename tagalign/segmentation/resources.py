"""Time and peak memory of an evaluation, for the comparison tables (not a benchmark: see benchmarks/)."""

from __future__ import annotations

import contextlib
import resource
import sys
from pathlib import Path

import torch

__all__ = ["peak_memory_mb", "reset_peak_memory"]


def reset_peak_memory() -> None:
    """Start a new high-water mark: CUDA's allocator peak, and on Linux the process's peak RSS (``clear_refs`` 5)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(OSError):  # not Linux, or not allowed: the process's lifetime peak is reported
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb() -> tuple[float, str]:
    """The peak since :func:`reset_peak_memory` in MB and what it measures (``cuda`` tensors or ``rss``)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20, "cuda"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10), "rss"
