"""Key helpers for the checkpoint formats the backbone families declare (`..registry.CheckpointFormat`).

A family's converter is a pure function ``(tensor dict of a released file) -> tensor dict keyed like MedSSL's
``SegmentationNet```` (timm's ``checkpoint_filter_fn`` idea): it only renames and selects, never copies or
changes values, so the loader can tell which tensors of the file were used; keys it does not know pass through
unchanged (reported as unused). Its ``infer_arch`` reads the backbone arguments back from the converted shapes.
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, Tuple

import torch

Tensors = Dict[str, torch.Tensor]


def strip_prefix(key: str, prefixes: Tuple[str, ...]) -> str:
    """Remove any leading ``prefixes`` (repeatedly; prefixes only, never inner substrings)."""
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def plain_keys(keys: Iterable[str], prefixes: Tuple[str, ...] = ("module.", "_orig_mod.")) -> list:
    """The keys with training wrappers' prefixes removed (DDP ``module.``, ``torch.compile``'s ``_orig_mod.``)."""
    return [strip_prefix(k, prefixes) for k in keys]


def count_indices(sd: Tensors, pattern: str) -> int:
    """Number of distinct indices ``N`` in keys matching ``pattern`` (a regex with one ``(\\d+)`` group)."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [rx.match(k)] if m})


def window_side(table_rows: int) -> int:
    """Window side ``w`` of a Swin relative-position table with ``(2w-1)^3`` rows."""
    return (round(table_rows ** (1.0 / 3.0)) + 1) // 2
