"""MedSSL Segment's folder-mode section (MedSSLLib/folder_widget.py) and MedSSL Train's Segment next
(MedSSLLib/rank_widget.py), run headless on the real .ui files; Segment next with the real medssl rank/predict."""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from medssl_slicer_helpers import obliqueRightHanded  # noqa: E402
from panel_helpers import answerDialogs  # noqa: E402
from test_folder_logic import caseFolder  # noqa: E402
from test_module_widgets import makeWidget, modules  # noqa: E402,F401 (the fixture)
from widget_harness import runScheduled  # noqa: E402

from MedSSLLib.jobs import JobRunner  # noqa: E402
from MedSSLLib.testing import volumeFromArray  # noqa: E402


def folderPanel(modules, fakeMedssl, tinyPackage):
    """The Segment panel with the test package registered and the folder mode running fake_medssl.py."""
    import shutil

    shutil.copytree(tinyPackage, modules.home / "models" / "tiny_model")
    widget = makeWidget(modules, "MedSSLSegment")
    folder = widget.folder
    folder.logic.jobs = JobRunner(fakeMedssl, schedule=folder.logic.jobs.schedule)
    return widget, folder


def test_folder_section_segments_every_case_lists_failures_and_loads_results(modules, monkeypatch, fakeMedssl,
                                                                             tinyPackage, tmp_path):
    widget, folder = folderPanel(modules, fakeMedssl, tinyPackage)
    cases, _ = caseFolder(modules.scene, tmp_path)
    dialogs = answerDialogs(monkeypatch, modules)
    assert not widget.ui.folderApplyButton.enabled and "Choose the input folder" in widget.ui.folderApplyButton.toolTip
    widget.parameterNode.batchInputFolder = cases
    assert widget.ui.folderApplyButton.enabled
    widget.ui.folderApplyButton.click()
    assert folder.busy and widget.ui.folderApplyButton.text == "Cancel" and not widget.ui.applyButton.enabled
    assert runScheduled(modules.scheduled, lambda: not folder.busy, timeout=120)
    results = widget.ui.folderResultsTextEdit.plainText.splitlines()
    assert results[0] == "2 of 3 case(s) segmented, 1 failed" and results[1].startswith("failed: c_broken: image ")
    assert results[2:] == [f"written: {name} -> {cases / (name + '_tiny_model.seg.nrrd')}" for name in ("a_one", "b_two")]
    assert widget.ui.progressBar.value == 100 and widget.ui.statusLabel.text == results[0]
    assert widget.ui.folderApplyButton.text == "Segment all" and widget.ui.applyButton.enabled is False  # no input
    assert len(folder.logic.run.segmentations) == 2 and not modules.errors  # loaded (the default), no dialog
    assert len(dialogs.questions) == 1 and "1 segmentation(s) from an earlier run" in dialogs.questions[0]


def test_folder_keeps_an_earlier_result_when_the_user_says_cancel(modules, monkeypatch, fakeMedssl, tinyPackage,
                                                                  tmp_path):
    widget, folder = folderPanel(modules, fakeMedssl, tinyPackage)
    cases, _ = caseFolder(modules.scene, tmp_path)
    dialogs = answerDialogs(monkeypatch, modules, confirm=False)
    widget.parameterNode.batchInputFolder = cases
    widget.ui.folderApplyButton.click()
    assert len(dialogs.questions) == 1 and "Replace them?" in dialogs.questions[0]
    assert not folder.busy and folder.logic.run is None and widget.ui.folderApplyButton.text == "Segment all"
    assert (cases / "a_one_tiny_model.seg.nrrd").read_bytes() == b"an old result: not a case"


