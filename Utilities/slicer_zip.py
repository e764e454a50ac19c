"""``make slicer-zip``: ``dist/MedSSL-<version>-slicer.zip``, the extension as the CMake install lays it out.

No Slicer build is needed: the file lists are read from the CMakeLists.txt files themselves (the one list
CMake installs from), and each list goes where Slicer's and CTK's macros install it, relative to
``lib/Slicer-X.Y/qt-scripted-modules``:

- ``slicerMacroBuildScriptedModule`` (Slicer ``CMake/SlicerMacroBuildScriptedModule.cmake``, v5.10.0) calls
  ``ctkMacroCompilePythonScript`` with ``NO_INSTALL_SUBDIR``: ``MODULE_PYTHON_SCRIPTS`` and
  ``MODULE_PYTHON_RESOURCES`` land in the folder itself, resources keeping their relative path;
- ``ctkMacroCompilePythonScript(TARGET_NAME MedSSLLib ...)`` without ``NO_INSTALL_SUBDIR`` (CTK
  ``CMake/ctkMacroCompilePythonScript.cmake`` @868d56c: ``install(DIRECTORY <destination dir>)``): its SCRIPTS
  and RESOURCES land in ``MedSSLLib/``;
- ``MEDSSL_CORE_FILES`` and ``MEDSSL_CORE_DIRECTORIES`` (repository root, ``__pycache__`` excluded) land in
  ``MedSSLLib/core`` (``MedSSLLib/CMakeLists.txt``).

The zip holds one folder, ``MedSSL-<version>/``, with that layout; added to Slicer's *Additional module paths*
it loads both modules, and MedSSLLib uses the core from ``MedSSLLib/core``. Entries are sorted and dated
1980-01-01, so the same sources give the same bytes.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
CORE_FOLDER = "MedSSLLib/core"


def _cmakeText(path: Path) -> str:
    """The file without comments (MedSSL's CMake lists hold no quoted ``#``)."""
    return "\n".join(line.split("#", 1)[0] for line in path.read_text(encoding="utf-8").splitlines())


def cmakeList(text: str, variable: str, values: dict[str, str] | None = None) -> list[str]:
    """The items of ``set(<variable> ...)``, with ``${NAME}`` replaced from ``values``."""
    match = re.search(rf"\bset\s*\(\s*{re.escape(variable)}\b(.*?)\)", text, re.S)
    if match is None:
        raise ValueError(f"set({variable} ...) not found")
    items = match.group(1).split()
    for name, value in (values or {}).items():
        items = [item.replace("${" + name + "}", value) for item in items]
    return items


def subdirectories(repo: Path = REPO) -> list[str]:
    return re.findall(r"\badd_subdirectory\s*\(\s*([^\s)]+)\s*\)", _cmakeText(repo / "CMakeLists.txt"))


def _walk(folder: Path) -> list[Path]:
    """Every file below ``folder`` outside ``__pycache__`` (CMake: ``PATTERN "__pycache__" EXCLUDE``)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.relative_to(folder).parts)


def installLayout(repo: Path = REPO) -> dict[str, Path]:
    """``{path inside qt-scripted-modules: source file}`` for everything the CMake install puts there."""
    layout: dict[str, Path] = {}
    for sub in subdirectories(repo):
        text = _cmakeText(repo / sub / "CMakeLists.txt")
        if "slicerMacroBuildScriptedModule" in text:
            name = cmakeList(text, "MODULE_NAME")[0]
            for item in cmakeList(text, "MODULE_PYTHON_SCRIPTS", {"MODULE_NAME": name}):
                layout[item if item.endswith(".py") else f"{item}.py"] = repo / sub / item
            for item in cmakeList(text, "MODULE_PYTHON_RESOURCES", {"MODULE_NAME": name}):
                layout[item] = repo / sub / item
        target = re.search(r"ctkMacroCompilePythonScript\s*\(\s*TARGET_NAME\s+(\S+)", text)
        if target and "NO_INSTALL_SUBDIR" not in text:
            prefix = target.group(1)
            for item in cmakeList(text, "MEDSSLLIB_PYTHON_SCRIPTS") + cmakeList(text, "MEDSSLLIB_PYTHON_RESOURCES"):
                layout[f"{prefix}/{item}"] = repo / sub / item
        if "MEDSSL_CORE_FILES" in text:
            for item in cmakeList(text, "MEDSSL_CORE_FILES"):
                layout[f"{CORE_FOLDER}/{item}"] = repo / item
            for folder in cmakeList(text, "MEDSSL_CORE_DIRECTORIES"):
                for path in _walk(repo / folder):
                    layout[f"{CORE_FOLDER}/{path.relative_to(repo).as_posix()}"] = path
    missing = [str(source) for source in layout.values() if not source.is_file()]
    if missing:
        raise FileNotFoundError(f"CMakeLists.txt lists files that do not exist: {', '.join(missing)}")
    return layout


def version(repo: Path = REPO) -> str:
    found = re.search(r'^version\s*=\s*"([^"]+)"', (repo / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    if found is None:
        raise ValueError("pyproject.toml has no version")
    return found.group(1)


def buildZip(outDir: Path, repo: Path = REPO) -> Path:
    """Write ``<outDir>/MedSSL-<version>-slicer.zip``; returns its path."""
    top = f"MedSSL-{version(repo)}"
    outDir.mkdir(parents=True, exist_ok=True)
    target = outDir / f"{top}-slicer.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, source in sorted(installLayout(repo).items()):
            info = zipfile.ZipInfo(f"{top}/{name}", ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, source.read_bytes())
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output folder (default: dist)")
    args = parser.parse_args(argv)
    try:
        target = buildZip(args.out)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB): unzip it and add its MedSSL-{version()} "
          f"folder in Slicer's Application Settings > Modules > Additional module paths")
    return 0


if __name__ == "__main__":
    sys.exit(main())
