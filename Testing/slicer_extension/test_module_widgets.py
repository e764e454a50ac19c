"""The module panels' own code, run headless on their real .ui files (see widget_harness.py), in a real scene."""

import importlib
import sys
import types

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

import widget_harness  # noqa: E402
from medssl_slicer_helpers import REPO, obliqueRightHanded  # noqa: E402

from MedSSLLib.testing import makeTinyPackage, volumeFromArray  # noqa: E402

MODULES = ("MedSSLSegment", "MedSSLTrain")
QT_LIBRARY = ("slicerui", "parameter_binding", "segment_widget", "train_widget", "share_widget", "folder_widget",
              "rank_widget")  # imported with the stubbed qt


def dropQtModules(monkeypatch):
    """Forget the modules bound to a previous test's stubbed qt (its timer queue)."""
    widget_harness.dropModules([*MODULES, *(f"MedSSLLib.{name}" for name in QT_LIBRARY)])
    for name in QT_LIBRARY:
        monkeypatch.delattr(importlib.import_module("MedSSLLib"), name, raising=False)


@pytest.fixture
def modules(monkeypatch, scene, medsslHome):
    scheduled = []
    for name, module in widget_harness.stubModules(scheduled).items():
        monkeypatch.setitem(sys.modules, name, module)
    for folder in MODULES:
        monkeypatch.syspath_prepend(str(REPO / folder))
    monkeypatch.setattr(slicer.util, "loadUI", lambda path: types.SimpleNamespace(
        path=path, setMRMLScene=lambda scene: None), raising=False)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda widget: widget_harness.uiFromFile(widget.path),
                        raising=False)
    errors = []
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kw: errors.append(text), raising=False)
    dropQtModules(monkeypatch)
    loaded = {name: importlib.import_module(name) for name in MODULES}
    env = types.SimpleNamespace(modules=loaded, scheduled=scheduled, errors=errors, scene=scene, home=medsslHome,
                                widgets=[])
    yield env
    for widget in env.widgets:
        widget.cleanup()  # as Slicer does when the module is unloaded: no observer outlives the test
    dropQtModules(monkeypatch)


def makeWidget(env, moduleName):
    """The module widget set up as Slicer does; returns its panel (MedSSLLib/*_widget.py)."""
    cls = getattr(env.modules[moduleName], f"{moduleName}Widget")
    widget = cls()
    widget.moduleFolder = REPO / moduleName
    widget.setup()
    env.widgets.append(widget)
    return widget.panel


def volume(scene, name="MR"):
    values = (np.arange(6 * 7 * 8) % 5).reshape(6, 7, 8).astype("int16")
    return volumeFromArray(scene, values, obliqueRightHanded(), name)


def segmentationNode(scene, name):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.GetSegmentation().AddEmptySegment("tissue")
    return node


LABELS = [{"value": 1, "name": "tissue", "color": [1.0, 0.0, 0.0], "terminology": None}]


def test_clearing_the_model_name_keeps_the_bootstrap_buttons_current(modules):
    """Typing into the model-name field (empty, or only punctuation) updates the panel and raises nothing."""
    widget = makeWidget(modules, "MedSSLTrain")
    package = makeTinyPackage(modules.home / "models" / "liver", LABELS)
    p = widget.parameterNode
    p.candidateVolume0 = volume(modules.scene)
    p.lastPackage = str(package)
    for text in ("", "--"):
        p.modelName = text
        widget.updateGui()
        assert widget.ui.lastModelLabel.text == "liver"
        assert widget.ui.segmentNextButton.enabled and not widget.ui.resumeButton.enabled


