"""Where the medssl core is, and how Slicer's Python and its child processes use it without pip.

The core is pure Python and travels with the extension, so it is never pip-installed: its ``src`` folder is
put first on ``sys.path`` (in Slicer's process by `activate`, in each ``medssl`` child process by
`launchArgs`), and only its third-party requirements are installed (`MedSSLLib.install`). Two layouts are
recognised, both ``<root>/pyproject.toml`` + ``<root>/src/medssl``:

- ``MedSSLLib/core``: what ``MedSSLLib/CMakeLists.txt`` installs (Extensions Manager) and what
  ``make slicer-zip`` packs (release zip);
- the repository itself (``MedSSLLib/..``): the modules run from a clone through Slicer's
  *Additional module paths*.

The core's version and requirements are read from its ``pyproject.toml`` (PEP 621 ``[project]`` table), the
same file pip and the developers' ``make install`` read, so the two cannot drift.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
# The bundled layout (CMake install, release zip) first, then the clone the modules run from.
CANDIDATE_ROOTS = (HERE / "core", HERE.parent)
# ``python -c`` program of the child: put the core first on sys.path (the first argument), run ``-m medssl``.
# sys.path[0] (not PYTHONPATH) so that an older medssl that pip installed into site-packages cannot win.
RUNNER = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
          "runpy.run_module('medssl', run_name='__main__', alter_sys=True)")


class CoreNotFound(RuntimeError):
    """Neither layout holds a medssl core."""


def isCoreRoot(root: Path) -> bool:
    return (root / "pyproject.toml").is_file() and (root / "src" / "medssl" / "__init__.py").is_file()


def findCoreRoot(candidates=None) -> Optional[Path]:
    """The first candidate folder (default `CANDIDATE_ROOTS`) holding ``pyproject.toml`` and ``src/medssl``."""
    return next((Path(root) for root in candidates or CANDIDATE_ROOTS if isCoreRoot(Path(root))), None)


def coreRoot() -> Path:
    """`findCoreRoot` or a one-line error saying what to do."""
    root = findCoreRoot()
    if root is None:
        raise CoreNotFound(f"the MedSSL core (src/medssl) was found neither in {CANDIDATE_ROOTS[0]} nor in "
                           f"{CANDIDATE_ROOTS[1]}; reinstall the MedSSL extension, or add the module folders of a "
                           f"complete clone of the repository")
    return root


def coreSource(root: Optional[Path] = None) -> Path:
    """The folder that goes on sys.path (it holds the ``medssl`` package)."""
    return (root or coreRoot()) / "src"


def readProject(root: Optional[Path] = None) -> dict:
    """The ``[project]`` table of the core's pyproject.toml (``tomllib``: Python 3.11+, Slicer 5.10+ has 3.12)."""
    import tomllib

    with open((root or coreRoot()) / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]


def coreVersion(root: Optional[Path] = None) -> str:
    """``[project] version``; read with a pattern where ``tomllib`` is missing (an older Slicer's diagnostics)."""
    try:
        return str(readProject(root)["version"])
    except ImportError:
        text = ((root or coreRoot()) / "pyproject.toml").read_text(encoding="utf-8")
        found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
        return found.group(1) if found else "unknown"


def coreRequirements(root: Optional[Path] = None) -> list[str]:
    """The core's runtime requirements (``[project] dependencies``), as written there."""
    return [str(line) for line in readProject(root).get("dependencies", [])]


def coreExtraRequirements(extra: str, root: Optional[Path] = None) -> list[str]:
    """The requirements of one ``[project.optional-dependencies]`` extra, as written there."""
    return [str(line) for line in readProject(root).get("optional-dependencies", {}).get(extra, [])]


def activate(root: Optional[Path] = None) -> Optional[Path]:
    """Put the core's ``src`` first on ``sys.path`` (once); returns it, or None when no core is found."""
    root = root or findCoreRoot()
    if root is None:
        return None
    source = str(coreSource(root))
    if source in sys.path:
        sys.path.remove(source)
    sys.path.insert(0, source)
    return Path(source)


def launchArgs(root: Optional[Path] = None) -> list[str]:
    """Interpreter arguments that run ``medssl`` from the core: ``-c RUNNER <core>/src`` (then medssl's own)."""
    return ["-c", RUNNER, os.fspath(coreSource(root))]
