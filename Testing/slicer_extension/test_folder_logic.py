"""MedSSL Segment's folder mode (MedSSLLib/folder_logic.py): one ``medssl predict --input-dir`` for every case,
driven by its per-case events. fake_medssl.py speaks those events (pinned against the real CLI by
Testing/test_predict_folder.py); the real CLI runs in test_annotator_logic.py's folder test."""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from medssl_slicer_helpers import obliqueRightHanded, recordedArgs  # noqa: E402
from test_segment_logic import expectedLabels, labelArrayOnVolumeGrid, makeVolume  # noqa: E402

from MedSSLLib import nodeio  # noqa: E402
from MedSSLLib.commands import PredictOptions, predictFolderArgs  # noqa: E402
from MedSSLLib.folder_logic import FolderLogic, volumeFiles  # noqa: E402
from MedSSLLib.process import ProcessRunner  # noqa: E402


class CountingRunner(ProcessRunner):
    """The real runner, counting the processes started (folder mode must start one)."""

    started = []

    def start(self, args, env=None, cwd=None):
        CountingRunner.started.append(list(args))
        super().start(args, env, cwd)


REPLACE_OLD = PredictOptions(overwrite=True)  # caseFolder's old result is replaced (as the panel does when told to)


def caseFolder(scene, tmp_path, names=("a_one", "b_two")):
    """Volumes written as files (oblique grid) plus a broken file, an old result and a hidden file."""
    folder = tmp_path / "cases"
    folder.mkdir()
    arrays = {}
    for n, name in enumerate(names):
        volume, values = makeVolume(scene, obliqueRightHanded(), shape=(9, 10, 11 + n), name=name)
        nodeio.writeVolume(volume, folder / f"{name}.nrrd")
        arrays[name] = values
        scene.RemoveNode(volume)
    (folder / "c_broken.nii.gz").write_bytes(b"not a volume")
    (folder / "a_one_tiny_model.seg.nrrd").write_bytes(b"an old result: not a case")
    (folder / "._a_one.nrrd").write_bytes(b"macOS resource fork: not a case")
    return folder, arrays


def test_folder_runs_one_process_writes_beside_the_inputs_and_lists_failures(scene, fakeMedssl, tinyPackage,
                                                                             tmp_path):
    folder, arrays = caseFolder(scene, tmp_path)
    logic, seen = FolderLogic(fakeMedssl, runnerFactory=CountingRunner), []
    assert logic.existingOutputs(folder, tinyPackage) == [folder / "a_one_tiny_model.seg.nrrd"]  # caseFolder's old one
    refused = logic.segmentFolder(folder, tinyPackage, PredictOptions(device="cpu"), timeout=120)
    assert not refused.written and "pass --overwrite" in refused.error
    assert (folder / "a_one_tiny_model.seg.nrrd").read_bytes() == b"an old result: not a case"
    CountingRunner.started.clear()
    run = logic.segmentFolder(folder, tinyPackage, PredictOptions(device="cpu", overwrite=True), loadResults=True,
                              onCase=lambda r: seen.append(r.statusText()), timeout=120)
    assert len(CountingRunner.started) == 1 and "--input-dir" in recordedArgs(fakeMedssl)
    assert "--overwrite" in recordedArgs(fakeMedssl)
    assert [s.split(" - ")[0] for s in seen] == ["Case 1 of 3: a_one", "Case 2 of 3: b_two", "Case 3 of 3: c_broken"]
    assert run.outputs == {name: folder / f"{name}_tiny_model.seg.nrrd" for name in arrays}
    assert [name for name, _ in run.failures] == ["c_broken"] and "c_broken.nii.gz" in run.failures[0][1]
    assert run.summary().splitlines()[0] == "2 of 3 case(s) segmented, 1 failed" and run.error is None
    assert run.percent == 100 and not run.notRun and not logic.busy
    for path, segmentation in run.segmentations.items():
        volume = segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())
        assert nodeio.sameGeometry(volume, nodeio.importVolume(path, volume, "check"))
        labels, _ = labelArrayOnVolumeGrid(segmentation, volume)
        np.testing.assert_array_equal(labels, expectedLabels(arrays[volume.GetName()]))


def test_folder_into_an_output_folder_without_loading(scene, fakeMedssl, tinyPackage, tmp_path):
    folder, _ = caseFolder(scene, tmp_path, names=("one",))
    before = scene.GetNumberOfNodes()
    run = FolderLogic(fakeMedssl).segmentFolder(folder, tinyPackage, outputDir=tmp_path / "out", timeout=120)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one_tiny_model.seg.nrrd"]
    assert run.outputs["one"].parent == tmp_path / "out" and not run.segmentations
    assert scene.GetNumberOfNodes() == before


