"""User-facing errors.

Every problem a user can fix (bad input, missing file, wrong option) is raised as a `MedSSLError` whose
message is one line saying what is wrong and what to do. The CLI prints it as ``error: <message>`` and exits
with code 2, without a traceback (``--debug`` shows one). Programming errors stay ordinary exceptions.
"""
from __future__ import annotations

import difflib
import sys
from typing import Iterable


class MedSSLError(Exception):
    """A problem the user can fix; ``str(err)`` is a single line with what is wrong and what to do."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class InputError(MedSSLError):
    """An input file, folder or option is missing, unreadable or inconsistent."""


class PackageError(MedSSLError):
    """A model package is incomplete, tampered with, or from an incompatible version."""


class CheckpointError(MedSSLError):
    """A checkpoint is of the wrong family, truncated, unsafe or does not load into the network."""


class ResourceError(MedSSLError):
    """Not enough memory or disk for the requested run."""


class Cancelled(MedSSLError):
    """The run was cancelled by the user (SIGINT/SIGTERM)."""

    exit_code = 130


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``" Did you mean: a, b?"`` for the closest names, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.4)
    return f" Did you mean: {', '.join(close)}?" if close else ""


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