def test_cases_table_and_remove_selected_index_the_same_cases(modules):
    """A case whose segmentation was deleted stays listed; removing its row removes that case."""
    widget = makeWidget(modules, "MedSSLTrain")
    p, scene = widget.parameterNode, modules.scene
    volumes = [volume(scene, f"MR{i}") for i in range(3)]
    segmentations = [segmentationNode(scene, f"seg{i}") for i in range(3)]
    p.caseVolumes, p.caseSegmentations = volumes, [segmentations[0], None, segmentations[2]]  # seg1 deleted
    table = widget.ui.casesTableWidget
    assert table.rowCount == 3
    assert [table.cells[(row, 1)] for row in range(3)] == ["seg0", "(deleted)", "seg2"]
    table.selectedRow = 1
    widget.onRemoveCase()
    assert list(p.caseSegmentations) == [segmentations[0], segmentations[2]]
    assert list(p.caseVolumes) == [volumes[0], volumes[2]]
    assert [table.cells[(row, 0)] for row in range(table.rowCount)] == ["MR0", "MR2"]


@pytest.mark.parametrize("moduleName", MODULES)
def test_diagnostics_do_not_occupy_the_module_job_runner(modules, moduleName):
    """``medssl info`` runs apart from the logic's jobs (Apply/Start start, not cancel) and, when it ends,
    the panel's buttons are updated again."""
    pytest.importorskip("medssl.cli.info_cmd")
    widget = makeWidget(modules, moduleName)
    widget.ui.diagnosticsButton.click()
    assert not widget.logic.busy
    assert widget.diagnostics.busy
    finished = widget_harness.runScheduled(modules.scheduled, lambda: not widget.diagnostics.busy, timeout=120)
    assert finished and "medssl" in widget.ui.diagnosticsTextEdit.plainText


def test_diagnostics_end_reenables_the_training_buttons(modules, monkeypatch):
    widget = makeWidget(modules, "MedSSLTrain")
    pytest.importorskip("medssl.cli.info_cmd")
    widget.ui.diagnosticsButton.click()
    widget.parameterNode.steps = 5  # a change while diagnostics run (the observer updates the panel)
    assert widget.ui.startButton.enabled
    widget_harness.runScheduled(modules.scheduled, lambda: not widget.diagnostics.busy, timeout=120)
    assert widget.ui.startButton.enabled


def test_a_model_with_more_channels_than_the_panel_is_explained(modules):
    channels = [f"c{i}" for i in range(6)]
    makeTinyPackage(modules.home / "models" / "six_channels", LABELS, channels=channels)
    widget = makeWidget(modules, "MedSSLSegment")
    assert widget.selectedPackage().channels == channels
    widget.parameterNode.inputVolume0 = volume(modules.scene)  # fires the observer -> updateButtons
    widget.updateButtons()
    assert not widget.ui.applyButton.enabled
    assert "6 input volumes" in widget.ui.applyButton.toolTip and "Python console" in widget.ui.applyButton.toolTip


def test_run_buttons_get_their_ui_tooltips_back(modules):
    widget = makeWidget(modules, "MedSSLSegment")
    uiTip = widget_harness.uiFromFile(REPO / "MedSSLSegment/Resources/UI/MedSSLSegment.ui").applyButton.toolTip
    makeTinyPackage(modules.home / "models" / "tiny", LABELS)
    widget.refreshModels()
    widget.parameterNode.inputVolume0 = volume(modules.scene)
    widget.updateButtons()
    assert widget.ui.applyButton.enabled and widget.ui.applyButton.toolTip == uiTip
    widget.applyButton.setRunning(True)
    assert widget.ui.applyButton.text == "Cancel"
    widget.applyButton.setRunning(False)
    assert (widget.ui.applyButton.text, widget.ui.applyButton.toolTip) == ("Apply", uiTip)
    train = makeWidget(modules, "MedSSLTrain")
    start = train.runButtons["startButton"]
    tip = start.button.toolTip
    start.setRunning(True)
    start.setRunning(False)
    assert tip and start.button.toolTip == tip


def test_unset_training_folder_is_refused_not_the_working_directory(modules, tmp_path):
    widget = makeWidget(modules, "MedSSLTrain")
    p = widget.parameterNode
    assert widget._folder() is None
    p.useTrainingFolder = True
    with pytest.raises(ValueError, match="choose the training folder"):
        widget._folder()
    p.trainingFolder = tmp_path
    assert widget._folder() == tmp_path


