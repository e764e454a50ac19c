"""The export of a pretraining run: ``RUN/export/{backbone.safetensors, plan.json, metadata.json}``.

``backbone.safetensors`` holds a `medssl.models.SegmentationNet`-style state dict of the plan's architecture:
``encoder.*`` always, ``decoder.*`` when the method pretrains the decoder (Volume Fusion). ``plan.json`` is
the pretraining plan (no labels). ``metadata.json`` has ``format: "medssl-backbone"``, the method, the number
of steps, the data fingerprint and the sha256 of the weights and of the plan (nnssl's adaptation plan idea:
the backbone carries the preprocessing it was trained with).

`save_export` writes the folder atomically and verifies it (the plan's network is rebuilt and every
``encoder.*`` tensor must load into it: a run whose result could not be fine-tuned fails at once).
`resolve_ssl_export` turns ``RUN/export/backbone.safetensors``, ``RUN/export`` or ``RUN`` into a
`BackboneSource` for ``medssl finetune --backbone``: the plan's architecture, its spacing, orientation,
normalisation and patch size as defaults, and ``init_weights`` that copies matching tensors (input layers are
repeated over extra input channels, nnssl's rule) and raises `CheckpointError` unless every encoder tensor
of the fine-tuning network loaded.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from ..errors import CheckpointError, PackageError
from ..io.atomic import atomic_dir
from ..plan import Plan, PlanDefaults
from .converters import fresh_input_keys
from .matching import copy_matching, keys_matching, match_shapes, shapes_of
from .source import BackboneSource, LoadReport
from .package import sha256_file, versions

EXPORT_FORMAT = "medssl-backbone"
EXPORT_VERSION = 1
WEIGHTS, PLAN, METADATA = "backbone.safetensors", "plan.json", "metadata.json"


def save_export(folder: str | Path, plan: Plan, state: Dict[str, torch.Tensor], method: str, steps: int,
                fingerprint: Dict[str, Any], extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write and verify the export folder (see the module docstring); returns its path."""
    from safetensors.torch import save_file

    if not any(k.startswith("encoder.") for k in state):
        raise ValueError("an export needs encoder.* tensors")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        (tmp / PLAN).write_text(plan.to_json())
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        meta = {"format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "method": method, "steps": int(steps),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "fingerprint": fingerprint,
                "includes_decoder": any(k.startswith("decoder.") for k in tensors),
                "weights_sha256": sha256_file(tmp / WEIGHTS), "plan_sha256": sha256_file(tmp / PLAN),
                "versions": versions(), "licence": "trained with medssl on the user's data; the data's terms apply",
                **(extra or {})}
        (tmp / METADATA).write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
        verify_export(tmp)
    return folder


def export_folder(spec: str | Path) -> Optional[Path]:
    """The export folder named by ``spec`` (weights file, export folder or run folder), or None."""
    p = Path(spec)
    candidates = [p.parent] if p.is_file() and p.name == WEIGHTS else [p, p / "export"] if p.is_dir() else []
    for folder in candidates:
        meta = folder / METADATA
        if meta.is_file() and (folder / WEIGHTS).is_file():
            try:
                if json.loads(meta.read_text()).get("format") == EXPORT_FORMAT:
                    return folder
            except (OSError, ValueError):
                return None
    return None


def is_ssl_export(spec: str) -> bool:
    return export_folder(spec) is not None


def load_export(folder: str | Path, tensors: bool = True) -> Tuple[Plan, Dict[str, Any], Dict[str, torch.Tensor]]:
    """(plan, metadata, tensors), hash-checked (``tensors`` False: the tensors are not read, {})."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = json.loads((folder / METADATA).read_text())
    if int(meta.get("format_version", 0)) > EXPORT_VERSION:
        raise PackageError(f"backbone export {folder} was written by a newer medssl; upgrade medssl")
    for name, key in ((WEIGHTS, "weights_sha256"), (PLAN, "plan_sha256")):
        if not (folder / name).is_file() or sha256_file(folder / name) != meta.get(key):
            raise PackageError(f"backbone export {folder}: {name} is missing or does not match the sha256 in "
                               f"{METADATA}; copy the whole export folder again")
    if not tensors:
        return Plan.load(folder / PLAN), meta, {}
    try:
        state = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise PackageError(f"backbone export {folder}: {WEIGHTS} cannot be read ({exc})") from None
    return Plan.load(folder / PLAN), meta, state


def load_into(state: Dict[str, torch.Tensor], net: torch.nn.Module, source: str,
              family: Optional[str] = None) -> LoadReport:
    """Copy matching tensors into ``net`` (`copy_matching`); raise `CheckpointError`, copying nothing, unless every
    ``encoder.*`` tensor loads. ``family``: the backbone family, whose input-channel rule adapts another channel
    count (`adapt_input_channels`)."""
    check_encoder_loads(net, shapes_of(state), source, family)
    return copy_matching(state, net, family)


def check_encoder_loads(net: torch.nn.Module, shapes: Dict[str, Tuple[int, ...]], source: str,
                        family: Optional[str]) -> None:
    """`CheckpointError` unless stored tensors of these shapes fill every ``encoder.*`` tensor of ``net`` (input
    layers that ``family`` starts fresh for another channel count excepted); ``net`` may be a structure."""
    report, _ = match_shapes(net.state_dict(keep_vars=True), shapes, family)
    fresh = fresh_input_keys(family)
    bad = [k for k in report.missing if k.startswith("encoder.") and k not in fresh]
    if bad:
        raise CheckpointError(f"backbone {source}: {len(bad)} encoder tensor(s) of the network did not load (first: "
                              f"{bad[0]}); the export does not match this architecture: use its plan's backbone")


def verify_export(folder: Path) -> None:
    """Hashes agree, the tensors read, and every ``encoder.*`` tensor loads into the network of the export's plan
    (a structure without weights: only names and shapes are compared)."""
    from ..models import build_network
    from ..models.fresh_init import structure_build

    plan, _, state = load_export(folder)
    # a decoder's output layer may differ: not checked
    net = structure_build(lambda: build_network(plan.architecture, plan.num_channels, 2))
    check_encoder_loads(net, shapes_of(state), str(folder), plan.architecture.backbone)


def resolve_ssl_export(spec: str | Path) -> BackboneSource:
    """`BackboneSource` of an export (see the module docstring)."""
    folder = export_folder(spec)
    if folder is None:
        raise PackageError(f"{spec} is not a medssl backbone export (no {METADATA} with format {EXPORT_FORMAT})")
    plan, meta, _ = load_export(folder, tensors=False)
    defaults = PlanDefaults.of_plan(plan, f"medssl pretrain export {folder}")
    family = plan.architecture.backbone

    def init(net: torch.nn.Module) -> LoadReport:
        return load_into(load_export(folder)[2], net, str(folder), family)

    prov = {"backbone": str(folder), "init": "medssl-pretrain", "method": meta.get("method"),
            "pretrain_steps": meta.get("steps"), "fingerprint": (meta.get("fingerprint") or {}).get("hash"),
            "parent_plan_hash": plan.hash()}
    return BackboneSource(f"{meta.get('method', 'ssl')}:{folder}", plan.architecture, defaults, init,
                          licence=meta.get("licence"), provenance=prov,
                          loaded_keys=lambda structure: keys_matching(structure, folder / WEIGHTS, family))
