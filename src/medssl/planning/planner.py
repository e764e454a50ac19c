"""Pretraining plan from a dataset fingerprint: decisions only, no measurements (nnU-Net experiment planner;
nnssl ``pretrain_plan``), by the rules shared with fine-tuning plans (`.rules`):

- orientation: the configured one (RAS by default: the seed systems' MONAI convention);
- spacing: ``auto`` plans the fingerprint's median spacing (one volume or many, nnU-Net); ``native`` keeps
  every volume's own spacing (3DINO); three numbers fix it (nnssl ``onemmiso`` = 1 mm, VoCo 1.5 mm);
- normalisation: the method recipe's scheme for the dataset's modality (CT or MR), with frozen statistics
  fitted on the fingerprint's voxel samples where the scheme has any;
- patch size: the recommended downstream patch (what the network saw), `rules.round_patch` to the divisor;
- architecture: registry names and explicit keyword arguments; labels: none (a backbone plan).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

from ..errors import InputError
from ..plan import ArchSpec, ChannelSpec, NormSpec, Plan
from .fingerprint import DatasetFingerprint
from .rules import DATA, USER, complete_normalization, plan_spacing, round_patch, size_divisor

SpacingSetting = Union[str, float, Sequence[float]]


def decide_spacing(fp: DatasetFingerprint, setting: SpacingSetting) -> Optional[Tuple[float, float, float]]:
    """``None`` (native) or the target spacing in (i, j, k) order; see the module docstring."""
    return plan_spacing(setting, None, [v.spacing for v in fp.volumes])[0]


def decide_normalization(fp: DatasetFingerprint, recipes: Dict[str, Dict[str, Any]]) -> NormSpec:
    """The recipe for the dataset's modality (``recipes = {"CT": {"scheme", "params"}, "MR": {...}}``)."""
    recipe = recipes.get(fp.modality) or recipes.get("default")
    if recipe is None:
        raise InputError(f"the normalisation settings name no scheme for {fp.modality} data; add "
                         f"'normalization: {{{fp.modality}: {{scheme: zscore, params: {{per_image: true}}}}}}'")
    return complete_normalization(recipe["scheme"], dict(recipe.get("params", {})), fp.samples)


def plan_pretraining(fp: DatasetFingerprint, arch: ArchSpec, spacing: SpacingSetting,
                     normalization: Dict[str, Dict[str, Any]], patch_size: Sequence[int], method: str) -> Plan:
    """The plan of a pretraining run (single channel, no labels); see the module docstring."""
    target, s_rule = plan_spacing(spacing, None, [v.spacing for v in fp.volumes])
    fields = {"spacing": s_rule, "orientation": USER, "normalization": USER, "patch_size": USER, "channels": DATA,
              "architecture": USER}
    plan = Plan(channels=[ChannelSpec("image", fp.modality)], normalization=[decide_normalization(fp, normalization)],
                patch_size=round_patch(patch_size, size_divisor(arch)), labels=[], architecture=arch,
                spacing=target, orientation=fp.orientation,
                provenance={"created_by": "medssl pretrain", "method": method, "fingerprint": fp.hash(),
                            "fields": fields})
    plan.validate("pretraining plan")
    return plan
