"""Export... / Import... in both panels (MedSSLLib/share_widget.py) with the real ``medssl export`` / ``import``, and
the licence restriction (3DINO's CC BY-NC-ND) wherever a model is listed, exported or imported."""

import shutil
import zipfile

import pytest

slicer = pytest.importorskip("slicer")

from panel_helpers import RESTRICTED, answerDialogs, restrictLicence  # noqa: E402
from test_module_widgets import LABELS, makeWidget, modules  # noqa: E402,F401 (the fixture)
from widget_harness import runScheduled  # noqa: E402

from MedSSLLib.testing import makeTinyPackage  # noqa: E402

TAG = " [non-commercial, no derivatives]"


@pytest.fixture
def restricted(modules):
    pytest.importorskip("medssl.hub.share")
    return restrictLicence(makeTinyPackage(modules.home / "models" / "liver", LABELS))


def finish(modules, sharing):
    assert runScheduled(modules.scheduled, lambda: not sharing.busy, timeout=180)


def test_segment_panel_exports_and_imports_showing_licence_and_provenance(modules, monkeypatch, restricted, tmp_path):
    widget = makeWidget(modules, "MedSSLSegment")
    assert widget.ui.modelSelector.items == ["liver" + TAG]  # listed with its restriction
    assert "Licence restriction: CC BY-NC-ND" in widget.ui.modelInfoLabel.text
    dialogs = answerDialogs(monkeypatch, modules, files=[str(tmp_path / "shared"), str(tmp_path / "shared.zip")])

    widget.ui.exportModelButton.click()
    assert "non-commercial use only" in dialogs.questions[0] and "Export it anyway?" in dialogs.questions[0]
    assert not widget.ui.exportModelButton.enabled  # while medssl export runs
    finish(modules, widget.sharing)
    assert not modules.errors, modules.errors
    lines = dialogs.infos[0].splitlines()
    assert lines[0] == f"Exported to {tmp_path / 'shared.zip'} (sha256 of every file in manifest.json)."
    assert lines[1] == f"licence: {RESTRICTED}" and lines[2].startswith("provenance: backbone resenc:test")
    assert lines[3].startswith("licence restriction: CC BY-NC-ND")
    assert widget.ui.exportModelButton.enabled
    stamp = (tmp_path / "shared.zip").stat().st_mtime_ns
    dialogs.files.insert(0, str(tmp_path / "shared"))  # the name typed again, without .zip: that zip exists
    confirm = slicer.util.confirmOkCancelDisplay
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, **kw: dialogs.questions.append(text)
                        or "already exists. Replace it?" not in text)  # export anyway: yes; replace: no
    widget.ui.exportModelButton.click()
    assert dialogs.questions[-1] == f"{tmp_path / 'shared.zip'} already exists. Replace it?"
    assert (tmp_path / "shared.zip").stat().st_mtime_ns == stamp and widget.ui.exportModelButton.enabled
    del dialogs.questions[-2:]
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", confirm)  # confirm everything again

    shutil.rmtree(restricted)
    widget.refreshModels()
    assert widget.ui.modelSelector.items == []
    widget.ui.importModelButton.click()
    assert "Import this model?\nModel: liver\nLicence: CC BY-NC-ND" in dialogs.questions[1]
    assert "licence restriction" in dialogs.questions[1] and "already registered" not in dialogs.questions[1]
    finish(modules, widget.sharing)
    assert not modules.errors, modules.errors
    lines = dialogs.infos[1].splitlines()
    assert lines[0] == f"Imported liver into {restricted} (every file's sha256 checked)."
    assert lines[1:] == dialogs.infos[0].splitlines()[1:]  # the same licence and provenance came back
    assert widget.ui.modelSelector.items == ["liver" + TAG] and widget.parameterNode.modelPath == str(restricted)


