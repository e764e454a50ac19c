"""Run configurations: dataclasses filled from YAML presets, a user YAML and command-line overrides.

Presets live in ``medssl/configs/<kind>/<name>.yaml`` and override only what differs from the dataclass
defaults. Unknown keys are an error (a typo must not silently do nothing). YAML is read with
``yaml.safe_load``: no tags, no code.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Type, TypeVar

from ..data.augment import AugmentConfig
from ..errors import InputError, did_you_mean
from ..io.settings import from_dict, merge, read_yaml, require, require_fields, require_orientation
from .loop import LoopConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
T = TypeVar("T")


@dataclass
class FinetuneConfig:
    """Fine-tuning settings. Plan-related fields (spacing, patch size...) override the backbone's defaults."""

    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=1000, lr=1e-3, warmup_steps=50))
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    batch_size: int = 2
    patch_size: Optional[List[int]] = None
    spacing: Any = None  # None: the backbone's, else the data's median; native | number | [i, j, k]: fixed
    orientation: Optional[str] = None
    normalization: str = "auto"  # auto | zscore | percentile | ct_window | none | backbone
    foreground_fraction: float = 0.33
    val_fraction: float = 0.2
    val_overlap: float = 0.25
    freeze_backbone: bool = False
    sparse_slices: Optional[str] = None  # None: dense labels; auto | axial | coronal | sagittal | i | j | k
    sw_batch_size: int = 2
    overlap: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "sw_batch_size"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "a whole number of 1 or more")
        for name in ("foreground_fraction", "val_fraction"):
            require(0 <= getattr(self, name) <= 1, name, getattr(self, name), "a fraction in [0, 1]")
        for name in ("overlap", "val_overlap"):
            require(0 <= getattr(self, name) < 1, name, getattr(self, name), "a value in [0, 1), e.g. 0.5")
        require_fields(self, positive=("patch_size",))
        require_orientation(self.orientation)
        require(self.seed >= 0, "seed", self.seed, "a whole number of 0 or more")


def preset_path(kind: str, name: str) -> Path:
    path = CONFIG_DIR / kind / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (CONFIG_DIR / kind).glob("*.yaml"))
        raise InputError(f"unknown {kind} preset {name!r}.{did_you_mean(name, known)} Known: {', '.join(known)}.")
    return path


def load_config(cls: Type[T], kind: str, preset: Optional[str] = None, user_yaml: Optional[str] = None,
                overrides: Optional[Dict[str, Any]] = None, recipe: Optional[Dict[str, Any]] = None) -> T:
    """Defaults <- preset <- recipe (the backbone's, `medssl.hub.recipes`) <- user YAML <- overrides
    (e.g. ``{"loop": {"steps": 50}}``). A warm-up given in steps by the YAML or the overrides replaces a
    recipe's warm-up fraction."""
    data: Dict[str, Any] = {}
    if preset:
        data = merge(data, read_yaml(preset_path(kind, preset)))
    if recipe:
        data = merge(data, recipe)
    later = merge(read_yaml(user_yaml) if user_yaml else {}, overrides or {})
    if isinstance(later.get("loop"), dict) and "warmup_steps" in later["loop"] and isinstance(data.get("loop"), dict):
        data["loop"] = {k: v for k, v in data["loop"].items() if k != "warmup_fraction"}
    data = merge(data, later)
    return from_dict(cls, data, where=user_yaml or (preset and f"preset {preset}") or "config")


def to_dict(config: Any) -> Dict[str, Any]:
    return dataclasses.asdict(config)
