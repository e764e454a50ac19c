"""The pretrained-backbone catalog (``medssl/hub/catalog.json``), read without importing torch or medssl.

Each entry names a backbone (``id``, ``title``, ``family``), where its weights come from (``source``: Hugging
Face, or a URL that is only imported by hand when ``downloadable`` is false), their size and licence
(``size_bytes``, ``licence``, ``licence_url``, ``licence_requires_acceptance``) and a citation. Downloaded
weights live in ``<medssl home>/weights/<id>/<file_name or one of alt_file_names>`` (``medssl.hub.download``).
Downloads and offline imports run through ``medssl weights download|import`` (see `MedSSLLib.commands`).
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from .packages import PackageInfo, licenceNotice, restrictionTag, weightsDir

# Architectures medssl can also build with random weights (no download), offered beside the catalog.
RANDOM_INIT_BACKBONES = ("resenc:tiny", "resenc:small", "resenc:M", "resenc:L")


@dataclass
class CatalogEntry:
    """One pretrained backbone."""

    id: str
    title: str = ""
    family: str = ""
    fileNames: tuple[str, ...] = ()
    downloadable: bool = True
    sizeBytes: Optional[int] = None
    licence: str = ""
    licenceUrl: str = ""
    licenceRequiresAcceptance: bool = False
    citation: str = ""
    notes: str = ""

    def weightsPath(self) -> Path:
        """The cached file (any accepted name), or where the first name would be."""
        folder = weightsDir() / self.id
        existing = [folder / name for name in self.fileNames if (folder / name).is_file()]
        return existing[0] if existing else folder / (self.fileNames[0] if self.fileNames else "weights")

    @property
    def downloaded(self) -> bool:
        return bool(self.fileNames) and self.weightsPath().is_file()

    def describe(self) -> str:
        """Lines for the backbone box: title, size, licence, citation, status."""
        lines = [self.title or self.id, f"Download size: {formatSize(self.sizeBytes)}",
                 f"Licence: {self.licence or 'not stated'}"]
        notice = licenceNotice(self.licence)  # 3DINO: non-commercial, no derivatives
        if notice:
            lines.append(notice[0].upper() + notice[1:])
        if self.licenceRequiresAcceptance:
            lines.append("The licence must be accepted before downloading.")
        if self.citation:
            lines.append(f"Cite: {self.citation}")
        if self.downloaded:
            lines.append(f"Downloaded to {self.weightsPath()}")
        else:
            lines.append("Not downloaded yet." if self.downloadable else
                         "Download it by hand from the authors' page and use Import file.")
        return "\n".join(lines)


def formatSize(sizeBytes: Optional[int]) -> str:
    """``"409 MB"``, ``"1.4 GB"``; ``"unknown"`` when not given."""
    if not sizeBytes:
        return "unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if sizeBytes >= scale:
            value = sizeBytes / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{sizeBytes} B"


def catalogPath() -> Optional[Path]:
    """``hub/catalog.json`` of the installed medssl (found without importing medssl), or None."""
    try:
        spec = importlib.util.find_spec("medssl")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "hub" / "catalog.json"
        if candidate.is_file():
            return candidate
    return None


def _entry(raw: dict[str, Any]) -> CatalogEntry:
    size, source = raw.get("size_bytes"), raw.get("source") or {}
    names = tuple(str(n) for n in [raw.get("file_name"), *(raw.get("alt_file_names") or [])] if n)
    return CatalogEntry(
        id=str(raw["id"]), title=str(raw.get("title", "")), family=str(raw.get("family", "")), fileNames=names,
        downloadable=source.get("kind", "huggingface") == "huggingface" or bool(source.get("downloadable")),
        sizeBytes=int(size) if isinstance(size, (int, float)) else None,
        licence=str(raw.get("licence", "")), licenceUrl=str(raw.get("licence_url", "")),
        licenceRequiresAcceptance=bool(raw.get("licence_requires_acceptance", False)),
        citation=str(raw.get("citation", "")), notes=str(raw.get("notes", "")))


def parseCatalog(data: Any) -> list[CatalogEntry]:
    """Entries of a parsed catalog (``{"entries": [...]}`` or a bare list); raises ValueError if malformed."""
    entries = data.get("entries") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ValueError("the weight catalog has no list of entries")
    try:
        return [_entry(raw) for raw in entries]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the weight catalog has a malformed entry ({exc})") from None


def readCatalog(path: Optional[Union[str, os.PathLike]] = None) -> list[CatalogEntry]:
    """The catalog of the installed medssl (or ``path``); empty when medssl is not installed yet."""
    path = Path(path) if path is not None else catalogPath()
    if path is None:
        return []
    return parseCatalog(json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass
class BackboneChoice:
    """One entry of MedSSLTrain's backbone selector: the ``--backbone`` value and what to show."""

    value: str
    title: str
    description: str
    entry: Optional[CatalogEntry] = None


def backboneChoices(packages: Sequence[PackageInfo] = (), entries: Optional[Sequence[CatalogEntry]] = None
                    ) -> list[BackboneChoice]:
    """Pretrained catalog backbones, architectures without pretraining, and local packages to continue from."""
    entries = readCatalog() if entries is None else entries
    choices = [BackboneChoice(e.id, (f"{e.title} ({e.id})" if e.title else e.id) + restrictionTag(e.licence),
                              e.describe(), e) for e in entries]
    choices += [BackboneChoice(a, a, f"{a}: random initialisation, no download") for a in RANDOM_INIT_BACKBONES]
    choices += [BackboneChoice(str(p.path), f"continue from {p.listTitle()}",
                               f"Continue from {p.path.name}:\n{p.summary()}") for p in packages]
    return choices
