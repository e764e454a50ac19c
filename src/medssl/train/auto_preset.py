"""``--preset auto``: the published recipe when its memory estimate fits the device, else that recipe scaled
down, in this order: the batch (halved down to 1), then the crop size (halved, down to 32 voxels), then the
model size (the next smaller preset of the same architecture). One log line says what changed and why.

The estimate is `memory.estimate_training` (parameters with AdamW state + activations measured on a small
probe) with every crop a method trains on (`SSLMethod.forward_voxels`: VoCo's 3 x 3 bases + 2 crops, DINO's
global + local crops). Parameters are counted on the ``meta`` device, so no large model is allocated while
searching; the activation probe runs once per architecture.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

from ..inference import resources  # called through the module: a test's stand-in applies here too
from ..inference.devices import usable_cores, worker_count  # noqa: F401 (worker_count: part of this module's API)
from . import memory
from .loop import uses_amp  # noqa: F401 (re-exported for finetune and pretrain)

# Smaller presets of each architecture, largest first (the model-size step of the search).
LADDERS = {"resenc": ["L", "M", "small", "tiny"], "vit3d": ["L", "B"], "swin_unetr": ["H", "L", "B"]}
# Crop sizes of multi-crop methods (in ``method:``), scaled with the patch; minimum side per key.
CROP_KEYS = {"voco": {"base_size": 32}, "dino3d": {"global_size": 32, "local_size": 16}}
MIN_PATCH = 32
MARGIN = 0.9  # the share of free memory a run may plan to use (as `check_training_fits`)


def restore_fitted(cfg, saved: Dict[str, Any]):
    """On ``--resume``: the backbone, batch, patch and method settings the run started with."""
    for key in ("backbone", "batch_size", "patch_size", "method"):
        if key in saved:
            setattr(cfg, key, saved[key])
    return cfg


@dataclass
class Candidate:
    backbone: str
    batch: int
    patch: List[int]
    method: Dict[str, Any]
    change: str = ""


def _halve(patch: List[int], divisor: int) -> List[int]:
    return [max(MIN_PATCH, (p // 2 + divisor - 1) // divisor * divisor) for p in patch]


def _smaller_backbones(backbone: str) -> List[str]:
    name, _, preset = backbone.partition(":")
    ladder = LADDERS.get(name, [])
    if preset not in ladder:
        return []
    return [f"{name}:{p}" for p in ladder[ladder.index(preset) + 1:]]


def candidates(method: str, backbone: str, batch: int, patch: List[int], method_cfg: Dict[str, Any],
               crop_defaults: Dict[str, int], divisor: int = 16) -> Iterator[Candidate]:
    """The recipe, then batch, then crop, then model-size reductions (each model from the recipe's batch)."""
    for model in [backbone, *_smaller_backbones(backbone)]:
        b, p, m, changes = batch, list(patch), dict(method_cfg), [] if model == backbone else [f"model {model}"]
        while True:
            yield Candidate(model, b, list(p), dict(m), ", ".join(changes))
            if b > 1:
                b = max(1, b // 2)
                changes = [c for c in changes if not c.startswith("batch")] + [f"batch {batch} -> {b}"]
            elif max(p) > MIN_PATCH:
                p = _halve(p, divisor)
                for key, low in CROP_KEYS.get(method, {}).items():
                    m[key] = max(low, int(m.get(key, crop_defaults[key])) // 2 // divisor * divisor)
                changes = [c for c in changes if not c.startswith("patch")] + [f"patch {patch[0]} -> {p[0]}"]
            else:
                break


def _estimate_gb(method: str, cand: Candidate, in_channels: int, amp: bool, probes: Dict) -> float:
    """Training memory of one candidate (see the module docstring)."""
    from types import SimpleNamespace

    from ..hub.backbone_source import default_decoder
    from ..models import resolve_arch
    from ..ssl import METHODS
    from ..ssl.base import method_config

    name, _, preset = cand.backbone.partition(":")
    arch = resolve_arch(name, default_decoder(name), {"preset": preset} if preset else {})
    if cand.backbone not in probes:
        probes[cand.backbone] = _method_probe(method, arch, cand, in_channels)
    (trained, frozen), per_voxel = probes[cand.backbone]
    view = SimpleNamespace(cfg=method_config(method, cand.method), patch_size=cand.patch)
    voxels = METHODS.get(method).forward_voxels(view)  # only reads cfg and patch_size: nothing is built
    return memory.from_counts(trained, per_voxel, voxels * cand.batch, amp, frozen).total_gb


def _method_probe(method: str, arch, cand: Candidate, in_channels: int) -> Tuple[Tuple[int, int], float]:
    """((optimised, frozen) parameters of the method: network, heads, an EMA teacher frozen; activation bytes a
    voxel of its `SSLMethod.activation_network`, else of the plan's network), on builds without memory for
    their weights (`structure_build`), probed on the meta device."""
    from ..hub.pretrained import structure_network
    from ..models.fresh_init import structure_build
    from ..ssl import build_method

    structure = structure_build(lambda: build_method(method, arch, cand.method, cand.patch))
    probed, channels = structure.memory_probe(lambda: structure_network(arch, in_channels, 2), in_channels)
    return memory.parameter_counts(structure), memory.activation_bytes_per_voxel(probed, channels,
                                                                               memory.probe_side(probed))


def fit_pretraining(cfg, method: str, device: torch.device, in_channels: int = 1
                    ) -> Tuple[Any, Optional[str]]:
    """(config that fits, one line saying what changed or None); the recipe itself when nothing fits."""
    from ..ssl.base import method_config

    free = resources.available_gb(device)
    defaults = vars(method_config(method, {}))
    amp = uses_amp(cfg.loop.amp, device)
    probes: Dict = {}
    recipe = f"{cfg.backbone}, batch {cfg.batch_size}, patch {cfg.patch_size[0]}"
    first = None
    for cand in candidates(method, cfg.backbone, cfg.batch_size, list(cfg.patch_size), dict(cfg.method),
                           {k: int(defaults[k]) for k in CROP_KEYS.get(method, {})}):
        need = _estimate_gb(method, cand, in_channels, amp, probes)
        first = need if first is None else first
        if need <= MARGIN * free:
            if not cand.change:
                return cfg, None
            out = copy.deepcopy(cfg)
            out.backbone, out.batch_size, out.patch_size, out.method = cand.backbone, cand.batch, cand.patch, cand.method
            return out, (f"preset auto: the {method} recipe ({recipe}) needs about {first:.1f} GB but {device} has "
                         f"{free:.1f} GB free; scaled down: {cand.change} (about {need:.1f} GB)")
    return cfg, None  # nothing fits: the recipe is kept and the memory check refuses it with its advice


def fit_finetuning(net: torch.nn.Module, in_channels: int, patch, batch: int, device: torch.device, amp: bool
                   ) -> Tuple[int, List[int], Optional[str]]:
    """Fine-tuning's ``--preset auto``: (batch, patch, note) that fit; the batch first, then the patch. The
    model is the one asked for (its weights come with it), so its size is not changed here."""
    free, divisor = resources.available_gb(device), int(getattr(net, "size_divisor", 16))
    per_voxel = memory.activation_bytes_per_voxel(net, in_channels, memory.probe_side(net))
    trained, frozen = memory.parameter_counts(net)  # a frozen backbone: weights only
    recipe, first = list(patch), None
    for cand in candidates("finetune", "", batch, list(patch), {}, {}, divisor):
        need = memory.from_counts(trained, per_voxel, cand.batch * math.prod(cand.patch), amp, frozen).total_gb
        first = need if first is None else first
        if need <= MARGIN * free:
            note = None if not cand.change else (
                f"preset auto: batch {batch}, patch {recipe} need about {first:.1f} GB but {device} has {free:.1f} GB "
                f"free; scaled down: {cand.change} (about {need:.1f} GB)")
            return cand.batch, cand.patch, note
    return batch, list(patch), None  # nothing fits: unchanged, and the memory check refuses with its advice
