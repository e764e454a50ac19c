"""Training checkpoints: written atomically, read only with ``torch.load(weights_only=True)``.

``weights_only`` refuses any pickle that would construct arbitrary objects or run code, so an untrusted
checkpoint cannot execute anything; such a file, a truncated file or one of the wrong kind is reported as a
`CheckpointError` with one line of advice.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict

import torch

from ..errors import CheckpointError
from ..io.atomic import atomic_path


def save_checkpoint(state: Dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file, fsync, rename: a kill at any moment keeps the previous file."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a Python file object keeps the OSError of a failed write as __context__
            torch.save(state, f)
    return Path(path)


def safe_torch_load(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist; check the path")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc).split("\n")[0][:160]
        raise CheckpointError(
            f"{what} {path} contains Python objects that could run code when loaded ({detail}); medssl only "
            f"loads plain tensors: get the file from its official source or convert it to a state dict"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        detail = str(exc).split("\n")[0][:160]
        raise CheckpointError(f"{what} {path} cannot be read ({detail}); the file is truncated or not a "
                              f"PyTorch checkpoint: download or copy it again") from None


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> Dict[str, Any]:
    state = safe_torch_load(path, what)
    if not isinstance(state, dict):
        raise CheckpointError(f"{what} {path} does not hold a dictionary of tensors; it is not a medssl checkpoint")
    return state
