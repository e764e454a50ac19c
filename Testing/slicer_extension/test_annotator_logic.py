"""The annotator's Logic helpers in MedSSLLib (sparse slices, model sharing, ranking, folders), checked
against the real medssl command line."""
from __future__ import annotations

import pytest

from MedSSLLib.commands import SPARSE_AXES, FinetuneOptions, finetuneArgs


def test_sparse_slices_option_parses_in_the_real_cli():
    from medssl.cli.main import build_parser
    from medssl.data.sparse import AXES

    assert SPARSE_AXES == AXES
    args = finetuneArgs([["t1.nrrd"]], ["l.seg.nrrd"], "out", FinetuneOptions(sparseSlices="axial"))
    assert build_parser().parse_args(args).sparse_slices == "axial"
    assert build_parser().parse_args(finetuneArgs([["t1.nrrd"]], ["l.seg.nrrd"], "out",
                                                  FinetuneOptions())).sparse_slices is None
    with pytest.raises(ValueError, match="sparse-slice axis"):
        finetuneArgs([["t1.nrrd"]], ["l.seg.nrrd"], "out", FinetuneOptions(sparseSlices="oblique"))


@pytest.mark.slow  # real medssl subprocesses (train, rank, predict)
def test_export_and_import_buttons_logic_round_trip(realMedssl, medsslHome, tinyPackage, tmp_path):
    from MedSSLLib.packages import listPackages
    from MedSSLLib.share_logic import ShareLogic

    logic = ShareLogic(realMedssl)
    archive = tmp_path / "tiny.zip"
    job = logic.exportModel(tinyPackage, archive, wait=True, timeout=300)
    assert job.outputs["archive"] == archive and archive.is_file()
    assert job.outputs["licenceLines"][0] == "licence: Apache-2.0 (test model)"
    preview = logic.previewArchive(archive)
    assert (preview.name, preview.licence, preview.licenceNotice) == ("tiny_model", "Apache-2.0 (test model)", "")
    job = logic.importModel(archive, wait=True, timeout=300)
    assert job.outputs["package"].path == medsslHome / "models" / "tiny_model"
    assert [p.name for p in listPackages()] == [job.outputs["package"].name]
    with pytest.raises(RuntimeError, match="already exists"):
        logic.importModel(archive, wait=True, timeout=300)
    with pytest.raises(ValueError, match="model zip"):
        logic.previewArchive(tinyPackage / "plan.json")


ITK = "/usr/share/doc/insighttoolkit5-examples/examples/Data/"


def realScan(name: str):
    from pathlib import Path

    path = Path(ITK) / name
    if not path.exists():
        pytest.skip(f"{path} is not installed (make data)")
    return path


@pytest.mark.slow  # real medssl subprocesses (train, rank, predict)
def test_segment_next_ranks_scene_volumes_and_segments_the_first(scene, realMedssl, medsslHome, tmp_path):
    import slicer
    from medssl_slicer_helpers import PACKAGE_LABELS

    from MedSSLLib.commands import PredictOptions
    from MedSSLLib.folder_logic import loadVolumeFile
    from MedSSLLib.rank_logic import RankLogic, unlabelledVolumes
    from MedSSLLib.testing import makeTinyPackage

    # planned at 4 mm: Segment next ranks with all 8 flips, which on the scans' own grid (ROI 16) took 50 s
    tinyPackage = makeTinyPackage(tmp_path / "tiny_4mm", PACKAGE_LABELS, spacing=(4.0, 4.0, 4.0))

    t1 = loadVolumeFile(realScan("KmeansTest_T1UCharRaw.nii.gz"), scene)
    strip = loadVolumeFile(realScan("KmeansTest_T1RawSkullStrip.nii.gz"), scene)
    labelled = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    labelled.SetReferenceImageGeometryParameterFromVolumeNode(strip)
    labelled.SetNodeReferenceID(labelled.GetReferenceImageGeometryReferenceRole(), strip.GetID())
    assert unlabelledVolumes(scene) == [t1]  # the volume being labelled is left out
    candidates = unlabelledVolumes(scene, exclude=[]) + [strip]
    logic = RankLogic(realMedssl)
    job = logic.rank(candidates, tinyPackage, timeout=600, device="cpu", tta=False)
    ranking = job.outputs["ranking"]
    assert {r.node for r in ranking} == {t1, strip} and all(r.score is not None for r in ranking)
    assert ranking[0].score >= ranking[1].score and "score" in ranking[0].text()
    job = logic.segmentNext(candidates, tinyPackage, PredictOptions(device="cpu"), timeout=600)
    assert job.outputs["volume"] is job.outputs["ranking"][0].node
    segmentation = job.outputs["segmentation"]
    assert segmentation.GetSegmentation().GetNumberOfSegments() >= 1
    assert segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole()) is job.outputs["volume"]


