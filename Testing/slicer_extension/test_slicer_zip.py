"""``make slicer-zip``: the release zip has the CMake install layout, read from the CMakeLists.txt lists.

The expected layout is written here from the rules of Slicer's and CTK's macros (see Utilities/slicer_zip.py),
not from the zip builder, and compared with what the builder packs from the CMakeLists.txt files; the zip's
use in Slicer (module path, first-use install with real pip) is tested in test_install_real_pip.py.
"""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from medssl_slicer_helpers import REPO

sys.path.insert(0, str(REPO / "Utilities"))
import slicer_zip  # noqa: E402

MODULES = ("MedSSLSegment", "MedSSLTrain")


def trackedFiles(folder: str) -> list[str]:
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "--", folder], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [line for line in out.stdout.splitlines() if "__pycache__" not in line]


def expectedLayout() -> set[str]:
    """What CMake installs into qt-scripted-modules, from the rules, for the files of this checkout."""
    expected = set()
    for module in MODULES:  # slicerMacroBuildScriptedModule: NO_INSTALL_SUBDIR, resources keep their paths
        expected |= {f"{module}.py", f"Resources/Icons/{module}.png", f"Resources/UI/{module}.ui"}
    expected |= {f"MedSSLLib/{p.name}" for p in (REPO / "MedSSLLib").glob("*.py")}  # TARGET_NAME MedSSLLib
    expected |= {f"MedSSLLib/{p.relative_to(REPO / 'MedSSLLib').as_posix()}"
                 for p in (REPO / "MedSSLLib" / "Resources").rglob("*") if p.is_file()}
    expected |= {f"MedSSLLib/core/{name}" for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE")}
    expected |= {f"MedSSLLib/core/{path}" for path in trackedFiles("src/medssl")}
    return expected


def test_zip_has_the_cmake_install_layout_and_the_repository_bytes(tmp_path):
    archive = slicer_zip.buildZip(tmp_path)
    top = f"MedSSL-{slicer_zip.version()}"
    assert archive.name == f"{top}-slicer.zip"
    with zipfile.ZipFile(archive) as handle:
        handle.extractall(tmp_path / "unzipped")
        names = handle.namelist()
    assert all(name.startswith(f"{top}/") for name in names)
    files = {p.relative_to(tmp_path / "unzipped" / top).as_posix()
             for p in (tmp_path / "unzipped" / top).rglob("*") if p.is_file()}
    untracked = {f for f in files if f.startswith("MedSSLLib/core/src/")} - expectedLayout()
    assert files - untracked == expectedLayout(), sorted(files ^ expectedLayout())
    assert not {f for f in untracked if f.endswith(".py")}, "untracked .py files would be packaged"
    layout = slicer_zip.installLayout()
    for name in files:
        assert (tmp_path / "unzipped" / top / name).read_bytes() == layout[name].read_bytes()
    second = slicer_zip.buildZip(tmp_path / "again")
    assert second.read_bytes() == archive.read_bytes()  # reproducible


def test_the_lists_are_the_ones_cmake_installs(tmp_path):
    """Drop a file from a CMake list and it leaves the zip too (one list); a listed file that is gone fails."""
    repo = tmp_path / "repo"
    for name in ("CMakeLists.txt", "pyproject.toml", "README.md", "LICENSE", "NOTICE"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes((REPO / name).read_bytes())
    for folder in ("MedSSLLib", *MODULES, "src/medssl/hub"):
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                target = repo / path.relative_to(REPO)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
    cmake = repo / "MedSSLLib" / "CMakeLists.txt"
    cmake.write_text(cmake.read_text().replace("  curves.py\n", "").replace("set(MEDSSL_CORE_DIRECTORIES src/medssl)",
                                                                         "set(MEDSSL_CORE_DIRECTORIES src/medssl/hub)"))
    layout = slicer_zip.installLayout(repo)
    assert "MedSSLLib/curves.py" not in layout and "MedSSLLib/events.py" in layout
    assert "MedSSLLib/core/src/medssl/hub/catalog.json" in layout
    assert "MedSSLLib/core/src/medssl/cli/main.py" not in layout
    (repo / "MedSSLLib" / "events.py").unlink()
    with pytest.raises(FileNotFoundError, match="events.py"):
        slicer_zip.installLayout(repo)


def test_make_slicer_zip_writes_dist(tmp_path):
    make = subprocess.run(["make", "-n", "slicer-zip"], cwd=REPO, capture_output=True, text=True)
    if make.returncode != 0:
        pytest.skip("make is not available")
    assert "Utilities/slicer_zip.py --out dist" in make.stdout
    out = subprocess.run([sys.executable, str(REPO / "Utilities" / "slicer_zip.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and (tmp_path / f"MedSSL-{slicer_zip.version()}-slicer.zip").is_file(), out.stderr
    assert "Additional module paths" in out.stdout


def test_zip_equals_what_the_real_cmake_install_writes(tmp_path):
    """The root CMakeLists.txt configured, built and installed by CMake with Slicer's and CTK's real macros
    (data/cmake): the installed qt-scripted-modules folder and the zip hold the same files, byte for byte
    (the install also has the .pyc files CTK compiles)."""
    import shutil
    import sysconfig

    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    build, prefix = tmp_path / "build", tmp_path / "install"
    library = Path(sysconfig.get_config_var("LIBDIR") or sys.prefix) / "libpython.so"
    configure = subprocess.run([cmake, "-S", str(REPO), "-B", str(build), "-DBUILD_TESTING=OFF",
                                f"-DSlicer_DIR={Path(__file__).parent / 'data' / 'cmake' / 'Slicer'}",
                                f"-DPYTHON_EXECUTABLE={sys.executable}", f"-DPYTHON_LIBRARIES={library}"],
                               capture_output=True, text=True, timeout=120)
    assert configure.returncode == 0, configure.stderr[-3000:]
    for step in ([cmake, "--build", str(build)], [cmake, "--install", str(build), "--prefix", str(prefix)]):
        out = subprocess.run(step, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    installed = prefix / "lib" / "Slicer-5.10" / "qt-scripted-modules"
    cmakeFiles = {p.relative_to(installed).as_posix(): p for p in installed.rglob("*")
                  if p.is_file() and p.suffix != ".pyc" and "__pycache__" not in p.parts}
    assert any(p.suffix == ".pyc" for p in installed.rglob("*.pyc"))  # CTK's compile step ran
    with zipfile.ZipFile(slicer_zip.buildZip(tmp_path / "dist")) as archive:
        top = f"MedSSL-{slicer_zip.version()}/"
        zipped = {name[len(top):]: archive.read(name) for name in archive.namelist()}
    assert set(zipped) == set(cmakeFiles), sorted(set(zipped) ^ set(cmakeFiles))
    assert all(zipped[name] == path.read_bytes() for name, path in cmakeFiles.items())