def test_folder_cancel_stops_between_cases_then_at_once(modules, monkeypatch, fakeMedssl, tinyPackage, tmp_path):
    widget, folder = folderPanel(modules, fakeMedssl, tinyPackage)
    cases, _ = caseFolder(modules.scene, tmp_path)
    answerDialogs(monkeypatch, modules)
    fakeMedssl.env["FAKE_MEDSSL_CASE_SLEEP"] = "1"
    widget.parameterNode.batchInputFolder = cases
    widget.parameterNode.batchLoadResults = False
    widget.ui.folderApplyButton.click()
    assert runScheduled(modules.scheduled, lambda: folder.logic.run.current == "a_one", timeout=60)
    widget.ui.folderApplyButton.click()  # Cancel: after this case
    assert widget.ui.statusLabel.text.startswith("Stopping after the current case")
    assert runScheduled(modules.scheduled, lambda: not folder.busy, timeout=60)
    results = widget.ui.folderResultsTextEdit.plainText.splitlines()
    assert results[0] == "1 of 3 case(s) segmented, stopped" and "not run: b_two, c_broken" in results

    fakeMedssl.env["FAKE_MEDSSL_CASE_SLEEP"] = "30"
    widget.ui.folderApplyButton.click()
    assert runScheduled(modules.scheduled, lambda: folder.logic.run.current == "a_one", timeout=60)
    widget.ui.folderApplyButton.click()
    widget.ui.folderApplyButton.click()  # a second press stops now
    assert runScheduled(modules.scheduled, lambda: not folder.busy, timeout=20)
    assert widget.ui.folderResultsTextEdit.plainText.startswith("0 of 3 case(s) segmented, cancelled")


def test_folder_section_in_scene_mode(modules, monkeypatch, fakeMedssl, tinyPackage):
    widget, folder = folderPanel(modules, fakeMedssl, tinyPackage)
    answerDialogs(monkeypatch, modules)
    values = (np.arange(8 * 9 * 10) % 5).reshape(8, 9, 10).astype("int16")
    volumes = [volumeFromArray(modules.scene, values, obliqueRightHanded(), f"MR{n}") for n in range(2)]
    volumeFromArray(modules.scene, (values > 2).astype("uint8"), obliqueRightHanded(), "labels",
                    "vtkMRMLLabelMapVolumeNode")  # a label map is not segmented
    widget.parameterNode.batchScene = True
    assert widget.ui.folderApplyButton.enabled and not widget.ui.folderInputPathLineEdit.enabled
    widget.ui.folderApplyButton.click()
    assert runScheduled(modules.scheduled, lambda: not folder.busy, timeout=120)
    assert widget.ui.folderResultsTextEdit.plainText.splitlines() == [
        "2 of 2 case(s) segmented", "written: MR0", "written: MR1"]
    assert set(folder.logic.run.segmentations) == set(volumes)


def test_segment_next_ranks_lists_and_segments_the_most_uncertain(modules, monkeypatch, tinyPackage):
    """The real medssl rank and predict: the ranking table lists the scene's unlabelled volumes with their
    scores, the first becomes the candidate volume, is segmented and opens in Segment Editor."""
    pytest.importorskip("medssl.cli.rank_cmd")
    widget = makeWidget(modules, "MedSSLTrain")
    dialogs = answerDialogs(monkeypatch, modules)
    rng = np.random.default_rng(0)
    for name, scale in (("quiet", 1.0), ("noisy", 500.0)):
        volumeFromArray(modules.scene, (rng.random((12, 14, 16)) * scale).astype("float32"),
                        obliqueRightHanded(), name)
    inTraining = volumeFromArray(modules.scene, np.zeros((12, 14, 16), "float32"), obliqueRightHanded(), "trained")
    p = widget.parameterNode
    p.caseVolumes, p.lastPackage, p.device = [inTraining], str(tinyPackage), "cpu"
    assert widget.ui.segmentNextButton.enabled
    widget.ui.segmentNextButton.click()
    assert widget.ui.segmentNextButton.text == "Cancel"
    assert runScheduled(modules.scheduled, lambda: not widget.segmentNext.busy, timeout=600)
    assert not modules.errors, modules.errors
    ranking = widget.segmentNext.ranking
    table = widget.ui.rankingTableWidget
    assert table.rowCount == 2 and {table.cells[(row, 0)] for row in range(2)} == {"quiet", "noisy"}
    assert [table.cells[(row, 1)] for row in range(2)] == [f"{r.score:.3f}" for r in ranking]
    assert ranking[0].score >= ranking[1].score and all(r.meanEntropy is not None for r in ranking)
    first = ranking[0].node
    assert p.candidateVolume0 is first and table.cells[(0, 0)] == first.GetName()
    segmentation = p.candidateSegmentation
    assert segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole()) is first
    assert dialogs.editor == [(segmentation, first)] and widget.ui.segmentNextButton.text == "Segment next"
    assert widget.ui.statusLabel.text.startswith(f"Segmented {first.GetName()}, the most uncertain volume")


