"""Peak-memory figures for a cell, each labelled with where it came from."""

from __future__ import annotations

import resource
import sys

import torch


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, object]:
    """Allocator peaks on CUDA; otherwise the process's peak resident set size from the OS."""
    if device.type == "cuda":
        return {
            "allocated_peak_bytes": torch.cuda.max_memory_allocated(device),
            "reserved_peak_bytes": torch.cuda.max_memory_reserved(device),
            "source": "torch.cuda allocator",
        }
    # ru_maxrss is KiB on Linux and bytes on macOS; it is the whole process's lifetime peak.
    scale = 1 if sys.platform == "darwin" else 1024
    return {"rss_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
            "source": "getrusage ru_maxrss (process lifetime peak)"}
