"""A clean Python like a fresh Slicer's, and a local wheel index, both built offline from this environment.

- `makeCleanPython`: ``python -m venv --without-pip`` (no system site-packages), plus the packages a fresh
  Slicer already has (pip, packaging, numpy, SimpleITK) and, now or later (`addToPath`, as the PyTorch
  extension's ``installTorch`` would), torch and what it requires. They are symlinked into folders *outside*
  the venv and put on its path by ``.pth`` files: pip then sees them as installed but never uninstalls them
  ("outside environment"), so nothing here can touch the environment they come from.
- `buildWheelhouse`: every other distribution the given requirements pull in, repacked as a wheel from the
  files its installed ``RECORD`` lists, for ``pip install --no-index --find-links`` (no network).
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Iterable

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

SLICER_SHIPPED = ("pip", "packaging", "numpy", "SimpleITK")
PYTORCH_EXTENSION = ("torch",)  # with everything torch requires
DROPPED_METADATA = ("INSTALLER", "REQUESTED", "direct_url.json", "RECORD")


def closure(requirements: Iterable[str], skip: Iterable[str] = ()) -> dict[str, metadata.Distribution]:
    """The installed distributions ``requirements`` need here (markers evaluated, no extras), by canonical name."""
    env = {**default_environment(), "extra": ""}
    skipped = {canonicalize_name(name) for name in skip}
    found: dict[str, metadata.Distribution] = {}
    pending = list(requirements)
    while pending:
        req = Requirement(pending.pop())
        name = canonicalize_name(req.name)
        if name in found or name in skipped or (req.marker is not None and not req.marker.evaluate(env)):
            continue
        found[name] = dist = metadata.distribution(req.name)
        pending += dist.requires or []
    return found


def _topLevel(dist: metadata.Distribution) -> set[str]:
    return {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith(("..", "__pycache__"))}


def _linkDistributions(names: Iterable[str], folder: Path, skip: Iterable[str] = ()) -> Path:
    """``folder`` with symlinks to the top-level entries of ``names`` and what they require (but ``skip``)."""
    folder.mkdir()
    for dist in closure(names, skip).values():
        root = Path(dist.locate_file(""))
        for entry in _topLevel(dist):
            if not (folder / entry).exists():
                (folder / entry).symlink_to(root / entry, target_is_directory=(root / entry).is_dir())
    return folder


def sitePackages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def addToPath(python: Path, folder: Path) -> None:
    """A ``.pth`` file in the venv's site-packages naming ``folder`` (outside the venv: pip never removes it)."""
    (sitePackages(python) / f"{folder.name}.pth").write_text(f"{folder}\n", encoding="utf-8")


def makeCleanPython(folder: Path, withTorch: bool = True) -> tuple[Path, Path]:
    """A new venv under ``folder`` that has only `SLICER_SHIPPED` (and torch with its closure, ``withTorch``).

    Returns its interpreter and the folder standing for what the PyTorch extension installs (on the venv's path
    when ``withTorch``; else `addToPath` puts it there, as ``installTorch`` would)."""
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    addToPath(python, _linkDistributions(SLICER_SHIPPED, folder / "slicer-shipped"))
    torch = _linkDistributions(PYTORCH_EXTENSION, folder / "pytorch-extension", skip=closure(SLICER_SHIPPED))
    if withTorch:
        addToPath(python, torch)
    return python, torch


def _wheelTag(dist: metadata.Distribution) -> str:
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    return tags[0] if tags else "py3-none-any"


def repackWheel(dist: metadata.Distribution, wheelhouse: Path) -> Path:
    """A wheel of an installed distribution: the files of its RECORD (no caches, scripts or installer files)."""
    name = canonicalize_name(dist.metadata["Name"]).replace("-", "_")
    info = next(str(f).split("/")[0] for f in dist.files if str(f).split("/")[0].endswith(".dist-info"))
    wheel = wheelhouse / f"{name}-{dist.version}-{_wheelTag(dist)}.whl"
    root = Path(dist.locate_file(""))
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as archive:
        for entry in sorted(str(f) for f in dist.files):
            if entry.startswith("..") or "__pycache__" in entry or entry.endswith(".pyc"):
                continue
            if entry.startswith(info + "/") and entry.split("/", 1)[1] in DROPPED_METADATA:
                continue
            data = (root / entry).read_bytes()
            archive.writestr(entry, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{entry},sha256={digest},{len(data)}")
        archive.writestr(f"{info}/RECORD", "\n".join(record + [f"{info}/RECORD,,"]) + "\n")
    return wheel


def buildWheelhouse(requirements: Iterable[str], wheelhouse: Path, noDeps: Iterable[str] = ()) -> list[Path]:
    """Wheels of everything ``requirements`` pull in here except what `makeCleanPython` already provides,
    and of the ``noDeps`` distributions alone (installed with ``--no-deps``)."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    provided = set(closure(SLICER_SHIPPED)) | set(closure(PYTORCH_EXTENSION))
    needed = closure(requirements, skip=provided)
    needed.update({canonicalize_name(Requirement(r).name): metadata.distribution(Requirement(r).name) for r in noDeps})
    return [repackWheel(dist, wheelhouse) for dist in needed.values()]


def offlinePipEnvironment(wheelhouse: Path) -> dict[str, str]:
    """Environment for real pip that can reach only ``wheelhouse`` (no index, no user config, no cache)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update({"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse), "PIP_CONFIG_FILE": os.devnull,
                "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1", "PYTHONNOUSERSITE": "1",
                "HF_HUB_OFFLINE": "1"})
    return env
