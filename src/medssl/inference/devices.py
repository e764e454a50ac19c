"""Device choice: ``auto`` takes the GPU when torch sees one, else the CPU; ``cuda`` without a GPU is an error."""
from __future__ import annotations

import os

import torch

from ..errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` -> a torch device that exists here."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {name} was asked for but torch {torch.__version__} sees no CUDA GPU here; "
                             f"use --device cpu (or auto), or install a CUDA build of torch")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) are visible; use cuda:0")
        return torch.device("cuda", index)
    if name == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown --device {name!r}; use auto, cpu or cuda")


def gpu_summary() -> list:
    """Name and memory of each visible GPU (for ``medssl info`` and the Slicer diagnostics box)."""
    out = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            free, total = torch.cuda.mem_get_info(i)
            out.append({"index": i, "name": props.name, "memory_total_gb": round(total / 2**30, 2),
                        "memory_free_gb": round(free / 2**30, 2), "capability": f"{props.major}.{props.minor}"})
    return out


def usable_cores() -> int:
    """Cores this process may run on (``os.sched_getaffinity``: taskset, cgroup cpusets), else cpu_count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_count(requested: int) -> int:
    """DataLoader workers: at most the cores besides the training process's own (0 on one core)."""
    return max(0, min(int(requested), usable_cores() - 1))
