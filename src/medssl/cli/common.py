"""Argument helpers shared by the sub-commands."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, Optional

from ..errors import InputError


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", choices=["bar", "json", "none"], default="bar",
                   help="progress display: a bar with ETA (default), JSON lines on stdout (for 3D Slicer), or none")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (GPU if available), cpu, cuda or cuda:N")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range; give a number of at least 1")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range; give a value in [0, 1), e.g. 0.5")
    return value


def read_label_names(path: Optional[str]) -> Optional[Dict[int, str]]:
    """``{"1": "liver", "2": "spleen"}`` from a JSON file."""
    if not path:
        return None
    try:
        data = json.loads(Path(path).read_text())
        return {int(k): str(v) for k, v in data.items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"--label-names {path} must be a JSON object like {{\"1\": \"liver\"}} ({exc})") from None


CPU_OOM_HINTS = ("DefaultCPUAllocator: not enough memory", "can't allocate memory", "CUDA out of memory",
                 "CUDA error: out of memory")
OOM_ADVICE = {
    "finetune": "use a smaller --patch-size (e.g. half of it), batch_size: 1 in --config",
    "pretrain": "use --batch-size 1 or a smaller patch_size in --config, or --preset cpu",
    "predict": "use --low-memory, --sw-batch-size 1",
}


def is_out_of_memory(exc: BaseException) -> bool:
    """True for Python's MemoryError, torch's (CUDA) OutOfMemoryError and the CPU allocator's RuntimeError."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")  # never import torch just to classify an error
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and any(h in str(exc) for h in CPU_OOM_HINTS)


def out_of_memory_message(exc: BaseException, command: str) -> str:
    """One line for an out-of-memory error during ``command``: where memory ran out and what to try."""
    on_gpu = "CUDA" in str(exc) or type(exc).__name__ == "OutOfMemoryError"
    advice = OOM_ADVICE.get(command, "use smaller inputs")
    where = "the GPU ran out of memory" if on_gpu else "this machine ran out of memory"
    last = ", or --device cpu" if on_gpu else ", or a machine with more memory"
    return f"{where} during {command}; {advice}{last}"