class SampleData510:
    """SampleData as in Slicer 5.6-5.10 (v5.10.0 Modules/Scripted/SampleData/SampleData.py:510): sources only."""

    sources = {}

    class SampleDataLogic:
        @staticmethod
        def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None, fileNames=None,
                                           nodeNames=None, customDownloader=None, thumbnailFileName=None,
                                           loadFileTypes=None, loadFiles=None, loadFileProperties={},
                                           checksums=None, loadFileType=None):
            SampleData510.sources.setdefault(category, []).append((sampleName, uris, checksums))


class SampleData512(SampleData510):
    """5.12+ adds registerCustomSampleDataCategory(category, title) (v5.12.0 SampleData.py:532)."""

    titles = {}

    class SampleDataLogic(SampleData510.SampleDataLogic):
        @staticmethod
        def registerCustomSampleDataCategory(category, title):
            SampleData512.titles[category] = title


@pytest.mark.parametrize("sampleData", [SampleData510, SampleData512], ids=["5.10", "5.12"])
def test_sample_data_registers_on_slicer_5_10_and_5_12(modules, monkeypatch, sampleData):
    sampleData.sources.clear()
    monkeypatch.setitem(sys.modules, "SampleData", sampleData)
    modules.modules["MedSSLSegment"].registerSampleData()
    assert [name for name, _, _ in sampleData.sources["MedSSL"]] == ["MedSSLBrainMR1", "MedSSLBrainMR2"]
    assert all(checksum.startswith("SHA256:") for _, _, checksum in sampleData.sources["MedSSL"])
    if sampleData is SampleData512:
        assert SampleData512.titles == {"MedSSL": "MedSSL"}


@pytest.mark.parametrize("moduleName", MODULES)
def test_help_text_points_at_a_file_of_the_repository(modules, monkeypatch, moduleName):
    """The help links to the scripting guide in the repository (MedSSLLib/README.md is not packaged)."""
    import re

    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(connect=lambda *args: None), raising=False)
    parent = types.SimpleNamespace()
    getattr(modules.modules[moduleName], moduleName)(parent)
    assert "<code>MedSSLLib/README.md</code>" not in parent.helpText
    links = re.findall(r'href="https://github.com/MedSSL/SlicerMedSSL/blob/main/([^"]+)"', parent.helpText)
    assert links and all((REPO / link).is_file() for link in links)


@pytest.mark.parametrize("moduleName", MODULES)
def test_parameter_node_lifecycle_exit_and_scene_close(modules, fakeMedssl, moduleName):
    """One lifecycle for both panels: exit stops GUI updates; closing the scene cancels the running job and,
    the module being shown, binds the new scene's parameter node."""
    panel = makeWidget(modules, moduleName)
    updates = []
    panel.binding._update = lambda: updates.append(True)
    panel.exit()
    panel.parameterNode.parameterNode.Modified()
    assert not updates
    panel.enter()
    assert updates
    panel.logic.core.jobs = type(panel.logic.jobs)(fakeMedssl, schedule=panel.logic.jobs.schedule)
    fakeMedssl.env["FAKE_MEDSSL_SLEEP"] = "60"
    job = panel.logic.runMedSSL(["predict"]) if moduleName == "MedSSLTrain" else panel.logic.jobs.run(["predict"])
    assert panel.logic.busy
    before = panel.parameterNode
    modules.scene.Clear(False)  # File / Close scene: the singleton parameter node is kept, reset
    assert widget_harness.runScheduled(modules.scheduled, lambda: job.finished, timeout=30) and job.cancelled
    after = panel.parameterNode
    assert after is not None and after is not before  # unbound on close, bound again afterwards
    assert after.parameterNode is modules.scene.GetSingletonNode(moduleName, "vtkMRMLScriptedModuleNode")
