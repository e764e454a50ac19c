"""The fine-tuning plan: the backbone's `PlanDefaults`, the labelled data and the user's choices, by the rules
of `.rules` (the pretraining plan uses the same ones, `.planner`).

Precedence for each field: the user's choice > the backbone's defaults (the preprocessing it was pretrained
with, as nnU-Net's ``like_nnssl`` planner does) > what the data suggest (median spacing, one case or many;
CT-style or per-image z-score normalisation by modality; a patch that fits the volumes). The rule that chose
each field is recorded in ``plan.provenance["fields"]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..data.preprocess import target_grid
from ..errors import InputError
from ..io.labels import LabelMap
from ..plan import ArchSpec, ChannelSpec, LabelSpec, NormSpec, Plan, PlanDefaults, SlidingWindowSpec
from .rules import DATA, DEFAULT, LIKE_PRETRAINED, USER, complete_normalization, image_modality, plan_spacing
from .rules import round_patch, size_divisor

ReadCase = Tuple[List[sitk.Image], LabelMap]
AUTO_NORM = {"CT": ("percentile", {"lower_pct": 0.5, "upper_pct": 99.5}), "MR": ("zscore", {"per_image": True})}


@dataclass(frozen=True)
class Choices:
    """What the user set for the plan (``None``/``auto``: not set). ``spacing``: ``native``, a number or three;
    ``normalization``: ``auto``/``backbone`` or a scheme name."""

    spacing: Any = None
    orientation: Optional[str] = None
    normalization: str = "auto"
    patch_size: Optional[Sequence[int]] = None
    sliding_window: SlidingWindowSpec = field(default_factory=SlidingWindowSpec)


def channel_specs(read: Sequence[ReadCase], names: Optional[Sequence[str]]) -> List[ChannelSpec]:
    """One channel per image of the first case, its modality guessed once (`rules.image_modality`)."""
    first = read[0][0]
    if names is not None and len(names) != len(first):
        raise InputError(f"{len(names)} channel name(s) for {len(first)} channel(s); give one name per channel")
    default = ["image"] if len(first) == 1 else [f"channel_{i + 1}" for i in range(len(first))]
    return [ChannelSpec(n, image_modality(img)) for n, img in zip(names or default, first)]


def channel_names_and_rule(names: Optional[Sequence[str]], defaults: PlanDefaults, count: int):
    """The user's channel names > the parent package's (same channel count) > ``image``/``channel_N``."""
    if names:
        return names, USER
    if len(defaults.channels) == count:
        return [c.name for c in defaults.channels], LIKE_PRETRAINED
    return None, DATA


def _samples(read: Sequence[ReadCase], channel: int, max_cases: int = 8) -> List[np.ndarray]:
    return [sitk.GetArrayViewFromImage(imgs[channel])[::2, ::2, ::2] for imgs, _ in read[:max_cases]]


def normalization(choice: str, defaults: PlanDefaults, channels: List[ChannelSpec], read: Sequence[ReadCase]
                  ) -> Tuple[List[NormSpec], str]:
    """(one NormSpec per channel, rule): a named scheme > the backbone's (last one repeated) > by modality."""
    out, inherited = [], list(defaults.normalization)
    rule = USER if choice not in ("auto", "backbone") else LIKE_PRETRAINED if inherited else DATA
    for c, ch in enumerate(channels):
        if rule == USER:
            scheme, params = choice, {}
        elif rule == LIKE_PRETRAINED:
            spec = inherited[min(c, len(inherited) - 1)]
            scheme, params = spec.scheme, dict(spec.params)
        else:
            scheme, params = AUTO_NORM[ch.modality]
        out.append(complete_normalization(scheme, dict(params), _samples(read, c)))
    return out, rule


def patch_size(choice: Optional[Sequence[int]], defaults: PlanDefaults, shapes: Sequence[Sequence[int]],
               divisor: int) -> Tuple[Tuple[int, int, int], str]:
    """(patch, rule): the user's > the backbone's > min(128, median volume size) per axis; `rules.round_patch`."""
    if choice is not None:
        patch, rule = [int(p) for p in choice], USER
    elif defaults.patch_size:
        patch, rule = list(defaults.patch_size), LIKE_PRETRAINED
    else:
        median = np.median(np.array(shapes), axis=0)
        patch, rule = [int(min(128, m)) for m in median], DATA
    return round_patch(patch, divisor), rule


def make_finetune_plan(read: Sequence[ReadCase], labels: List[LabelSpec], labels_rule: str, arch: ArchSpec,
                       defaults: PlanDefaults, choices: Choices, channel_names: Optional[Sequence[str]] = None,
                       provenance: Optional[Dict[str, Any]] = None, arch_rule: str = USER) -> Plan:
    """The plan of a fine-tuned model (see the module docstring). ``arch_rule``: where ``arch`` came from
    (``like_pretrained``: the weights' own architecture; ``user``: an architecture named by ``--backbone``)."""
    names, c_rule = channel_names_and_rule(channel_names, defaults, len(read[0][0]))
    channels = channel_specs(read, names)
    orientation, o_rule = ((choices.orientation, USER) if choices.orientation else
                           (defaults.orientation, LIKE_PRETRAINED) if defaults.orientation else ("RAS", DEFAULT))
    native = [target_grid(imgs[0], orientation, None).spacing for imgs, _ in read]
    spacing, s_rule = plan_spacing(choices.spacing, defaults.spacing_triple, native)
    shapes = [target_grid(imgs[0], orientation, spacing).size for imgs, _ in read]
    norms, n_rule = normalization(choices.normalization, defaults, channels, read)
    patch, p_rule = patch_size(choices.patch_size, defaults, shapes, size_divisor(arch, len(channels)))
    fields = {"spacing": s_rule, "orientation": o_rule, "normalization": n_rule, "patch_size": p_rule,
              "channels": c_rule, "labels": labels_rule, "architecture": arch_rule}
    plan = Plan(channels=channels, normalization=norms, patch_size=patch, labels=labels, architecture=arch,
                spacing=spacing, orientation=orientation, sliding_window=choices.sliding_window,
                provenance={"created_by": "medssl finetune", **(provenance or {}), "fields": fields,
                            **({"defaults_from": defaults.origin} if defaults.origin else {})})
    plan.validate("fine-tuning plan")
    return plan
