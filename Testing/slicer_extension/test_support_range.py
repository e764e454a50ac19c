"""The declared support range (Slicer 5.10 and 5.12+): feature detection, and an older Slicer's Python.

Slicer 5.6 and 5.8 run Python 3.9.10 (their CMakeLists.txt, ``Slicer_REQUIRED_PYTHON_VERSION``): on a Python
3.9 interpreter, when one is installed here, MedSSLLib imports, every module file compiles, and the
diagnostics and the install button say in one line which Slicer MedSSL needs.
"""

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from medssl_slicer_helpers import REPO

from MedSSLLib import install, support

OLD_SLICER_PYTHON = """
import sys, py_compile
sys.path.append(sys.argv[1])
from MedSSLLib import install, support  # what the modules import at start-up
shown = []
assert not support.checkSupported(shown.append)
print(shown[0])
print(install.basicDiagnostics().splitlines()[0])
for path in sys.argv[2:]:
    py_compile.compile(path, cfile=path + ".py39-check", doraise=True)
"""


def python39():
    """A working Python 3.9 (pyenv's shims may name one that does not run), or None."""
    for candidate in [*sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9"))),
                      shutil.which("python3.9")]:
        if candidate and subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 9)"],
                                        capture_output=True).returncode == 0:
            return candidate
    return None


def test_this_python_is_supported_and_an_older_one_is_named_in_one_line():
    assert support.unsupportedReason() is None and support.checkSupported(lambda text: pytest.fail(text))
    reason = support.unsupportedReason(lambda name: None if name == "tomllib" else object())
    assert reason.startswith("MedSSL needs Slicer 5.10 or later (Python 3.12; this Slicer has Python ")
    assert "without tomllib" in reason and reason.endswith("https://download.slicer.org") and "\n" not in reason
    assert not install.basicDiagnostics().startswith("MedSSL needs")


def test_an_older_slicers_python_loads_the_modules_and_says_what_they_need(tmp_path):
    interpreter = python39()
    if interpreter is None:
        pytest.skip("no Python 3.9 here (Slicer 5.6/5.8's Python)")
    sources = sorted(str(p) for p in [*(REPO / "MedSSLLib").glob("*.py"), REPO / "MedSSLSegment" / "MedSSLSegment.py",
                                      REPO / "MedSSLTrain" / "MedSSLTrain.py"])
    copies = []
    for source in sources:  # compiled from copies: nothing is written into the checkout
        copy = tmp_path / Path(source).relative_to(REPO)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copies.append(str(shutil.copyfile(source, copy)))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONNOUSERSITE": "1"}
    out = subprocess.run([interpreter, "-c", OLD_SLICER_PYTHON, str(REPO), *copies], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    shown, diagnostics = out.stdout.splitlines()[:2]
    assert shown.startswith("MedSSL needs Slicer 5.10 or later (Python 3.12; this Slicer has Python 3.9")
    assert diagnostics == shown


def test_a_missing_core_is_one_line_too(monkeypatch, tmp_path):
    from MedSSLLib import bundled_core

    monkeypatch.setattr(bundled_core, "CANDIDATE_ROOTS", (tmp_path / "MedSSLLib" / "core", tmp_path))
    shown = []
    assert not support.checkSupported(shown.append)
    assert shown == [f"MedSSL cannot start: the MedSSL core (src/medssl) was found neither in "
                     f"{tmp_path}/MedSSLLib/core nor in {tmp_path}; reinstall the MedSSL extension, or add the "
                     f"module folders of a complete clone of the repository"]