def test_import_replaces_after_asking_and_a_damaged_zip_is_refused_in_one_line(modules, monkeypatch, restricted,
                                                                              tmp_path):
    widget = makeWidget(modules, "MedSSLSegment")
    archive = tmp_path / "liver.zip"
    dialogs = answerDialogs(monkeypatch, modules, files=[str(archive), str(archive), str(tmp_path / "bad.zip")])
    widget.ui.exportModelButton.click()
    finish(modules, widget.sharing)
    widget.ui.importModelButton.click()  # liver is registered: replaced after saying so
    assert "A model liver is already registered" in dialogs.questions[-1]
    finish(modules, widget.sharing)
    assert not modules.errors and dialogs.infos[-1].startswith("Imported liver")

    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(tmp_path / "bad.zip", "w") as damaged:
        for info in source.infolist():
            data = source.read(info)
            damaged.writestr(info, data[:-1] + bytes([data[-1] ^ 1]) if info.filename.endswith(".safetensors") else data)
    shutil.rmtree(restricted)
    widget.ui.importModelButton.click()
    finish(modules, widget.sharing)
    assert len(modules.errors) == 1 and "\n" not in modules.errors[0], modules.errors
    assert modules.errors[0].startswith("Import refused: ") and "does not match the sha256" in modules.errors[0]
    assert not restricted.exists()  # nothing written


def test_import_of_a_file_that_is_no_model_zip_is_refused_before_medssl_runs(modules, monkeypatch, tmp_path):
    widget = makeWidget(modules, "MedSSLSegment")
    (tmp_path / "notes.zip").write_bytes(b"not a zip")
    dialogs = answerDialogs(monkeypatch, modules, files=[str(tmp_path / "notes.zip")])
    widget.ui.importModelButton.click()
    assert not widget.sharing.busy and not dialogs.questions
    assert modules.errors == [f"Import refused: {tmp_path / 'notes.zip'} cannot be read as a model zip "
                              f"(File is not a zip file)"]


def test_train_panel_exports_the_last_model_and_an_import_becomes_it(modules, monkeypatch, restricted, tmp_path):
    widget = makeWidget(modules, "MedSSLTrain")
    assert not widget.ui.exportModelButton.enabled  # no last model yet
    widget.parameterNode.lastPackage = str(restricted)
    assert widget.ui.lastModelLabel.text == "liver" + TAG and widget.ui.exportModelButton.enabled
    assert "continue from liver" + TAG in widget.ui.backboneComboBox.items
    dialogs = answerDialogs(monkeypatch, modules, files=[str(tmp_path / "liver.zip")] * 2)
    widget.ui.exportModelButton.click()
    finish(modules, widget.sharing)
    assert dialogs.infos[0].startswith("Exported to") and f"licence: {RESTRICTED}" in dialogs.infos[0]
    shutil.rmtree(restricted)
    widget.parameterNode.lastPackage = ""
    widget.ui.importModelButton.click()
    finish(modules, widget.sharing)
    assert not modules.errors, modules.errors
    assert widget.parameterNode.lastPackage == str(restricted) and widget.ui.segmentNextButton.enabled


def test_catalog_backbones_with_a_restricted_licence_say_so_in_the_selector(modules):
    from MedSSLLib.catalog import readCatalog

    widget = makeWidget(modules, "MedSSLTrain")
    entries = {e.id: e for e in readCatalog()}
    restricted = [e for e in entries.values() if "NC-ND" in e.licence]
    assert restricted, "the catalog has no CC BY-NC-ND backbone (3DINO) to check"
    for entry in restricted:
        title = next(t for t in widget.ui.backboneComboBox.items if f"({entry.id})" in t)
        assert title.endswith(TAG), title
        index = widget.ui.backboneComboBox.items.index(title)
        widget.ui.backboneComboBox.currentIndex = index
        widget.onBackboneSelected(index)
        assert "Licence restriction: CC BY-NC-ND" in widget.ui.backboneInfoLabel.text
    unrestricted = [t for t in widget.ui.backboneComboBox.items if "VoCo" in t or "resenc:tiny" == t]
    assert unrestricted and not any(TAG in t for t in unrestricted)
