"""Fixtures for the Slicer-extension tests: a real MRML scene (slicer-core, headless), medssl commands.

The scene follows environment.md section 2.3: application logic with the colour logic and default colours,
segmentations, volumes and subject-hierarchy logic, and ``slicer.mrmlScene`` set so that code written for
desktop Slicer finds the scene where it expects it.
"""

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


slicer = pytest.importorskip("slicer")  # slicer-core: real MRML, headless

REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))  # MedSSLLib, as Slicer puts the module folder on sys.path

from medssl_slicer_helpers import PACKAGE_LABELS  # noqa: E402

from MedSSLLib.commands import MedSSLCommand  # noqa: E402

FAKE_MEDSSL = HERE / "fake_medssl.py"


@pytest.fixture
def scene():
    """A fresh scene with the Qt-free Slicer logics, installed as ``slicer.mrmlScene`` for the test."""
    mrmlScene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(mrmlScene)
    app.GetColorLogic().SetMRMLScene(mrmlScene)
    app.GetColorLogic().AddDefaultColorNodes()
    logics = [app]
    for cls in (slicer.vtkSlicerSegmentationsModuleLogic, slicer.vtkSlicerVolumesLogic,
                slicer.vtkSlicerSubjectHierarchyModuleLogic):
        logic = cls()
        logic.SetMRMLScene(mrmlScene)
        logics.append(logic)
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = mrmlScene
    yield mrmlScene
    slicer.mrmlScene = previous
    mrmlScene.Clear(True)
    del logics


@pytest.fixture(autouse=True)
def ownTemporaryFolder(tmp_path, monkeypatch):
    """The logics' temporary folders (``tempfile.mkdtemp``) go under the test's own ``tmp_path``: a test that
    keeps them to read the files medssl wrote (``keepTemporaryFiles``) leaves nothing in the system's /tmp."""
    import tempfile

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def medsslHome(tmp_path, monkeypatch):
    """An empty MEDSSL_HOME for the test (models, weights and training runs go there)."""
    home = tmp_path / "medssl_home"
    monkeypatch.setenv("MEDSSL_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tinyPackage(tmp_path_factory):
    """A real medssl model package (tiny random ResEnc U-Net, labels liver and spleen with terminology)."""
    pytest.importorskip("medssl")
    pytest.importorskip("torch")
    from MedSSLLib.testing import makeTinyPackage

    return makeTinyPackage(tmp_path_factory.mktemp("packages") / "tiny_model", PACKAGE_LABELS)


@pytest.fixture
def realMedssl():
    """``python -m medssl`` of this environment (the real CLI)."""
    pytest.importorskip("medssl.cli.predict_cmd")
    return MedSSLCommand([sys.executable, "-m", "medssl"], dict(os.environ))


@pytest.fixture
def fakeMedssl(tmp_path, tinyPackage):
    """The instant stand-in (fake_medssl.py) with its switches set through the returned environment."""
    env = dict(os.environ, FAKE_MEDSSL_PACKAGE=str(tinyPackage), FAKE_MEDSSL_RECORD=str(tmp_path / "args.json"),
               FAKE_MEDSSL_PIDS=str(tmp_path / "pids.json"))
    return MedSSLCommand([sys.executable, str(FAKE_MEDSSL)], env)
