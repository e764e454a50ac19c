"""The pretrained-weight catalog (``catalog.json``): which published backbones MedSSL can load, from where,
under which licence, with which converter and which preprocessing.

Weights are data, architectures are code (timm's ``PretrainedCfg``, MONAI's ``large_files.yml``): the JSON is
validated here against a small schema written in code (no jsonschema dependency, nothing is evaluated) and
is readable without torch, so the 3D Slicer GUI can list models before torch is installed.

Entry fields: ``id``, ``title``, ``family`` (backbone registry name), ``arch`` (backbone/decoder + kwargs),
``source`` (``{"kind": "huggingface", "repo_id", "revision", "gated"}`` or ``{"kind": "url", "url",
"downloadable": false}``), ``file_name`` (+ ``alt_file_names``), ``sha256`` (null when unknown: recorded on
first download), optional ``md5``, ``size_bytes``, ``licence`` (+ ``licence_url``,
``licence_requires_acceptance``), ``citation``, ``converter``, ``native_num_classes``, ``allowed_missing``
(network-key patterns that may stay at initialisation), ``allowed_unexpected`` (checkpoint-key patterns
that may stay unused), ``class_keys`` (network-key patterns whose shape follows the class count),
``plan_defaults`` (read into `medssl.plan.PlanDefaults`: ``spacing`` (absent: unset; null: pretrained at native
spacing; either way a fine-tuning plan then takes the data's median), ``orientation``,
``normalization`` (one ``{"scheme", "params"}``), ``patch_size`` in (i, j, k) order), ``verified_against``.
"""
from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from ..errors import InputError, did_you_mean

CATALOG_FILE = Path(__file__).with_name("catalog.json")
CATALOG_VERSION = 1
ORIENTATIONS = ("RAS", "LPS", "LAS", "RPS", "LPI", "RAI", "native")
SCHEMES = ("ct_window", "zscore", "percentile", "none")
_STR, _BOOL, _INT, _LIST, _DICT = (str,), (bool,), (int,), (list,), (dict,)
FIELDS: Dict[str, tuple] = {  # name -> (allowed types, required)
    "id": (_STR, True), "title": (_STR, True), "family": (_STR, True), "arch": (_DICT, True),
    "source": (_DICT, True), "file_name": (_STR, True), "alt_file_names": (_LIST, False),
    "sha256": ((str, type(None)), True), "sha256_note": (_STR, False), "md5": ((str, type(None)), False),
    "md5_note": (_STR, False), "size_bytes": (_INT, True), "licence": (_STR, True), "licence_url": (_STR, False),
    "licence_requires_acceptance": (_BOOL, True), "citation": (_STR, True), "converter": (_STR, True),
    "native_num_classes": ((int, type(None)), True), "allowed_missing": (_LIST, True),
    "allowed_unexpected": (_LIST, True), "class_keys": (_LIST, True), "plan_defaults": (_DICT, True),
    "recipe": (_STR, False),
    "verified_against": (_STR, False), "notes": (_STR, False),
}


class CatalogError(ValueError):
    """The catalog file breaks the schema (a programming/packaging error, not a user error)."""


