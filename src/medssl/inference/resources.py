"""Free memory on a device (CUDA free memory, or the system's MemAvailable), for the predictor's choice of
streaming and for the training-memory check (`medssl.train.memory`)."""
from __future__ import annotations

import ctypes
import os

import torch

GB = 1024**3
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def return_freed_memory(threshold: int = 4 * 2**20) -> bool:
    """Ask glibc to serve allocations from ``threshold`` bytes up with their own mappings (``mallopt``), returned
    to the system when freed. By default glibc raises that threshold to 32 MB after freeing such a block, so the
    streamed path's 8-32 MB slabs and chunks came from the heap and its peak stayed resident (issue 19). Fixing it
    also stops that adjustment; ``malloc_trim`` then hands back the free pages the heap already holds (after
    reading and preprocessing). False where there is no glibc (macOS, Windows, musl): nothing changes."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
        libc.malloc_trim(0)
        return ok
    except (OSError, AttributeError):
        return False


def available_gb(device: torch.device) -> float:
    """Free memory on ``device``: CUDA free memory, or the system's MemAvailable for the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / GB
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") / GB
    except (ValueError, OSError, AttributeError):
        return float("inf")
