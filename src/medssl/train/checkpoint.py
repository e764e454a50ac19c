"""Training checkpoints: written atomically, read only with ``torch.load(weights_only=True)``.

``weights_only`` refuses any pickle that would construct arbitrary objects or run code, so an untrusted
checkpoint cannot execute anything; such a file, a truncated file or one of the wrong kind is reported as a
`CheckpointError` with one line of advice.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import torch

from ..errors import CheckpointError
from ..io.atomic import atomic_path
from ..io.torch_files import safe_torch_load


def save_checkpoint(state: Dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file, fsync, rename: a kill at any moment keeps the previous file."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a Python file object keeps the OSError of a failed write as __context__
            torch.save(state, f)
    return Path(path)


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> Dict[str, Any]:
    state = safe_torch_load(path, what)
    if not isinstance(state, dict):
        raise CheckpointError(f"{what} {path} does not hold a dictionary of tensors; it is not a medssl checkpoint")
    return state
