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

import yaml

from ..data.augment import AugmentConfig
from ..errors import InputError, did_you_mean
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
    spacing: Optional[List[float]] = None  # None: backbone default, else the median spacing of the data
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


def preset_path(kind: str, name: str) -> Path:
    path = CONFIG_DIR / kind / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (CONFIG_DIR / kind).glob("*.yaml"))
        raise InputError(f"unknown {kind} preset {name!r}.{did_you_mean(name, known)} Known: {', '.join(known)}.")
    return path


def read_yaml(path: str | Path) -> Dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise InputError(f"config file {path} does not exist") from None
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"config file {path} is not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold a mapping of settings")
    return data


def merge(base: Dict[str, Any], update: Dict[str, Any]) -> Dict[str, Any]:
    """Recursive dict update (nested sections merge key by key)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def from_dict(cls: Type[T], data: Dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclass fields; unknown keys fail."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: Dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise InputError(f"{where}: unknown setting {key!r}.{did_you_mean(key, fields)}")
        default = fields[key].default_factory() if fields[key].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            base = dataclasses.asdict(default)
            value = from_dict(type(default), merge(base, value), f"{where}.{key}")
        kwargs[key] = tuple(value) if isinstance(value, list) and _is_tuple_field(fields[key]) else value
    return cls(**kwargs)


def _is_tuple_field(f: dataclasses.Field) -> bool:
    return "Tuple" in str(f.type)


def load_config(cls: Type[T], kind: str, preset: Optional[str] = None, user_yaml: Optional[str] = None,
                overrides: Optional[Dict[str, Any]] = None) -> T:
    """Defaults <- preset <- user YAML <- overrides (e.g. ``{"loop": {"steps": 50}}``)."""
    data: Dict[str, Any] = {}
    if preset:
        data = merge(data, read_yaml(preset_path(kind, preset)))
    if user_yaml:
        data = merge(data, read_yaml(user_yaml))
    data = merge(data, overrides or {})
    return from_dict(cls, data, where=user_yaml or (preset and f"preset {preset}") or "config")


def to_dict(config: Any) -> Dict[str, Any]:
    return dataclasses.asdict(config)
