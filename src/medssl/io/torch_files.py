"""Reading PyTorch files safely: ``torch.load(weights_only=True)`` only, with one-line errors.

``weights_only`` refuses any pickle that would construct arbitrary objects or run code, so an untrusted
checkpoint cannot execute anything; such a file, a truncated file or one of the wrong kind is reported as a
`CheckpointError` with one line of advice. Used for training checkpoints and released weights alike.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError


def _unsafe_reason(exc: Exception) -> str:
    """The offending global named by torch's weights-only unpickler, without its terminal formatting."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    return f"it contains {found.group(1)}" if found else text.strip().splitlines()[0][:120]


def safe_torch_load(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` (memory-mapped when the format allows),
    with one-line errors: missing, unsafe (a pickle that could run code), truncated or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist; check the path")
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:1] != b"\x80" and head != b"PK":  # neither torch's zip format (also a truncated one) nor a pickle
        kind = "a gzip file, e.g. an image" if head == b"\x1f\x8b" else "it starts with neither a zip nor a pickle"
        raise CheckpointError(f"{what} {path} is not a PyTorch checkpoint ({kind}); give the .pt/.pth/.ckpt file of "
                              f"the weights")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{what} {path} contains Python objects that could run code when loaded ({_unsafe_reason(exc)}); medssl "
            f"only loads plain tensors: get the file from its official source, or re-save its state dict with "
            f"torch.save if you trust it"
        ) from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file can fail anywhere inside the unpickler
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        raise CheckpointError(f"{what} {path} cannot be read ({type(exc).__name__}: {first}); the file is truncated "
                              f"or not a PyTorch checkpoint: download or copy it again") from None
