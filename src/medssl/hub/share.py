"""Share a model package as one zip: ``medssl export PKG --out model.zip`` / ``medssl import model.zip``.

The zip holds one folder ``<name>/`` with the package files (``plan.json``, ``weights.safetensors``,
``metadata.json``; the training run state stays home) and ``manifest.json``: the sha256 and size of every
file, the package's licence and provenance. Import trusts nothing in the zip: every entry must be a plain
file directly inside that one folder (no absolute paths, ``..``, drive letters, backslashes, links or
devices: the "zip slip" of Snyk's 2018 advisory), no entry may be larger than the manifest says, every
file's sha256 must match the manifest and the package's own hashes (`check_files`) must hold; only then is
the folder moved into place, and an existing folder is replaced only with ``overwrite``. The MONAI bundle
and Python wheel RECORD files follow the same "hash every file in a manifest" idea.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import InputError, PackageError
from ..io.atomic import atomic_dir, atomic_path, check_replaceable, ensure_writable_dir
from .package import FILES, check_files, read_metadata, sha256_file

MANIFEST = "manifest.json"
EXPORT_FORMAT = "medssl-model-export"
EXPORT_VERSION = 1
ALLOWED = set(FILES) | {MANIFEST}
MAX_MANIFEST_BYTES = 1 << 20
RESTRICTIONS = ((re.compile(r"\bNC\b|non-?commercial", re.I), "non-commercial use only"),
                (re.compile(r"\bND\b|no-?deriv", re.I), "no derivatives (sharing a fine-tuned copy may not be allowed)"))


def licence_notice(licence: str) -> str:
    """A warning for a non-commercial and/or no-derivatives licence (3DINO's CC BY-NC-ND), else ''."""
    found = [what for pattern, what in RESTRICTIONS if pattern.search(licence or "")]
    if not found:
        return ""
    return f"licence restriction: {licence} allows {' and '.join(found)}; check it before using or sharing this model"


@dataclass
class SharedModel:
    """What export/import did and what the user must be told."""

    folder: Path
    archive: Path
    name: str
    licence: str
    provenance: Dict[str, Any] = field(default_factory=dict)
    files: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @property
    def notice(self) -> str:
        return licence_notice(self.licence)

    def describe(self) -> List[str]:
        """Lines shown by the CLI and the Slicer modules: licence, provenance and any restriction."""
        prov = self.provenance
        lines = [f"licence: {self.licence or 'not stated'}"]
        bits = [f"backbone {prov['backbone']}" if prov.get("backbone") else "",
                f"{prov['steps']} steps" if prov.get("steps") is not None else "",
                f"{len(prov.get('train_cases', []))} training case(s)" if "train_cases" in prov else "",
                f"best validation Dice {prov['best_mean_dice']:.3f}"
                if isinstance(prov.get("best_mean_dice"), (int, float)) else ""]
        lines.append("provenance: " + (", ".join(b for b in bits if b) or "not recorded"))
        return lines + ([self.notice] if self.notice else [])


def export_package(package: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> SharedModel:
    """Write ``out`` (a .zip) from the hash-checked package folder ``package``; see the module docstring."""
    folder, out = Path(package), Path(out)
    check_files(folder)  # a changed or damaged package is refused before anything is written
    meta = read_metadata(folder)
    if out.suffix.lower() != ".zip":
        raise InputError(f"--out {out} must end in .zip")
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    name = folder.resolve().name
    files = {f: {"sha256": sha256_file(folder / f), "size": (folder / f).stat().st_size} for f in FILES}
    manifest = {"format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "name": name,
                "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files,
                "licence": str(meta.get("licence", "")), "provenance": meta.get("provenance") or {}}
    ensure_writable_dir(out.parent)
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in FILES:
            zf.write(folder / f, f"{name}/{f}")
        zf.writestr(f"{name}/{MANIFEST}", json.dumps(manifest, indent=1, sort_keys=True))
    return SharedModel(folder, out, name, manifest["licence"], manifest["provenance"], files)


def _is_link_or_special(info: zipfile.ZipInfo) -> bool:
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0: the zip recorded no Unix file type
    return kind not in (0, stat.S_IFREG, stat.S_IFDIR)


def _entry_parts(info: zipfile.ZipInfo, archive: Path) -> List[str]:
    """The two path parts (folder, file) of a safe entry; raises `PackageError` for anything else."""
    name = info.filename
    bad = (name.startswith(("/", "\\")) or "\\" in name or re.match(r"^[A-Za-z]:", name) is not None
           or any(p in ("", ".", "..") for p in name.rstrip("/").split("/")))
    if bad:
        raise PackageError(f"{archive}: the entry {name!r} would be written outside the model folder; "
                           f"this zip is unsafe, do not use it")
    if _is_link_or_special(info):
        raise PackageError(f"{archive}: the entry {name!r} is a symbolic link or special file; this zip is unsafe, "
                           f"do not use it")
    parts = name.rstrip("/").split("/")
    if info.is_dir() and len(parts) == 1:
        return parts
    if len(parts) != 2 or parts[1] not in ALLOWED or info.is_dir():
        raise PackageError(f"{archive}: unexpected entry {name!r}; a medssl model zip holds one folder with "
                           f"{', '.join(sorted(ALLOWED))}")
    return parts


def _read_manifest(zf: zipfile.ZipFile, archive: Path) -> Dict[str, Any]:
    infos = zf.infolist()
    tops = {_entry_parts(i, archive)[0] for i in infos}
    names = [i.filename for i in infos if not i.is_dir()]
    if len(tops) != 1 or len(names) != len(set(names)):
        raise PackageError(f"{archive}: a medssl model zip holds exactly one folder, each file once; this one does not")
    top = tops.pop()
    entry = f"{top}/{MANIFEST}"
    if entry not in names or zf.getinfo(entry).file_size > MAX_MANIFEST_BYTES:
        raise PackageError(f"{archive} has no {MANIFEST}; it was not written by 'medssl export'")
    try:
        manifest = json.loads(zf.read(entry))
    except ValueError as exc:
        raise PackageError(f"{archive}: {MANIFEST} cannot be read ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise PackageError(f"{archive}: {MANIFEST} is not a medssl export manifest")
    if int(manifest.get("format_version", 0)) > EXPORT_VERSION:
        raise PackageError(f"{archive} was exported by a newer medssl; upgrade medssl")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(FILES) or set(names) != {f"{top}/{f}" for f in ALLOWED}:
        raise PackageError(f"{archive}: the files in the zip differ from those its manifest lists; "
                           f"re-export the model")
    manifest["_top"] = top
    return manifest


def _extract_checked(zf: zipfile.ZipFile, top: str, name: str, expected: Dict[str, Any], dest: Path,
                     archive: Path) -> None:
    """Stream one entry to ``dest/name``, never past its manifest size, and compare its sha256."""
    limit = int(expected.get("size", -1))
    h, written = hashlib.sha256(), 0
    target = (dest / name).resolve()
    if target.parent != dest.resolve():
        raise PackageError(f"{archive}: the entry {name!r} would be written outside the model folder")
    with zf.open(f"{top}/{name}") as src, open(target, "wb") as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            written += len(block)
            if written > limit:
                raise PackageError(f"{archive}: {name} is larger than its manifest says; the zip was changed, "
                                   f"do not use it")
            h.update(block)
            dst.write(block)
    if written != limit or h.hexdigest() != expected.get("sha256"):
        raise PackageError(f"{archive}: {name} does not match the sha256 in {MANIFEST} (changed or damaged); "
                           f"download or export the model again")


def import_package(archive: str | os.PathLike, out: Optional[str | os.PathLike] = None,
                   overwrite: bool = False) -> SharedModel:
    """Check and unpack ``archive`` into ``out`` (default ``<medssl home>/models/<name>``); see the module
    docstring. Nothing is written to ``out`` unless every check passes."""
    from ..home import models_dir

    archive = Path(archive)
    if not archive.is_file():
        raise InputError(f"{archive} does not exist; give the .zip that 'medssl export' wrote")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageError(f"{archive} is not a readable zip ({exc}); download it again") from None
    with zf:
        manifest = _read_manifest(zf, archive)
        top = manifest.pop("_top")
        dest = Path(out) if out is not None else models_dir() / top
        if dest.exists() and not overwrite:
            raise InputError(f"{dest} already exists; pass --overwrite to replace it or give another --out")
        check_replaceable(dest, "--out")  # --overwrite replaces a model folder, never a folder of the user's
        ensure_writable_dir(dest.parent)
        with tempfile.TemporaryDirectory(prefix=".medssl-import-", dir=dest.parent) as tmp:
            for name in FILES:
                _extract_checked(zf, top, name, manifest["files"][name], Path(tmp), archive)
            try:  # the package's own hashes (weights, plan) must hold too
                _plan, meta = check_files(tmp)
            except PackageError as exc:  # named after the zip the user gave, not the scratch folder
                raise PackageError(str(exc).replace(str(tmp), f"{archive} ({top}/)")) from None
            with atomic_dir(dest) as final:
                for name in FILES:
                    shutil.move(str(Path(tmp) / name), final / name)
    return SharedModel(dest, archive, top, str(meta.get("licence", "")), meta.get("provenance") or {},
                       manifest["files"])