@dataclass(frozen=True)
class CatalogEntry:
    """One validated catalog entry, typed (the fields of `FIELDS`); ``data`` is the raw JSON object.

    ``CatalogEntry(json_object)`` builds it from a JSON object that `validate_catalog` accepted."""

    data: Dict[str, Any] = field(repr=False)
    id: str = field(init=False)
    title: str = field(init=False)
    family: str = field(init=False)
    arch: Dict[str, Any] = field(init=False)  # {"backbone", "backbone_kwargs", "decoder", "decoder_kwargs"}
    source: Dict[str, Any] = field(init=False)
    file_name: str = field(init=False)
    sha256: Optional[str] = field(init=False)
    size_bytes: int = field(init=False)
    licence: str = field(init=False)
    licence_requires_acceptance: bool = field(init=False)
    citation: str = field(init=False)
    converter: str = field(init=False)
    native_num_classes: Optional[int] = field(init=False)
    allowed_missing: List[str] = field(init=False)
    allowed_unexpected: List[str] = field(init=False)
    class_keys: List[str] = field(init=False)
    plan_defaults: Dict[str, Any] = field(init=False)
    alt_file_names: List[str] = field(init=False)
    licence_url: Optional[str] = field(init=False)
    recipe: Optional[str] = field(init=False)  # the fine-tuning recipe (`medssl.hub.recipes`)
    md5: Optional[str] = field(init=False)
    verified_against: Optional[str] = field(init=False)
    notes: Optional[str] = field(init=False)

    def __post_init__(self) -> None:
        optional = {"alt_file_names": [], "licence_url": None, "recipe": None, "md5": None,
                    "verified_against": None, "notes": None}
        for f in fields(self):
            if f.name != "data":
                object.__setattr__(self, f.name, self.data[f.name] if f.name in self.data else optional[f.name])

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)

    @property
    def hf(self) -> bool:
        return self.source["kind"] == "huggingface"

    @property
    def downloadable(self) -> bool:
        return self.hf or bool(self.source.get("downloadable"))

    @property
    def file_names(self) -> List[str]:
        return [self.file_name] + list(self.alt_file_names)

    @property
    def source_text(self) -> str:
        return f"https://huggingface.co/{self.source['repo_id']}" if self.hf else self.source["url"]


def _check_fields(e: Dict[str, Any], where: str) -> List[str]:
    problems = [f"{where}: unknown field {k!r}" for k in e if k not in FIELDS]
    for name, (types, required) in FIELDS.items():
        if name not in e:
            problems += [f"{where}: missing field {name!r}"] if required else []
        elif not isinstance(e[name], types) or (types == _INT and isinstance(e[name], bool)):
            problems.append(f"{where}: {name!r} has type {type(e[name]).__name__}")
    return problems


def _check_source(src: Dict[str, Any], where: str) -> List[str]:
    if src.get("kind") == "huggingface":
        ok = isinstance(src.get("repo_id"), str) and "/" in src["repo_id"] and isinstance(src.get("gated"), bool)
        ok = ok and (src.get("revision") is None or isinstance(src.get("revision"), str))
        return [] if ok else [f"{where}: huggingface source needs repo_id 'owner/name', gated and revision"]
    if src.get("kind") == "url":
        ok = isinstance(src.get("url"), str) and src["url"].startswith("https://")
        return [] if ok and isinstance(src.get("downloadable"), bool) else [f"{where}: url source needs an https url and downloadable"]
    return [f"{where}: source kind must be 'huggingface' or 'url'"]


def _check_plan(p: Dict[str, Any], where: str) -> List[str]:
    out = []
    if p.get("spacing") is not None and not _numbers(p["spacing"], 3, positive=True):
        out.append(f"{where}: plan_defaults.spacing must be 3 positive numbers, null or absent")
    if p.get("orientation") not in ORIENTATIONS:
        out.append(f"{where}: plan_defaults.orientation must be one of {', '.join(ORIENTATIONS)}")
    norm = p.get("normalization")
    if not (isinstance(norm, list) and len(norm) == 1 and isinstance(norm[0], dict)
            and norm[0].get("scheme") in SCHEMES and isinstance(norm[0].get("params", {}), dict)):
        out.append(f"{where}: plan_defaults.normalization must be one {{scheme, params}} with scheme in {SCHEMES}")
    if not (_numbers(p.get("patch_size"), 3, positive=True) and all(isinstance(v, int) for v in p["patch_size"])):
        out.append(f"{where}: plan_defaults.patch_size must be 3 positive integers")
    extra = set(p) - {"spacing", "orientation", "normalization", "patch_size"}
    return out + ([f"{where}: plan_defaults has unknown keys {sorted(extra)}"] if extra else [])


