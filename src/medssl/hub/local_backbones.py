"""Backbones the user made: ``medssl pretrain`` exports registered under a name of their own.

``medssl weights import RUN --id NAME`` checks the export (hashes, and that its plan's network takes every
``encoder.*`` tensor), copies ``backbone.safetensors``, ``plan.json`` and ``metadata.json`` atomically to
``$MEDSSL_HOME/weights/local/NAME/`` and from then on ``--backbone NAME`` works like a catalog id, in the CLI,
the Python API and the Slicer modules. ``medssl weights list``, ``path`` and ``remove`` show them too.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import InputError
from ..io.atomic import atomic_dir
from ..home import weights_dir
from .ssl_export import METADATA, PLAN, WEIGHTS, export_folder, resolve_ssl_export, verify_export

NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def local_root() -> Path:
    return weights_dir() / "local"


def local_source(name: str):
    """`BackboneSource` of the registered backbone ``name`` (None if there is none)."""
    folder = local_path(name)
    return resolve_ssl_export(folder) if folder else None


def local_path(name: str) -> Optional[Path]:
    """The registered export folder of ``name``, or None."""
    if not NAME_RULE.match(name):
        return None
    folder = local_root() / name
    return folder if export_folder(folder) == folder else None


def local_names() -> List[str]:
    root = local_root()
    return sorted(p.name for p in root.iterdir() if local_path(p.name)) if root.is_dir() else []


def import_export(source: str | Path, name: str, overwrite: bool = False) -> Path:
    """Check the export ``source`` (weights file, export folder or run folder) and register it as ``name``."""
    from .catalog import entries

    if not NAME_RULE.match(name):
        raise InputError(f"--id {name!r}: use letters, digits, '_', '-' or '.' (at most 64), e.g. mae_brain_t1")
    if name in entries():
        raise InputError(f"--id {name!r} is a weight-catalog id; give your own backbone another name")
    folder = export_folder(source)
    if folder is None:
        raise InputError(f"{source} is not an export of 'medssl pretrain' (no export/{METADATA}); give RUN, "
                         f"RUN/export or RUN/export/{WEIGHTS}")
    if local_path(name) and not overwrite:
        raise InputError(f"a backbone named {name!r} is already registered; pass --overwrite or choose another --id")
    verify_export(folder)  # hashes, and every encoder tensor loads into the plan's network
    target = local_root() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target) as tmp:
        for file in (WEIGHTS, PLAN, METADATA):
            shutil.copy2(folder / file, tmp / file)
    return target


def describe(name: str) -> Dict[str, Any]:
    """One row for ``medssl weights list``: id, method, steps, architecture, size and path."""
    folder = local_root() / name
    meta = json.loads((folder / METADATA).read_text())
    arch = json.loads((folder / PLAN).read_text()).get("architecture", {})
    return {"id": name, "family": arch.get("backbone", "?"), "method": meta.get("method"),
            "steps": meta.get("steps"), "size_gb": round((folder / WEIGHTS).stat().st_size / 1e9, 3),
            "path": str(folder)}


def remove_local(name: str) -> bool:
    folder = local_path(name)
    if folder is None:
        return False
    shutil.rmtree(folder)
    return True
