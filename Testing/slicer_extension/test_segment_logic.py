"""MedSSLSegment logic: volume node -> file -> medssl -> file -> segmentation node, in a real MRML scene."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
import vtk  # noqa: E402

from medssl_slicer_helpers import (PACKAGE_LABELS, obliqueLeftHanded, obliqueRightHanded,  # noqa: E402
                                   processGone, sceneSnapshot, waitFor)

from MedSSLLib.commands import PredictOptions  # noqa: E402
from MedSSLLib.nodeio import ijkToRas  # noqa: E402
from MedSSLLib.packages import readPackage  # noqa: E402
from MedSSLLib.segment_logic import SegmentLogic  # noqa: E402
from MedSSLLib.testing import ijkToRasMatrix, makeTinyPackage, volumeFromArray  # noqa: E402

GEOMETRIES = {
    "axis_aligned": ijkToRasMatrix(np.diag([-1.0, -1.0, 1.0]), (0.8, 0.8, 2.5), (10.0, 20.0, -30.0)),
    "oblique": obliqueRightHanded(),
    "oblique_left_handed": obliqueLeftHanded(),
}


def makeVolume(scene, geometry, dtype=np.int16, shape=(14, 18, 22), name="CT"):
    values = (np.arange(np.prod(shape)) % 23 - 3).reshape(shape).astype(dtype)
    return volumeFromArray(scene, values, geometry, name), values


def expectedLabels(values):
    """What fake_medssl.py predicts."""
    return np.where(values > 0, values.astype(np.int64) % 3, 0)


def labelArrayOnVolumeGrid(segmentationNode, volume):
    """Export the segments with their own label values onto the volume grid (Slicer's exact export)."""
    segmentation = segmentationNode.GetSegmentation()
    ids = vtk.vtkStringArray()
    colors = slicer.vtkMRMLColorTableNode()
    colors.SetTypeToUser()
    colors.SetNumberOfColors(8)
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        ids.InsertNextValue(segmentation.GetNthSegmentID(i))
        colors.SetColor(segment.GetLabelValue(), segment.GetName(), 1, 1, 1, 1)
    volume.GetScene().AddNode(colors)
    labelmap = volume.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        segmentationNode, ids, labelmap, volume, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, colors)
    return slicer.util.arrayFromVolume(labelmap).copy(), ijkToRas(labelmap)


def segmentsByValue(segmentationNode):
    segmentation = segmentationNode.GetSegmentation()
    return {segmentation.GetNthSegment(i).GetLabelValue(): segmentation.GetNthSegment(i)
            for i in range(segmentation.GetNumberOfSegments())}


def studyOf(node):
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    return sh.GetItemParent(sh.GetItemByDataNode(node))


def putInStudy(volume):
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(volume.GetScene())
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient"), "Study")
    sh.SetItemParent(sh.GetItemByDataNode(volume) or sh.CreateItem(sh.GetSceneItemID(), volume), study)
    return study


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_volume_to_segmentation_geometry_and_labels_exact(scene, fakeMedssl, tinyPackage, geometry, dtype):
    volume, values = makeVolume(scene, GEOMETRIES[geometry], dtype)
    study = putInStudy(volume)
    job = SegmentLogic(fakeMedssl).segment([volume], tinyPackage)
    seg = job.outputs["segmentation"]
    labels, matrix = labelArrayOnVolumeGrid(seg, volume)
    np.testing.assert_array_equal(labels, expectedLabels(values))
    np.testing.assert_allclose(matrix, GEOMETRIES[geometry], atol=1e-9)
    internal = vtk.vtkMatrix4x4()
    seg.GetSegmentation().GetNthSegment(0).GetRepresentation("Binary labelmap").GetImageToWorldMatrix(internal)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(internal), GEOMETRIES[geometry], atol=1e-6)
    assert seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole()) is volume
    assert studyOf(seg) == study and job.progress.percent == 100


