"""Free memory on a device (CUDA free memory, or the system's MemAvailable), for the predictor's choice of
streaming and for the training-memory check (`medssl.train.memory`)."""
from __future__ import annotations

import os

import torch

GB = 1024**3


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