def _numbers(v: Any, n: int, positive: bool = False) -> bool:
    ok = isinstance(v, list) and len(v) == n and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    return ok and (not positive or all(x > 0 for x in v))


def _check_entry(e: Any, index: int) -> List[str]:
    if not isinstance(e, dict):
        return [f"entry {index}: not a JSON object"]
    where = f"entry {e.get('id', index)!r}"
    problems = _check_fields(e, where)
    if problems:
        return problems
    if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", e["id"]):
        problems.append(f"{where}: id must be lower-case letters, digits and underscores")
    if not re.fullmatch(r"[a-z0-9_]+", e["family"]) or e["arch"].get("backbone") != e["family"]:
        # that the family is registered (with its converter) is checked where torch is at hand: the catalog
        # stays readable without it (Testing/test_weights_catalog.py checks every entry against the registry)
        problems.append(f"{where}: family must be a backbone family name and equal arch.backbone")
    if not all(isinstance(e["arch"].get(k), t) for k, t in
               (("decoder", str), ("backbone_kwargs", dict), ("decoder_kwargs", dict))):
        problems.append(f"{where}: arch needs decoder, backbone_kwargs and decoder_kwargs")
    if "recipe" in e and e["recipe"] not in _recipe_names():
        problems.append(f"{where}: recipe {e['recipe']!r} is not in recipes.json")
    for h, n in (("sha256", 64), ("md5", 32)):
        if e.get(h) is not None and not re.fullmatch(f"[0-9a-f]{{{n}}}", e[h]):
            problems.append(f"{where}: {h} must be {n} lower-case hex digits or null")
    for k in ("allowed_missing", "allowed_unexpected", "class_keys", "alt_file_names"):
        if not all(isinstance(s, str) and s for s in e.get(k, [])):
            problems.append(f"{where}: {k} must be a list of non-empty strings")
    return problems + _check_source(e["source"], where) + _check_plan(e["plan_defaults"], where)


def _recipe_names() -> List[str]:
    from .recipes import recipes

    return list(recipes())


def validate_catalog(data: Any) -> List[str]:
    """All schema problems of a parsed catalog (empty when valid)."""
    if not isinstance(data, dict) or data.get("catalog_version") != CATALOG_VERSION:
        return [f"catalog must be an object with catalog_version {CATALOG_VERSION}"]
    entries = data.get("entries")
    if not isinstance(entries, list) or not entries:
        return ["catalog.entries must be a non-empty list"]
    problems = [p for i, e in enumerate(entries) for p in _check_entry(e, i)]
    ids = [e.get("id") for e in entries if isinstance(e, dict)]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    return problems + ([f"duplicate ids: {dupes}"] if dupes else [])


@lru_cache(maxsize=None)
def _load(path: str) -> Dict[str, CatalogEntry]:
    data = json.loads(Path(path).read_text())
    problems = validate_catalog(data)
    if problems:
        raise CatalogError(f"{path}: " + "; ".join(problems))
    return {e["id"]: CatalogEntry(e) for e in data["entries"]}


def entries(path: Optional[str | Path] = None) -> Dict[str, CatalogEntry]:
    """``{id: CatalogEntry}`` of the (validated) catalog, in file order."""
    return _load(str(path or CATALOG_FILE))


def ids() -> List[str]:
    """All catalog ids, in file order."""
    return list(entries())


def get_entry(entry_id: str) -> CatalogEntry:
    """The entry ``entry_id``; an unknown id raises `InputError` with the closest ids."""
    cat = entries()
    if entry_id not in cat:
        raise InputError(f"unknown weight-catalog id {entry_id!r}.{did_you_mean(entry_id, cat)} "
                         f"See 'medssl weights list'.")
    return cat[entry_id]


def matches(key: str, patterns: Iterable[str]) -> bool:
    """Whether ``key`` matches one of the glob ``patterns`` (``*`` spans dots)."""
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)
