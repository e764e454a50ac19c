"""Settings files: YAML read safely (``yaml.safe_load``: no tags, no code) and merged into dataclasses.

Nested sections merge key by key; unknown keys are an error (a typo must not silently do nothing). Used by
the run configurations (`medssl.train.config`) and by each SSL method's own ``Config``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Type, TypeVar

import yaml

from ..errors import InputError, did_you_mean

T = TypeVar("T")


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
