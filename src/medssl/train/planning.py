"""Build the fine-tuning plan from the backbone's defaults, the labelled data and the user's config.

Precedence for each plan field: user config > backbone defaults (the preprocessing the backbone was
pretrained with, as nnU-Net's ``like_nnssl`` planner does) > what the data suggest (median spacing when
spacings differ; CT-style or per-image z-score normalisation; a patch that fits the volumes).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import torch

from ..data.normalization import fit_normalization
from ..data.preprocess import target_grid
from ..errors import InputError
from ..io.labels import LabelMap
from ..models.registry import BACKBONES
from ..plan import ArchSpec, ChannelSpec, LabelSpec, NormSpec, Plan, SlidingWindowSpec
from .config import FinetuneConfig

ReadCase = Tuple[List[sitk.Image], LabelMap]
FROZEN_KEYS = {"zscore": "mean", "percentile": "lower"}


def looks_like_ct(image: sitk.Image) -> bool:
    """Hounsfield units: air around -1000 makes the minimum strongly negative."""
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    return stats.GetMinimum() < -500


def channel_specs(read: Sequence[ReadCase], names: Optional[Sequence[str]]) -> List[ChannelSpec]:
    first = read[0][0]
    if names is not None and len(names) != len(first):
        raise InputError(f"{len(names)} channel name(s) for {len(first)} channel(s); give one name per channel")
    default = ["image"] if len(first) == 1 else [f"channel_{i + 1}" for i in range(len(first))]
    return [ChannelSpec(n, "CT" if looks_like_ct(img) else "MR") for n, img in zip(names or default, first)]


def _samples(read: Sequence[ReadCase], channel: int, max_cases: int = 8) -> List[np.ndarray]:
    return [sitk.GetArrayViewFromImage(imgs[channel])[::2, ::2, ::2] for imgs, _ in read[:max_cases]]


def _norm_for(scheme: str, params: Dict[str, Any], samples: List[np.ndarray]) -> NormSpec:
    """A complete NormSpec: frozen statistics are fitted on ``samples`` unless already present."""
    needs_fit = scheme in FROZEN_KEYS and not params.get("per_image") and FROZEN_KEYS[scheme] not in params
    if needs_fit or scheme == "ct_window" and "lower" not in params:
        params = fit_normalization(scheme, samples, **params)
    return NormSpec(scheme, dict(params))


def normalization(cfg: FinetuneConfig, defaults: Dict[str, Any], channels: List[ChannelSpec],
                  read: Sequence[ReadCase]) -> List[NormSpec]:
    out = []
    backbone = defaults.get("normalization") or []
    for c, ch in enumerate(channels):
        samples = _samples(read, c)
        if cfg.normalization in ("auto", "backbone") and backbone:
            spec = backbone[min(c, len(backbone) - 1)]
            out.append(_norm_for(spec["scheme"], dict(spec.get("params", {})), samples))
        elif cfg.normalization in ("auto", "backbone"):
            auto = ("percentile", {"lower_pct": 0.5, "upper_pct": 99.5}) if ch.modality == "CT" else ("zscore", {"per_image": True})
            out.append(_norm_for(auto[0], auto[1], samples))
        else:
            out.append(_norm_for(cfg.normalization, {}, samples))
    return out


def spacing(cfg: FinetuneConfig, defaults: Dict[str, Any], read: Sequence[ReadCase], orientation: str):
    """User spacing (``native`` only when asked) > backbone spacing > the data's median spacing, one case or
    many (nnU-Net plans the training data's spacing even for a single case). A backbone pretrained at native
    spacing (3DINO) has no spacing to inherit: the data's median is planned."""
    if cfg.spacing == "native":
        return None
    if cfg.spacing is not None:
        return user_spacing(cfg.spacing)
    if defaults.get("spacing") is not None:
        return tuple(float(s) for s in defaults["spacing"])
    spacings = np.array([target_grid(imgs[0], orientation, None).spacing for imgs, _ in read])
    return tuple(float(s) for s in np.median(spacings, axis=0))


def user_spacing(value: Any) -> Tuple[float, float, float]:
    """``spacing:`` of a run configuration: one number or three positive numbers (``native`` handled before)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return (float(value),) * 3
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(s, (int, float)) and s > 0 for s in value):
        return tuple(float(s) for s in value)  # type: ignore[return-value]
    raise InputError(f"spacing {value!r} must be 'native', one positive number or three (i, j, k) in mm")


def size_divisor(arch: ArchSpec, in_channels: int) -> int:
    """The backbone's size divisor, read from an instance built on the meta device (no memory, no init)."""
    family = BACKBONES.get(arch.backbone)
    if family.size_divisor is not None:
        return int(family.size_divisor(**arch.backbone_kwargs))
    build = family.build
    try:
        with torch.device("meta"):
            encoder = build(in_channels, **arch.backbone_kwargs)
    except (NotImplementedError, RuntimeError):  # a layer that cannot live on the meta device
        encoder = build(in_channels, **arch.backbone_kwargs)
    return int(getattr(encoder, "size_divisor", 1))


def patch_size(cfg: FinetuneConfig, defaults: Dict[str, Any], shapes: Sequence[Sequence[int]], divisor: int):
    """User patch > backbone patch > min(128, median volume size) per axis; rounded up to the divisor, and at
    least twice the divisor (the bottleneck then has 2^3 voxels: instance norm needs more than one)."""
    if cfg.patch_size is not None:
        patch = [int(p) for p in cfg.patch_size]
    elif defaults.get("patch_size"):
        patch = [int(p) for p in defaults["patch_size"]]
    else:
        median = np.median(np.array(shapes), axis=0)
        patch = [int(min(128, m)) for m in median]
    return tuple(max(2 * divisor, int(np.ceil(p / divisor)) * divisor) for p in patch)


def _spacing_rule(cfg: FinetuneConfig, defaults: Dict[str, Any]) -> str:
    if cfg.spacing is not None:
        return "user"
    return "like_pretrained" if defaults.get("spacing") is not None else "data"


def _tta_axes(cfg: FinetuneConfig) -> Tuple[int, ...]:
    """Test-time mirroring uses the axes mirrored in training (nnU-Net), none if mirroring was off."""
    return tuple(int(a) for a in cfg.augment.mirror_axes) if cfg.augment.p_mirror > 0 else ()


def make_finetune_plan(read: Sequence[ReadCase], labels: List[LabelSpec], source, cfg: FinetuneConfig,
                       channel_names: Optional[Sequence[str]] = None) -> Plan:
    """The plan of a fine-tuned model (see the module docstring)."""
    defaults = source.plan_defaults or {}
    channels = channel_specs(read, channel_names)
    orientation = cfg.orientation or defaults.get("orientation") or "RAS"
    target_spacing = spacing(cfg, defaults, read, orientation)
    shapes = [target_grid(imgs[0], orientation, target_spacing).size for imgs, _ in read]
    divisor = size_divisor(source.arch, len(channels))
    plan = Plan(channels=channels, normalization=normalization(cfg, defaults, channels, read),
                patch_size=patch_size(cfg, defaults, shapes, divisor), labels=labels, architecture=source.arch,
                spacing=target_spacing, orientation=orientation,
                sliding_window=SlidingWindowSpec(overlap=cfg.overlap, sw_batch_size=cfg.sw_batch_size,
                                                 mirror_axes=_tta_axes(cfg)),
                provenance={"created_by": "medssl finetune", "backbone": source.name,
                            "fields": {"spacing": _spacing_rule(cfg, defaults)}})
    plan.validate("fine-tuning plan")
    return plan