def test_segment_names_colours_values_and_terminology(scene, fakeMedssl, tinyPackage):
    volume, _ = makeVolume(scene, GEOMETRIES["oblique"])
    seg = SegmentLogic(fakeMedssl).segment([volume], tinyPackage).outputs["segmentation"]
    segments = segmentsByValue(seg)
    assert sorted(segments) == [1, 2]
    for spec in PACKAGE_LABELS:
        segment = segments[spec["value"]]
        assert segment.GetName() == spec["name"]
        np.testing.assert_allclose(segment.GetColor(), spec["color"], atol=1e-6)
        # Slicer's serialisation (vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry), written out by hand:
        # context~category~type~type modifier~anatomic context~region~region modifier, codes as scheme^value^meaning
        assert segment.GetTerminology() == (
            "Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure~"
            f"SCT^{spec['terminology']['type'][1]}^{spec['terminology']['type'][2]}~^^~"
            "Anatomic codes - DICOM master list~^^~^^")
    assert seg.GetName() == f"CT {readPackage(tinyPackage).name}"


def test_result_replaces_the_segments_of_a_chosen_output_node(scene, fakeMedssl, tinyPackage):
    volume, values = makeVolume(scene, GEOMETRIES["axis_aligned"])
    output = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my result")
    output.GetSegmentation().AddEmptySegment("old", "old segment")
    job = SegmentLogic(fakeMedssl).segment([volume], tinyPackage, outputSegmentation=output)
    assert job.outputs["segmentation"] is output
    assert output.GetSegmentation().GetSegment("old") is None
    np.testing.assert_array_equal(labelArrayOnVolumeGrid(output, volume)[0], expectedLabels(values))


def test_uncertainty_volume_on_the_input_grid(scene, fakeMedssl, tinyPackage):
    volume, values = makeVolume(scene, GEOMETRIES["oblique_left_handed"])
    job = SegmentLogic(fakeMedssl).segment([volume], tinyPackage, PredictOptions(tta=True, uncertainty=True))
    uncertainty = job.outputs["uncertainty"]
    np.testing.assert_allclose(ijkToRas(uncertainty), GEOMETRIES["oblique_left_handed"], atol=1e-9)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(uncertainty), (values.astype(np.float32) % 7) / 7.0)
    assert studyOf(uncertainty) == studyOf(volume)
    args = json.loads(Path(fakeMedssl.env["FAKE_MEDSSL_RECORD"]).read_text())
    assert "--tta" in args and "--uncertainty" in args and args[args.index("--progress") + 1] == "json"


def test_second_channel_on_another_grid_is_resampled_to_the_first(scene, fakeMedssl, tmp_path):
    import SimpleITK as sitk

    package = makeTinyPackage(tmp_path / "two_channels", PACKAGE_LABELS, channels=("T1", "T2"))
    t1, _ = makeVolume(scene, GEOMETRIES["oblique"], name="T1")
    t2, _ = makeVolume(scene, GEOMETRIES["axis_aligned"], np.float32, shape=(10, 12, 9), name="T2")
    before = sceneSnapshot(scene)
    logic = SegmentLogic(fakeMedssl)
    logic.jobs.keepTemporaryFiles = True
    job = logic.segment([t1, t2], package)
    files = [sitk.ReadImage(str(job.tempDir / f"input_{c:04d}.nrrd")) for c in range(2)]
    assert files[0].GetSize() == files[1].GetSize() == (22, 18, 14)
    np.testing.assert_allclose(files[0].GetDirection(), files[1].GetDirection(), atol=1e-9)
    np.testing.assert_allclose(files[0].GetOrigin(), files[1].GetOrigin(), atol=1e-6)
    added = set(sceneSnapshot(scene)) - set(before)
    assert all(scene.GetNodeByID(i).IsA("vtkMRMLSegmentationNode") or "Display" in i or "SubjectHierarchy" in i
               for i in added), added  # the temporary resampled volume was removed


