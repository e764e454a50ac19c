"""Name-and-shape matching of stored tensors to a network (PyMIC's and VoCo's fine-tuning rule), decided from
shapes alone.

Model packages and ``medssl pretrain`` exports are copied into a fine-tuning network by `copy_matching`.
`keys_matching` answers which network keys that copy fills from a safetensors file's header, reading no
tensor values, so the network can be built without drawing random values for them (`models.fresh_init`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

import torch

from .converters import adapt_input_channels, input_adaptable
from .package import ALIASES_KEY
from .source import LoadReport

Shape = Tuple[int, ...]


def match_shapes(own: Mapping[str, torch.Tensor], stored: Mapping[str, Sequence[int]], family: Optional[str]
                 ) -> Tuple[LoadReport, List[str]]:
    """(report, loaded keys that ``family``'s input-channel rule adapts) for stored tensors of these shapes.

    ``own``: the network's ``state_dict()`` (values not read: a structure on the meta device will do). A stored
    key the network lacks is unexpected; one of another shape that the rule cannot adapt is a shape mismatch."""
    report, adapted = LoadReport(), []
    for key, shape in stored.items():
        if key not in own:
            report.unexpected.append(key)
            continue
        target = tuple(own[key].shape)
        if tuple(shape) != target:
            if not input_adaptable(family, key, tuple(shape), target):
                report.shape_mismatch.append(key)
                continue
            adapted.append(key)
        report.loaded.append(key)
    loaded = set(report.loaded)
    report.missing = [k for k in own if k not in loaded]
    return report, adapted


def copy_matching(state: Dict[str, torch.Tensor], net: torch.nn.Module, family: Optional[str] = None) -> LoadReport:
    """Copy the tensors whose name and shape match (input layers adapted to another channel count by ``family``'s
    rule, `adapt_input_channels`) into ``net``; report the rest."""
    own = net.state_dict()
    report, adapted = match_shapes(own, shapes_of(state), family)
    to_load = {k: state[k] for k in report.loaded}
    for key in adapted:
        to_load[key] = adapt_input_channels(family, key, state[key], own[key])
    net.load_state_dict(to_load, strict=False)
    return report


def shapes_of(state: Mapping[str, torch.Tensor]) -> Dict[str, Shape]:
    """{key: shape} of a tensor dict, what `match_shapes` compares."""
    return {key: tuple(value.shape) for key, value in state.items()}


def stored_shapes(path: str | Path) -> Dict[str, Shape]:
    """{key: shape} of a safetensors file from its header (no tensor is read); keys a package stored once for
    several names (``ALIASES_KEY``) are listed under each name."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        aliases = json.loads((handle.metadata() or {}).get(ALIASES_KEY, "{}"))
    shapes.update({key: shapes[target] for key, target in aliases.items() if target in shapes})
    return shapes


def keys_loaded(net: torch.nn.Module, shapes: Mapping[str, Sequence[int]], family: Optional[str]) -> Set[str]:
    """The keys of ``net`` (a structure will do) that `copy_matching` fills from stored tensors of these shapes."""
    return set(match_shapes(net.state_dict(keep_vars=True), shapes, family)[0].loaded)


def keys_matching(net: torch.nn.Module, path: str | Path, family: Optional[str]) -> Set[str]:
    """`keys_loaded` from the safetensors file ``path`` (its header only)."""
    return keys_loaded(net, stored_shapes(path), family)
