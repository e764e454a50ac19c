"""The planning rules shared by fine-tuning and pretraining plans, each decision with the rule that made it.

nnU-Net's experiment planner (Isensee et al., Nat. Methods 2021) decides spacing, normalisation and patch size
from a dataset fingerprint; nnssl's ``pretrain_plan`` and TaWald/nnUNet's ``like_nnssl`` planner inherit them
from the pretrained backbone. Here both kinds of plan use one modality guess, one spacing rule, one
normalisation fit, one size divisor read on the meta device and one patch rounding. Each decided field records
its rule in ``plan.provenance["fields"]``:

- ``user``: set by the run configuration (preset, YAML, command line);
- ``like_pretrained``: inherited from the backbone's `PlanDefaults`;
- ``data``: measured on the data (median spacing, modality, intensity statistics, volume sizes);
- ``default``: medssl's fallback when nothing else decides (RAS orientation).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..data.normalization import fit_normalization
from ..errors import InputError
from ..models.fresh_init import structure_build
from ..models.no_init import initialisation_skipped
from ..models.registry import BACKBONES
from ..plan import NATIVE, ArchSpec, NormSpec

USER, LIKE_PRETRAINED, DATA, DEFAULT = "user", "like_pretrained", "data", "default"
CT_AIR_BELOW = -500.0  # Hounsfield units: air around -1000 makes the minimum strongly negative
FROZEN_KEYS = {"zscore": "mean", "percentile": "lower", "ct_window": "lower"}
Triple = Tuple[float, float, float]


def guess_modality(minimum: float) -> str:
    """``CT`` when the intensity minimum reaches air in Hounsfield units, else ``MR``."""
    return "CT" if minimum < CT_AIR_BELOW else "MR"


def image_modality(image: sitk.Image) -> str:
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    return guess_modality(stats.GetMinimum())


def spacing_setting(value: Any, where: str = "spacing") -> Any:
    """A configured spacing checked: ``None``/``"auto"`` (plan it), ``"native"``, or a triple (one number: cubic)."""
    if value is None or value in ("auto", NATIVE):
        return None if value == "auto" else value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return (float(value),) * 3
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in value):
        return tuple(float(s) for s in value)
    raise InputError(f"{where} {value!r} must be 'auto', 'native', one positive number or three (i, j, k) in mm")


def median_spacing(spacings: Sequence[Sequence[float]]) -> Triple:
    return tuple(float(s) for s in np.median(np.asarray(spacings, dtype=float), axis=0))  # type: ignore[return-value]


def plan_spacing(setting: Any, inherited: Any, spacings: Sequence[Sequence[float]]) -> Tuple[Any, str]:
    """(spacing or None for native, rule): the user's setting > the backbone's triple > the data's median,
    one volume or many (nnU-Net plans the training data's spacing even for one case). Native only when asked."""
    chosen = spacing_setting(setting)
    if chosen == NATIVE:
        return None, USER
    if chosen is not None:
        return chosen, USER
    if inherited is not None:
        return tuple(float(s) for s in inherited), LIKE_PRETRAINED
    return median_spacing(spacings), DATA


def complete_normalization(scheme: str, params: Dict[str, Any], samples: List[np.ndarray]) -> NormSpec:
    """A NormSpec whose frozen statistics are fitted on ``samples`` unless given or computed per image."""
    key = FROZEN_KEYS.get(scheme)
    if key and not params.get("per_image") and key not in params:
        params = fit_normalization(scheme, samples, **params)
    return NormSpec(scheme, dict(params))


def size_divisor(arch: ArchSpec, in_channels: int = 1) -> int:
    """The backbone's input side divisor (total stride or patch size), read from an instance built on the meta
    device (no memory, no initialisation); the family's own function when it has one."""
    family = BACKBONES.get(arch.backbone)
    if family.size_divisor is not None:
        return int(family.size_divisor(**arch.backbone_kwargs))
    with initialisation_skipped():
        encoder = structure_build(lambda: family.build(in_channels, **arch.backbone_kwargs))
    return int(getattr(encoder, "size_divisor", 1))


def round_patch(patch: Sequence[int], divisor: int) -> Tuple[int, int, int]:
    """Each side rounded up to the divisor, and at least twice it (the bottleneck then has 2^3 voxels:
    instance norm needs more than one)."""
    return tuple(max(2 * divisor, int(np.ceil(int(p) / divisor)) * divisor) for p in patch)  # type: ignore[return-value]