def test_channels_under_different_transforms_are_refused(scene, fakeMedssl, tmp_path):
    """Found by an audit: a second channel under an unhardened registration transform, on the first one's grid, was
    written as stored, its transform dropped."""
    package = makeTinyPackage(tmp_path / "two_channels", PACKAGE_LABELS, channels=("T1", "T2"))
    t1, _ = makeVolume(scene, GEOMETRIES["oblique"], name="T1")
    t2, _ = makeVolume(scene, GEOMETRIES["oblique"], name="T2")
    registration = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    moved = vtk.vtkMatrix4x4()
    moved.SetElement(0, 3, 5.0)
    registration.SetMatrixTransformToParent(moved)
    t2.SetAndObserveTransformNodeID(registration.GetID())
    before = sceneSnapshot(scene)
    with pytest.raises(ValueError, match=r"different transforms \(T2 not under the first channel's\); harden"):
        SegmentLogic(fakeMedssl).start([t1, t2], package)
    assert sceneSnapshot(scene) == before
    t1.SetAndObserveTransformNodeID(registration.GetID())  # both under the same one: their voxels correspond
    assert SegmentLogic(fakeMedssl).segment([t1, t2], package).ok


def test_channel_count_must_match_the_model(scene, fakeMedssl, tinyPackage):
    t1, _ = makeVolume(scene, GEOMETRIES["oblique"], name="T1")
    t2, _ = makeVolume(scene, GEOMETRIES["oblique"], name="T2")
    before = sceneSnapshot(scene)
    with pytest.raises(ValueError, match="expects 1 input channel"):
        SegmentLogic(fakeMedssl).start([t1, t2], tinyPackage)
    assert sceneSnapshot(scene) == before


def test_failing_run_reports_the_error_and_leaves_the_scene_unchanged(scene, fakeMedssl, tinyPackage):
    fakeMedssl.env["FAKE_MEDSSL_FAIL"] = "the model expects 2 channel(s)"
    volume, _ = makeVolume(scene, GEOMETRIES["oblique"])
    before = sceneSnapshot(scene)
    with pytest.raises(RuntimeError, match=r"^segmentation failed: the model expects 2 channel\(s\)$"):
        SegmentLogic(fakeMedssl).segment([volume], tinyPackage)
    assert sceneSnapshot(scene) == before


@pytest.mark.skipif(os.name == "nt", reason="checks POSIX process groups")
def test_cancel_kills_the_process_tree_and_leaves_the_scene_unchanged(scene, fakeMedssl, tinyPackage):
    fakeMedssl.env["FAKE_MEDSSL_SLEEP"] = "60"
    volume, _ = makeVolume(scene, GEOMETRIES["oblique"])
    before = sceneSnapshot(scene)
    progress, finished = [], []
    logic = SegmentLogic(fakeMedssl)
    job = logic.start([volume], tinyPackage, onProgress=progress.append, onFinished=finished.append)
    pids = Path(fakeMedssl.env["FAKE_MEDSSL_PIDS"])
    assert waitFor(lambda: pids.exists() and progress, poll=logic.jobs.poll)
    assert job.progress.percent == 5 and logic.busy
    logic.cancel()
    logic.jobs.wait(timeout=20)
    assert finished == [job] and job.cancelled and job.error is None and not logic.busy
    assert all(processGone(pid) for pid in json.loads(pids.read_text()).values())
    assert sceneSnapshot(scene) == before and not job.tempDir.exists()