def test_ranking_cells_say_why_a_volume_was_not_ranked(modules):  # rank_widget imports qt: the stubbed one
    from MedSSLLib.rank_logic import RankedVolume
    from MedSSLLib.rank_widget import rankingCells

    assert rankingCells(RankedVolume("a", 0.51234, 0.25, 0.125, [])) == ["a", "0.512", "0.250", "12.5 %"]
    assert rankingCells(RankedVolume("b", 0.0, None, None, [])) == ["b", "0.000", "-", "-"]
    assert rankingCells(RankedVolume("c", None, None, None, [], error="empty image")) == ["c", "not ranked",
                                                                                       "empty image", ""]


def test_a_few_painted_slices_checkbox_trains_with_sparse_slices(modules, monkeypatch, fakeMedssl):
    """Part of the Train panel (MedSSLTrain.ui, bound to FinetuneOptions.sparseSlices): ticked, Start passes
    ``--sparse-slices auto``; unticked, nothing."""
    import xml.etree.ElementTree as ET

    from medssl_slicer_helpers import REPO, recordedArgs
    from test_module_widgets import volume

    from MedSSLLib.testing import segmentationFromThreshold

    box = next(w for w in ET.parse(REPO / "MedSSLTrain/Resources/UI/MedSSLTrain.ui").getroot().iter("widget")
               if w.get("name") == "sparseSlicesCheckBox")
    properties = {prop.get("name"): prop.find("string").text for prop in box.findall("property")}
    assert (properties["text"], properties["SlicerParameterName"]) == ("A few painted slices", "sparseSlices")
    widget = makeWidget(modules, "MedSSLTrain")
    answerDialogs(monkeypatch, modules)
    widget.logic.core.jobs = JobRunner(fakeMedssl, schedule=widget.logic.jobs.schedule)
    p = widget.parameterNode
    mr = volume(modules.scene)
    p.caseVolumes, p.caseSegmentations = [mr], [segmentationFromThreshold(mr, "painted")]
    for ticked, expected in ((True, ["--sparse-slices", "auto"]), (False, [])):
        p.sparseSlices, p.modelName = ticked, f"sparse_{ticked}"
        widget.ui.startButton.click()
        assert runScheduled(modules.scheduled, lambda: not widget.logic.busy, timeout=120)
        args = recordedArgs(fakeMedssl)
        assert not modules.errors, modules.errors
        assert (args[args.index("--sparse-slices"):args.index("--sparse-slices") + 2] if expected else
                [a for a in args if a == "--sparse-slices"]) == expected


def test_a_second_apply_keeps_the_first_result_and_its_corrections(modules, monkeypatch, fakeMedssl, tinyPackage):
    """Found by an audit: the output selector was set to the first result, so Apply on another volume replaced it
    (and the corrections made to it in Segment Editor) with the second volume's prediction."""
    import shutil

    from test_module_widgets import volume

    shutil.copytree(tinyPackage, modules.home / "models" / "tiny_model")
    widget = makeWidget(modules, "MedSSLSegment")
    widget.logic.core.jobs = JobRunner(fakeMedssl, schedule=widget.logic.jobs.schedule)
    dialogs = answerDialogs(monkeypatch, modules)
    first, second = volume(modules.scene, "A"), volume(modules.scene, "B")
    p = widget.parameterNode
    p.inputVolume0 = first
    widget.ui.applyButton.click()
    assert runScheduled(modules.scheduled, lambda: not widget.logic.busy, timeout=60)
    resultA = widget.lastResult
    assert resultA is not None and p.outputSegmentation is None  # the selector still says "create new"
    resultA.GetSegmentation().AddEmptySegment("my correction")
    p.inputVolume0 = second
    widget.ui.applyButton.click()
    assert runScheduled(modules.scheduled, lambda: not widget.logic.busy, timeout=60)
    resultB = widget.lastResult
    assert resultB is not resultA and resultA.GetSegmentation().GetSegment("my correction") is not None
    reference = resultA.GetNodeReference(resultA.GetReferenceImageGeometryReferenceRole())
    assert reference is first and resultB.GetNodeReference(resultB.GetReferenceImageGeometryReferenceRole()) is second
    widget.ui.editButton.click()
    assert dialogs.editor[-1] == (resultB, second)