def test_scene_mode_segments_every_volume_and_lists_an_empty_one(scene, fakeMedssl, tinyPackage):
    volumes = [makeVolume(scene, obliqueRightHanded(), name=f"MR{n}", shape=(8, 9, 10 + n)) for n in range(2)]
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    run = FolderLogic(fakeMedssl).segmentScene([volumes[0][0], empty, volumes[1][0]], tinyPackage, timeout=120)
    assert [name for name, _ in run.failures] == ["empty"] and run.summary().startswith("2 of 3 case(s) segmented")
    for volume, values in volumes:
        segmentation = run.segmentations[volume]
        assert segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole()) is volume
        np.testing.assert_array_equal(labelArrayOnVolumeGrid(segmentation, volume)[0], expectedLabels(values))


def test_stop_after_current_writes_that_case_and_starts_no_other(scene, fakeMedssl, tinyPackage, tmp_path):
    folder, _ = caseFolder(scene, tmp_path)
    fakeMedssl.env["FAKE_MEDSSL_CASE_SLEEP"] = "0.5"
    logic = FolderLogic(fakeMedssl)
    logic.startFolder(folder, tinyPackage, REPLACE_OLD, onCase=lambda r: logic.stopAfterCurrent())
    run = logic.wait(120)
    assert run.written == ["a_one"] and (folder / "a_one_tiny_model.seg.nrrd").is_file()
    assert not (folder / "b_two_tiny_model.seg.nrrd").exists() and run.notRun == ["b_two", "c_broken"]
    assert run.summary().splitlines()[0] == "1 of 3 case(s) segmented, stopped" and not run.cancelled


def test_cancel_stops_now_and_keeps_the_cases_written(scene, fakeMedssl, tinyPackage, tmp_path):
    folder, _ = caseFolder(scene, tmp_path)
    fakeMedssl.env["FAKE_MEDSSL_CASE_SLEEP"] = "2"
    logic = FolderLogic(fakeMedssl)
    states = []

    def onProgress(run):
        states.append(run.percent)
        if run.current == "b_two" and not run.cancelled:
            logic.cancel()  # case 1 is written, case 2 is sleeping

    logic.startFolder(folder, tinyPackage, REPLACE_OLD, onProgress=onProgress)
    run = logic.wait(120)
    assert run.cancelled and run.written == ["a_one"]
    assert run.notRun == ["b_two", "c_broken"] and "cancelled" in run.summary()
    assert states == sorted(states) and states[-1] < 100


def test_folder_arguments_parse_in_the_real_cli(tmp_path):
    from medssl.cli.main import build_parser

    args = predictFolderArgs("pkg", tmp_path, tmp_path / "out", PredictOptions(device="cpu", tta=True, overlap=0.25),
                             "_m.seg.nrrd")
    parsed = build_parser().parse_args(args)
    assert (parsed.input_dir, parsed.output_dir, parsed.output_suffix) == (str(tmp_path), str(tmp_path / "out"),
                                                                           "_m.seg.nrrd")
    assert parsed.tta and parsed.overlap == 0.25 and parsed.progress == "json" and parsed.input is None
    with pytest.raises(ValueError, match="uncertainty maps are written for one volume"):
        predictFolderArgs("pkg", tmp_path, tmp_path, PredictOptions(uncertainty=True))


def test_volume_files_are_the_cases_medssl_segments(tmp_path):
    """Case names and the files left out agree with medssl's folder_cases (so events map back to files)."""
    from medssl.cli.predict_folder import folder_cases

    from MedSSLLib.folder_logic import stem

    for name in ("b.nii.gz", "a.nrrd", "a.nii.gz", "c.mha", "d.nii", "e_1.nhdr", "x.seg.nrrd", ".hidden.nrrd",
                 "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    sources = {stem(p): p for p in volumeFiles(tmp_path)}  # what FolderLogic.startFolder maps cases to
    assert sources == {case: files[0] for case, files in folder_cases(tmp_path, 1).items()}
    assert sorted(sources) == list(folder_cases(tmp_path, 1)) and sources["a"].name == "a.nrrd"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no volumes"):
        volumeFiles(tmp_path / "empty")
    with pytest.raises(ValueError, match="is not a folder"):
        volumeFiles(tmp_path / "missing")


def test_real_medssl_keeps_an_earlier_result_until_overwrite_is_asked(scene, realMedssl, tinyPackage, tmp_path):
    """The real CLI (not the stand-in): an existing output stops the run before any case, in one line naming
    --overwrite; with the option the folder is segmented and the old file replaced."""
    folder, _ = caseFolder(scene, tmp_path, names=("one",))
    (folder / "c_broken.nii.gz").unlink()
    old = folder / "one_tiny_model.seg.nrrd"
    old.write_bytes(b"an earlier result")
    logic = FolderLogic(realMedssl)
    assert logic.existingOutputs(folder, tinyPackage) == [old]
    refused = logic.segmentFolder(folder, tinyPackage, PredictOptions(device="cpu"), timeout=300)
    assert not refused.written and "1 of the 1 output(s) already exist" in refused.error
    assert old.read_bytes() == b"an earlier result"
    run = logic.segmentFolder(folder, tinyPackage, PredictOptions(device="cpu", overwrite=True), timeout=300)
    assert run.written == ["one"] and run.error is None and old.read_bytes() != b"an earlier result"
