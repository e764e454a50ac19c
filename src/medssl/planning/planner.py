"""Pretraining plan from a dataset fingerprint: decisions only, no measurements (nnU-Net experiment planner;
nnssl ``pretrain_plan``).

- orientation: the configured one (RAS by default: the seed systems' MONAI convention);
- spacing: ``native`` keeps every volume's spacing (3DINO); ``auto`` keeps it when all volumes share one and
  otherwise takes the median spacing (nnU-Net); three numbers fix it (nnssl ``onemmiso`` = 1 mm, VoCo 1.5 mm);
- normalisation: the method recipe's scheme for the dataset's modality (CT or MR), with frozen statistics
  fitted on the fingerprint's voxel samples where the scheme has any;
- patch size: the recommended downstream patch (what the network saw), a multiple of the size divisor;
- architecture: registry names and explicit keyword arguments; labels: none (a backbone plan).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from ..data.normalization import fit_normalization
from ..errors import InputError
from ..models.registry import BACKBONES
from ..plan import ArchSpec, ChannelSpec, NormSpec, Plan
from .fingerprint import DatasetFingerprint

SpacingSetting = Union[str, float, Sequence[float]]
FROZEN = {"zscore": "mean", "percentile": "lower"}


def decide_spacing(fp: DatasetFingerprint, setting: SpacingSetting) -> Optional[Tuple[float, float, float]]:
    """``None`` (native) or the target spacing in (i, j, k) order; see the module docstring."""
    if setting == "native":
        return None
    if setting == "auto":
        summary = fp.summary()
        return None if summary["same_spacing"] else tuple(float(s) for s in summary["median_spacing"])
    if isinstance(setting, (int, float)):
        return (float(setting),) * 3
    if isinstance(setting, (list, tuple)) and len(setting) == 3 and all(float(s) > 0 for s in setting):
        return tuple(float(s) for s in setting)  # type: ignore[return-value]
    raise InputError(f"spacing {setting!r} must be 'auto', 'native', one number or three positive numbers")


def decide_normalization(fp: DatasetFingerprint, recipes: Dict[str, Dict[str, Any]]) -> NormSpec:
    """The recipe for the dataset's modality (``recipes = {"CT": {"scheme", "params"}, "MR": {...}}``)."""
    recipe = recipes.get(fp.modality) or recipes.get("default")
    if recipe is None:
        raise InputError(f"the normalisation settings name no scheme for {fp.modality} data; add "
                         f"'normalization: {{{fp.modality}: {{scheme: zscore, params: {{per_image: true}}}}}}'")
    scheme, params = recipe["scheme"], dict(recipe.get("params", {}))
    key = FROZEN.get(scheme)
    if key and not params.get("per_image") and key not in params:
        params = fit_normalization(scheme, fp.samples, **params)
    elif scheme == "ct_window" and "lower" not in params:
        params = fit_normalization(scheme, fp.samples, **params)
    return NormSpec(scheme, params)


def size_divisor(arch: ArchSpec) -> int:
    """The backbone's input side divisor (its total stride or patch size)."""
    encoder = BACKBONES.get(arch.backbone).build(1, **arch.backbone_kwargs)
    return int(getattr(encoder, "size_divisor", 1))


def round_patch(patch: Sequence[int], divisor: int) -> Tuple[int, int, int]:
    return tuple(max(divisor, int(np.ceil(int(p) / divisor)) * divisor) for p in patch)  # type: ignore[return-value]


def plan_pretraining(fp: DatasetFingerprint, arch: ArchSpec, spacing: SpacingSetting,
                     normalization: Dict[str, Dict[str, Any]], patch_size: Sequence[int], method: str) -> Plan:
    """The plan of a pretraining run (single channel, no labels); see the module docstring."""
    plan = Plan(channels=[ChannelSpec("image", fp.modality)], normalization=[decide_normalization(fp, normalization)],
                patch_size=round_patch(patch_size, size_divisor(arch)), labels=[], architecture=arch,
                spacing=decide_spacing(fp, spacing), orientation=fp.orientation,
                provenance={"created_by": "medssl pretrain", "method": method, "fingerprint": fp.hash()})
    plan.validate("pretraining plan")
    return plan
