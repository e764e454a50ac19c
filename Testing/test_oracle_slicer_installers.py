"""``MedSSLLib.install.slicerInstallers()``: the functions it hands to `installDependencies` are Slicer's real
ones (slicer-core's ``slicer.util.pip_install`` and ``confirmOkCancelDisplay``), and its PyTorch call fits the
PyTorch extension's real API. PyTorchUtils is not part of slicer-core; the stand-in below has the exact
signature of ``PyTorchUtilsLogic.installTorch`` in github.com/fepegar/SlicerPyTorch (PyTorchUtils.py, commit
e1c85cc) and builds its pip arguments with that file's ``_getPipInstallArguments`` rule
(``"torch" + torchVersionRequirement``), so a call with a wrong keyword or requirement format fails here.
"""
from __future__ import annotations

import inspect
import sys
import types
from pathlib import Path

import pytest

slicer_util = pytest.importorskip("slicer.util")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # MedSSLLib, as Slicer puts it on sys.path

from MedSSLLib import install  # noqa: E402


class PyTorchUtilsLogic:
    calls: list = []

    def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
                     torchvisionVersionRequirement=None):
        args = ["install", "torch" + (torchVersionRequirement or ""), "torchvision" + (torchvisionVersionRequirement or "")]
        PyTorchUtilsLogic.calls.append({"askConfirmation": askConfirmation, "args": args})
        return types.SimpleNamespace(__version__="2.13.0")


def test_slicer_installers_are_slicers_own_functions(monkeypatch):
    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic))
    PyTorchUtilsLogic.calls = []
    installers = install.slicerInstallers()
    assert installers.pipInstall is slicer_util.pip_install
    assert installers.installTorch(install.TORCH_REQUIREMENT) is not None
    assert PyTorchUtilsLogic.calls == [{"askConfirmation": False, "args": ["install", "torch>=2.3", "torchvision"]}]
    # the confirmation goes to slicer.util.confirmOkCancelDisplay(text, windowTitle)
    asked = []
    monkeypatch.setattr(slicer_util, "confirmOkCancelDisplay", lambda text, windowTitle=None, parent=None, **kw:
                        asked.append((text, windowTitle)) or True)
    assert installers.confirm("install these?", "MedSSL - install dependencies") is True
    assert asked == [("install these?", "MedSSL - install dependencies")]
    inspect.signature(slicer_util.pip_install).bind("--no-deps monai")  # how _installWithoutSkipped calls it


def test_without_the_pytorch_extension_the_message_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # import fails as in a Slicer without the extension
    with pytest.raises(RuntimeError, match=r"^MedSSL needs the PyTorch extension: install 'PyTorch' from the "
                                           r"Extensions Manager, restart Slicer and try again$"):
        install.slicerInstallers()
