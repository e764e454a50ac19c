"""Checkpoint files of the seed systems: finding the tensor dict, and the tables derived from the backbone families.

Each backbone family declares how its released files are read (`medssl.models.registry.CheckpointFormat`, in
``models/backbones/<family>.py``): converter, file detection, architecture inference, the catalog entry a bare
file is read like and the input-channel rule. This module only derives the lookup tables from the registry
(``CONVERTERS`` by the converter id catalog entries name, ``FORMATS`` by family) and unwraps checkpoint nesting.
A converter only renames and selects (timm's ``checkpoint_filter_fn`` idea); keys it does not know pass through
and are reported as unused, checked against the catalog's ``allowed_unexpected``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import torch

from ..models import BACKBONES
from ..models.checkpoint_keys import Tensors, plain_keys, strip_prefix  # noqa: F401  (strip_prefix: re-exported)
from ..models.registry import CheckpointFormat
WRAPPERS = ("teacher", "network_weights", "model_state_dict", "state_dict", "model", "net", "student")


def is_tensor_dict(obj: Any) -> bool:
    """A non-empty mapping whose values are all tensors."""
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def find_state_dict(obj: Any) -> Optional[Tensors]:
    """The tensor dict inside a loaded checkpoint: the object itself or the first known wrapper holding one."""
    if is_tensor_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in WRAPPERS:
            if is_tensor_dict(obj.get(key)):
                return dict(obj[key])
    return None


# ----------------------------------------------------------------------------------------------- derived tables
class _Derived(Mapping):
    """A read-only view of the backbone registry (``key(family) -> (key, value)`` per family with a format), so a
    family registered by one file shows up in every table without an edit here."""

    def __init__(self, item: Callable[[str, CheckpointFormat], tuple]) -> None:
        self._item = item

    def _table(self) -> Dict[str, Any]:
        return dict(self._item(name, fam.checkpoint) for name, fam in BACKBONES.items() if fam.checkpoint)

    def __getitem__(self, key: str) -> Any:
        return self._table()[key]

    def __iter__(self):
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


FORMATS: Mapping[str, CheckpointFormat] = _Derived(lambda name, fmt: (name, fmt))  # by family
CONVERTERS: Mapping[str, Callable[[Tensors], Tensors]] = _Derived(lambda name, fmt: (fmt.name, fmt.convert))


def detect_family(sd: Tensors) -> Optional[str]:
    """The backbone family whose released files have these keys, or None."""
    keys = plain_keys(sd)
    return next((name for name, fmt in FORMATS.items() if fmt.detect(keys)), None)


def template_entry(family: str, sd: Tensors) -> str:
    """The catalog entry a bare file of ``family`` is read like (VoCo: by feature size and decoder)."""
    fmt = FORMATS[family]
    return fmt.template(fmt.convert(sd))


def input_adaptable(family: Optional[str], key: str, shape: Sequence[int], target: Sequence[int]) -> bool:
    """Whether `adapt_input_channels` turns a stored tensor of ``shape`` into one of ``target`` (shapes only)."""
    fmt = FORMATS.get(family) if family else None
    if fmt is None or fmt.fresh_input_layer or key not in fmt.input_keys or len(shape) != len(target) or len(shape) < 2:
        return False
    c, big_c = int(shape[1]), int(target[1])
    return shape[0] == target[0] and tuple(shape[2:]) == tuple(target[2:]) and not big_c % c and big_c != c


def adapt_input_channels(family: Optional[str], key: str, value: torch.Tensor,
                         target: torch.Tensor) -> Optional[torch.Tensor]:
    """The one input-channel rule, for catalog files, SSL exports and packages alike: for one of ``family``'s
    input keys, repeat a weight ``(F, c, ...)`` to ``(F, C, ...)`` and scale by ``c / C`` (nnssl's rule) when ``C``
    is a multiple of ``c``; None otherwise, and always for a family whose input layers start fresh (VoCo)."""
    if not input_adaptable(family, key, tuple(value.shape), tuple(target.shape)):
        return None
    c, big_c = int(value.shape[1]), int(target.shape[1])
    return value.repeat(1, big_c // c, *([1] * (value.dim() - 2))) * (c / big_c)


def fresh_input_keys(family: Optional[str]) -> tuple:
    """Input keys that start fresh for another channel count (VoCo's rule), else ()."""
    fmt = FORMATS.get(family) if family else None
    return fmt.input_keys if fmt is not None and fmt.fresh_input_layer else ()
