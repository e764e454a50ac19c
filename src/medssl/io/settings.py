"""Settings files: YAML read safely (``yaml.safe_load``: no tags, no code) and merged into dataclasses.

Nested sections merge key by key; unknown keys are an error (a typo must not silently do nothing), and so is a
value of the wrong type for its field (`checked_value`: ``normalization: {MR: ...}`` where text is expected
stops in one line instead of deep inside planning). YAML 1.1 reads ``off``/``on``/``no``/``yes`` as booleans and
``1e-3`` (no dot) as text: a text field takes the boolean back as ``"off"``/``"on"`` (``amp: off`` as the README
writes it; it had fallen through to float16), and a number field takes text that reads as a number. Used by
the run configurations (`medssl.train.config`) and by each SSL method's own ``Config``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
import typing
from typing import Any, Dict, Optional, Sequence, Type, TypeVar, Union

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


def from_dict(cls: Type[T], data: Dict[str, Any], where: str = "config", section: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclass fields; unknown keys, values of the
    wrong type (`checked_value`) and a field's own check (an `InputError` from ``__post_init__``) fail in one line
    that names ``where`` and the key's path (``section``: the nested sections above, e.g. ``"loop."``)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: Dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise InputError(f"{where}: unknown setting {section + key!r}.{did_you_mean(key, fields)}")
        default = fields[key].default_factory() if fields[key].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise InputError(f"{where}: {section}{key} is a section of settings ({key}: followed by its "
                                 f"settings, indented), not {value!r}")
            value = from_dict(type(default), merge(dataclasses.asdict(default), value), where, f"{section}{key}.")
        else:
            value = checked_value(value, hints[key], f"{where}: {section}{key}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except InputError as exc:
        raise InputError(f"{where}: {section}{exc}") from None


def require(ok: bool, name: str, value: Any, allowed: str) -> None:
    """A dataclass's ``__post_init__`` range check: `InputError` ``"<name> <value> is out of range; use <allowed>"``
    (`from_dict` puts the file and the section in front)."""
    if not ok:
        raise InputError(f"{name} {value!r} is out of range; use {allowed}")


def require_fields(config: Any, positive: Sequence[str] = (), ranges: Sequence[str] = (),
                   fractions: Sequence[str] = ()) -> None:
    """Range checks shared by the run and method configs: every ``p_*`` field a probability in [0, 1];
    ``positive``: whole numbers of 1 or more (a list field: each entry); ``ranges``: ``[low, high]`` with
    0 <= low <= high; ``fractions``: in [0, 1)."""
    for f in dataclasses.fields(config):
        if f.name.startswith("p_"):
            value = getattr(config, f.name)
            require(0 <= value <= 1, f.name, value, "a probability in [0, 1]")
    for name in positive:
        value = getattr(config, name)
        if value is not None:
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            require(all(v >= 1 for v in values), name, value, "whole numbers of 1 or more")
    for name in ranges:
        low, high = getattr(config, name)
        require(0 <= low <= high, name, list(getattr(config, name)), "[low, high] with 0 <= low <= high")
    for name in fractions:
        value = getattr(config, name)
        require(0 <= value < 1, name, value, "a fraction in [0, 1)")


def require_orientation(code: Optional[str], name: str = "orientation") -> None:
    """A three-letter anatomical code such as RAS or LPS: one of R/L, A/P, S/I for each axis."""
    if code is None:
        return
    letters = str(code).upper()
    axes = sorted(next((pair for pair in ("RL", "AP", "SI") if c in pair), c) for c in letters)
    require(len(letters) == 3 and axes == ["AP", "RL", "SI"], name, code,
            "three letters, one of R/L, A/P and S/I each, e.g. RAS or LPS")


def checked_value(value: Any, hint: Any, what: str) -> Any:
    """``value`` as field type ``hint`` wants it (a list as a tuple for a Tuple field, YAML's boolean for ``off``
    as ``"off"`` for text, text such as ``"1e-3"`` as a number), or `InputError` naming ``what``. Types other than
    bool, int, float, str, Optional, List, Tuple and Dict are not checked."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return checked_value(value, inner[0], what) if len(inner) == 1 else value
    if hint in (bool, int, float, str):
        return _scalar(value, hint, what)
    if origin in (list, tuple):
        return _sequence(value, origin, args, what)
    if origin is dict and not isinstance(value, dict):
        raise InputError(f"{what} must be a mapping of settings, not {value!r}")
    return value


_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _scalar(value: Any, hint: type, what: str) -> Any:
    if hint is str and isinstance(value, bool):
        return "on" if value else "off"  # YAML 1.1: off/no -> False, on/yes -> True
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as text
        except ValueError:
            pass
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if (hint is bool and isinstance(value, bool)) or (hint is str and isinstance(value, str)) \
            or (hint is int and numeric and float(value).is_integer()) or (hint is float and numeric):
        return int(value) if hint is int else value
    raise InputError(f"{what} must be {_WORDS[hint]}, not {value!r}")


def _sequence(value: Any, origin: type, args: tuple, what: str) -> Any:
    fixed = origin is tuple and args and args[-1] is not Ellipsis
    if not isinstance(value, (list, tuple)) or (fixed and len(value) != len(args)):
        count = f" of {len(args)} values" if fixed else ""
        raise InputError(f"{what} must be a list{count}, not {value!r}")
    kinds = args if fixed else (args[:1] * len(value) if args else ())
    items = [checked_value(v, k, f"{what}[{i}]") for i, (v, k) in enumerate(zip(value, kinds))] if kinds else value
    return tuple(items) if origin is tuple else list(items)