@pytest.mark.slow  # real medssl subprocesses (train, rank, predict)
def test_folder_mode_segments_every_case_and_lists_failures(tmp_path, scene, realMedssl, medsslHome, tinyPackage):
    import shutil

    from MedSSLLib.commands import PredictOptions
    from MedSSLLib.folder_logic import FolderLogic

    folder = tmp_path / "cases"
    folder.mkdir()
    shutil.copy(realScan("KmeansTest_T1UCharRaw.nii.gz"), folder / "b_t1.nii.gz")
    shutil.copy(realScan("KmeansTest_T1RawSkullStrip.nii.gz"), folder / "c_strip.nii.gz")
    (folder / "a_broken.nii.gz").write_bytes(b"not a volume")
    (folder / "old.seg.nrrd").write_bytes(b"skipped")
    seen = []
    logic = FolderLogic(realMedssl)
    run = logic.segmentFolder(folder, tinyPackage, PredictOptions(device="cpu"), outputDir=tmp_path / "out",
                              loadResults=True, onCase=lambda r: seen.append(r.statusText()), timeout=600)
    assert [s.split(":")[0] for s in seen] == ["Case 1 of 3", "Case 2 of 3", "Case 3 of 3"]
    assert sorted(run.outputs) == ["b_t1", "c_strip"] and all(p.is_file() for p in run.outputs.values())
    assert [name for name, _ in run.failures] == ["a_broken"] and "2 of 3 case(s) segmented, 1 failed" in run.summary()
    assert len(run.segmentations) == 2 and not run.notRun

    stopped = []
    run = logic.startFolder(folder, tinyPackage, PredictOptions(device="cpu"), outputDir=tmp_path / "out2",
                            onCase=lambda r: (stopped.append(r.index), logic.stopAfterCurrent()))
    run = logic.wait(600)
    assert stopped == [0] and run.index == 1 and run.notRun == ["b_t1", "c_strip"]


def test_segments_read_are_those_segment_editor_lists_overlaps_lower_wins(scene, tmp_path):
    """README 'Which segments MedSSL reads': every segment (hidden too), later (lower) segments win overlaps,
    and with sparse slices a slice without any segment is not labelled."""
    import numpy as np
    import slicer

    from medssl.data.sparse import make_sparse
    from medssl.data.preprocess import target_grid
    from medssl.io.labels import read_label_map
    from MedSSLLib.nodeio import exportSegmentation
    from MedSSLLib.testing import volumeFromArray

    geometry = np.diag([1.0, 1.0, 2.0, 1.0])
    volume = volumeFromArray(scene, np.zeros((10, 12, 14), np.float32), geometry, "t1")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    first, second = np.zeros((10, 12, 14), np.uint8), np.zeros((10, 12, 14), np.uint8)
    first[2:6, 2:8, 2:8], second[4:8, 4:10, 4:10] = 1, 1  # overlap on slices 4-5; slices 0, 1, 8, 9 unpainted
    for name, array in (("first", first), ("second", second)):
        labelmap = volumeFromArray(scene, array, geometry, name, "vtkMRMLLabelMapVolumeNode")
        assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
        scene.RemoveNode(labelmap)
        segmentation.GetSegmentation().GetNthSegment(segmentation.GetSegmentation().GetNumberOfSegments() - 1).SetName(name)
    segmentation.CreateDefaultDisplayNodes()
    segmentation.GetDisplayNode().SetSegmentVisibility(segmentation.GetSegmentation().GetNthSegmentID(0), False)
    assert exportSegmentation(segmentation, volume, tmp_path / "s.seg.nrrd") == ["first", "second"]
    read = read_label_map(tmp_path / "s.seg.nrrd")
    values = {s.name: s.value for s in read.segments}
    arr = __import__("SimpleITK").GetArrayFromImage(read.image)
    assert (arr[2:4, 2:8, 2:8] == values["first"]).all()  # the hidden segment is read
    assert (arr[4:6, 4:8, 4:8] == values["second"]).all()  # overlap: the lower segment in the list wins
    sparse, info = make_sparse(read.image, "k", target_grid(read.image, "native", None))
    out = __import__("SimpleITK").GetArrayFromImage(sparse)
    assert info.painted == 6 and (out[[0, 1, 8, 9]] == 255).all() and (out[2] == 0).sum() > 0


@pytest.mark.slow  # real medssl subprocesses (train, rank, predict)
def test_train_logic_with_a_few_painted_slices_on_a_real_scan(tmp_path, scene, realMedssl, medsslHome):
    import numpy as np
    import slicer

    from MedSSLLib.folder_logic import loadVolumeFile
    from MedSSLLib.testing import volumeFromArray
    from MedSSLLib.train_logic import TrainingCase, TrainLogic
    from MedSSLLib.nodeio import ijkToRas

    volume = loadVolumeFile(realScan("KmeansTest_T1UCharRaw.nii.gz"), scene)
    labels = loadVolumeFile(realScan("KmeansTest_T1KmeansPrelimSegmentation.nii.gz"), scene)
    arr = slicer.util.arrayFromVolume(labels).astype(np.uint8)
    arr[np.arange(arr.shape[0]) % 4 != 0] = 0  # painted on every 4th k slice only
    arr[arr > 2] = 0
    labelmap = volumeFromArray(scene, arr, ijkToRas(volume), "painted", "vtkMRMLLabelMapVolumeNode")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "painted")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    config = tmp_path / "fast.yaml"
    config.write_text("patch_size: [32, 32, 32]\nspacing: [3.0, 3.0, 3.0]\nloop: {validate_every: 2, checkpoint_every: 4}\n")
    options = FinetuneOptions(backbone="resenc:test", steps=4, device="cpu", config=str(config), sparseSlices="auto")
    job = TrainLogic(realMedssl).train("sparse_model", [TrainingCase([volume], segmentation)], options, timeout=900)
    painted = len(range(0, arr.shape[0], 4))
    assert any(f"{painted} of {arr.shape[0]} slices along axis k painted" in line for line in job.log), job.log
    assert len(job.outputs["package"].labels) == 2