def test_real_medssl_predict_node_matches_file(scene, realMedssl, tinyPackage):
    """The real ``python -m medssl predict``: the segmentation node equals the file medssl wrote."""
    import SimpleITK as sitk

    volume, _ = makeVolume(scene, GEOMETRIES["oblique_left_handed"], np.float32, shape=(16, 20, 24))
    logic = SegmentLogic(realMedssl)
    logic.jobs.keepTemporaryFiles = True
    options = PredictOptions(device="cpu", overlap=0.25, lowMemory=True, uncertainty=True)
    job = logic.segment([volume], tinyPackage, options, timeout=300)
    written = sitk.ReadImage(str(job.tempDir / SegmentLogic.RESULT_FILE))
    entropy = sitk.GetArrayFromImage(sitk.ReadImage(str(job.tempDir / SegmentLogic.UNCERTAINTY_FILE)))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(job.outputs["uncertainty"]), entropy)
    np.testing.assert_allclose(ijkToRas(job.outputs["uncertainty"]), GEOMETRIES["oblique_left_handed"], atol=1e-9)
    labels, matrix = labelArrayOnVolumeGrid(job.outputs["segmentation"], volume)
    np.testing.assert_array_equal(labels, sitk.GetArrayFromImage(written))
    np.testing.assert_allclose(matrix, GEOMETRIES["oblique_left_handed"], atol=1e-9)
    names = {s.GetLabelValue(): s.GetName() for s in segmentsByValue(job.outputs["segmentation"]).values()}
    assert names == {1: "liver", 2: "spleen"}
    assert job.progress.result["task"] == "predict" and job.progress.percent == 100


def test_real_medssl_cancel_leaves_the_scene_unchanged(scene, realMedssl, tinyPackage):
    """Cancel once the real medssl reports progress: its whole process tree stops, nothing enters the scene."""
    psutil = pytest.importorskip("psutil")
    from MedSSLLib.process import ProcessRunner

    volume, _ = makeVolume(scene, GEOMETRIES["oblique"], np.float32, shape=(48, 48, 48))  # minutes of TTA windows
    before = sceneSnapshot(scene)
    events = []

    def recordingRunner(onEvent, onLog, onFinished):
        return ProcessRunner(lambda event: (events.append(event), onEvent(event)), onLog, onFinished)

    logic = SegmentLogic(realMedssl, runnerFactory=recordingRunner)
    job = logic.start([volume], tinyPackage, PredictOptions(device="cpu", tta=True))
    assert waitFor(lambda: any(e["event"] == "progress" for e in events), timeout=120, poll=logic.jobs.poll)
    root = psutil.Process(logic.jobs.runner.proc.pid)
    tree = [root, *root.children(recursive=True)]
    assert not job.finished and root.is_running()
    logic.cancel()
    logic.jobs.wait(timeout=60)
    assert job.cancelled and not job.ok and job.outputs == {}
    assert all(processGone(process.pid) for process in tree)
    assert sceneSnapshot(scene) == before and not job.tempDir.exists()


def test_nodes_removed_while_medssl_runs(scene, fakeMedssl, tinyPackage):
    """Found by an audit: an output node deleted mid-run received the result outside any scene (reported done);
    an input deleted mid-run failed with an AttributeError after the output node had been overwritten."""
    volume, _ = makeVolume(scene, obliqueRightHanded(), name="A")
    gone = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "deleted output")
    logic = SegmentLogic(fakeMedssl)
    logic.start([volume], tinyPackage, outputSegmentation=gone)
    scene.RemoveNode(gone)
    job = logic.jobs.wait(60)
    result = job.outputs["segmentation"]
    assert job.ok and result is not gone and result.GetScene() is scene and result.GetSegmentation().GetNumberOfSegments()
    kept = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "kept")
    kept.GetSegmentation().AddEmptySegment("my correction")
    logic.start([volume], tinyPackage, outputSegmentation=kept)
    scene.RemoveNode(volume)
    job = logic.jobs.wait(60)
    assert not job.ok and "input volume A was removed from the scene while it was segmented" in job.error
    segments = kept.GetSegmentation()
    assert [segments.GetNthSegmentID(i) for i in range(segments.GetNumberOfSegments())] == ["my correction"]
