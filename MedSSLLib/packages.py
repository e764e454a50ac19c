"""Fine-tuned model packages on this computer, read without torch or medssl.

A package is a folder with ``plan.json``, ``weights.safetensors`` and ``metadata.json`` (see
``medssl.hub.package``). Packages are registered by living in ``<medssl home>/models/<name>/``; the home
folder is ``$MEDSSL_HOME`` or ``~/.medssl``, the same rule as ``medssl.home`` (kept in step by a test).
Labels come from ``plan.json`` because it carries the terminology; ``metadata.json`` is the fallback.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

PACKAGE_FILES = ("plan.json", "weights.safetensors", "metadata.json")
PACKAGE_FORMAT = "medssl-model-package"
# The same rule as medssl.hub.share.licence_notice (kept in step by a test): 3DINO's CC BY-NC-ND and the like.
RESTRICTIONS = ((re.compile(r"\bNC\b|non-?commercial", re.I), "non-commercial use only"),
                (re.compile(r"\bND\b|no-?deriv", re.I), "no derivatives (sharing a fine-tuned copy may not be allowed)"))


RESTRICTION_TAGS = ("non-commercial", "no derivatives")  # short forms of RESTRICTIONS, same order


def restrictionTag(licence: str) -> str:
    """``" [non-commercial, no derivatives]"`` for 3DINO's CC BY-NC-ND, ``""`` for an unrestricted licence: appended
    to a model's name wherever it is listed (model selector, backbone selector), so the restriction is seen
    before the model is chosen."""
    found = [tag for (pattern, _), tag in zip(RESTRICTIONS, RESTRICTION_TAGS) if pattern.search(licence or "")]
    return f" [{', '.join(found)}]" if found else ""


def licenceNotice(licence: str) -> str:
    """A warning for a non-commercial and/or no-derivatives licence, else '' (shown wherever a model is listed)."""
    found = [what for pattern, what in RESTRICTIONS if pattern.search(licence or "")]
    if not found:
        return ""
    return f"licence restriction: {licence} allows {' and '.join(found)}; check it before using or sharing this model"


def medsslHome() -> Path:
    """The medssl home folder (not created)."""
    env = os.environ.get("MEDSSL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".medssl"


def modelsDir() -> Path:
    return medsslHome() / "models"


def weightsDir() -> Path:
    return medsslHome() / "weights"


@dataclass
class LabelInfo:
    """One output class of a model: label value, name, RGB colour in [0, 1], optional terminology codes."""

    value: int
    name: str
    color: tuple[float, float, float] = (0.5, 0.5, 0.5)
    terminology: Optional[dict[str, list[str]]] = None


@dataclass
class PackageInfo:
    """What the modules show about a package."""

    path: Path
    name: str
    labels: list[LabelInfo]
    channels: list[str]
    licence: str = ""
    created: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def labelNames(self) -> list[str]:
        return [label.name for label in self.labels]

    def listTitle(self) -> str:
        """The folder name and any licence restriction, for model lists."""
        return self.path.name + restrictionTag(self.licence)

    def summary(self) -> str:
        """Several lines: labels, channels, where it came from, licence."""
        prov = self.provenance
        lines = [f"Labels: {', '.join(self.labelNames) or 'none'}",
                 f"Input channels: {', '.join(self.channels)}"]
        if prov.get("backbone"):
            lines.append(f"Backbone: {prov['backbone']}")
        if prov.get("steps") is not None:
            dice = prov.get("best_mean_dice")
            diceText = f", best validation Dice {dice:.3f}" if isinstance(dice, (int, float)) else ""
            lines.append(f"Trained {prov['steps']} steps on {len(prov.get('train_cases', []))} case(s){diceText}")
        if self.created:
            lines.append(f"Created: {self.created}")
        lines.append(f"Licence: {self.licence or 'not stated'}")
        if self.licenceNotice:
            lines.append(self.licenceNotice[0].upper() + self.licenceNotice[1:])
        return "\n".join(lines)

    @property
    def licenceNotice(self) -> str:
        return licenceNotice(self.licence)


class PackageError(ValueError):
    """A folder that is not a readable medssl model package."""


def _readJson(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PackageError(f"{path} cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise PackageError(f"{path} does not hold a JSON object")
    return data


def _label(entry: dict[str, Any]) -> LabelInfo:
    color = tuple(float(c) for c in entry.get("color", (0.5, 0.5, 0.5)))[:3]
    return LabelInfo(int(entry["value"]), str(entry["name"]), color, entry.get("terminology") or None)


def _labels(plan: dict[str, Any], meta: dict[str, Any]) -> list[LabelInfo]:
    entries = plan.get("labels") or meta.get("labels") or []
    try:
        labels = [_label(entry) for entry in entries]
    except (KeyError, TypeError, ValueError) as exc:
        raise PackageError(f"the label list is malformed ({exc})") from None
    return [label for label in labels if label.value != 0]


def _channels(plan: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    if plan.get("channels"):
        return [str(c.get("name", f"channel {i + 1}")) for i, c in enumerate(plan["channels"])]
    return [str(c) for c in meta.get("channels", [])] or ["image"]


def isPackage(folder: Union[str, os.PathLike]) -> bool:
    folder = Path(folder)
    return all((folder / name).is_file() for name in PACKAGE_FILES)


def readPackage(folder: Union[str, os.PathLike]) -> PackageInfo:
    """Read a package's labels, channels, licence and provenance; raises `PackageError`."""
    folder = Path(folder)
    missing = [name for name in PACKAGE_FILES if not (folder / name).is_file()]
    if missing:
        raise PackageError(f"{folder} is not a medssl model package ({', '.join(missing)} missing)")
    meta, plan = _readJson(folder / "metadata.json"), _readJson(folder / "plan.json")
    if meta.get("format") != PACKAGE_FORMAT:
        raise PackageError(f"{folder}/metadata.json is not medssl package metadata")
    return PackageInfo(path=folder, name=str(meta.get("name") or folder.name), labels=_labels(plan, meta),
                       channels=_channels(plan, meta), licence=str(meta.get("licence", "")),
                       created=str(meta.get("created", "")), provenance=dict(meta.get("provenance") or {}),
                       versions=dict(meta.get("versions") or {}))


def listPackages(folder: Optional[Union[str, os.PathLike]] = None) -> list[PackageInfo]:
    """All readable packages directly inside ``folder`` (default: the models folder), by folder name."""
    root = Path(folder) if folder is not None else modelsDir()
    if not root.is_dir():
        return []
    found = []
    for child in sorted(root.iterdir(), key=lambda p: p.name.lower()):
        if child.is_dir() and isPackage(child):
            try:
                found.append(readPackage(child))
            except PackageError as exc:
                logging.warning(f"MedSSL: skipping {child}: {exc}")
    return found


def safeName(name: str) -> str:
    """A folder name made of letters, digits, ``-`` and ``_`` (spaces become ``_``)."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", name.strip()).strip("_")
    if not cleaned:
        raise ValueError("give the model a name made of letters or digits")
    return cleaned


def nextVersionName(name: str) -> str:
    """``liver`` -> ``liver_v2``, ``liver_v2`` -> ``liver_v3`` (for "Continue training")."""
    match = re.fullmatch(r"(.*)_v(\d+)", name)
    if match:
        return f"{match.group(1)}_v{int(match.group(2)) + 1}"
    return f"{name}_v2"


def packageFolder(name: str, folder: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Where a package called ``name`` is registered."""
    return (Path(folder) if folder is not None else modelsDir()) / safeName(name)
