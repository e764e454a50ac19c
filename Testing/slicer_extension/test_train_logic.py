"""MedSSLTrain logic: training-set export from scene pairs, finetune command, registration, resume, bootstrap."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")

from medssl_slicer_helpers import (obliqueLeftHanded, obliqueRightHanded, recordedArgs,  # noqa: E402
                                   sceneSnapshot, waitFor)

from MedSSLLib.commands import FinetuneOptions  # noqa: E402
from MedSSLLib.nodeio import exportSegmentation  # noqa: E402
from MedSSLLib.packages import listPackages, modelsDir  # noqa: E402
from MedSSLLib.testing import ijkToRasMatrix, volumeFromArray  # noqa: E402
from MedSSLLib.train_logic import (TrainingCase, TrainLogic, casesFromFlat, exportTrainingSet,  # noqa: E402
                                   folderLayout)


def labelledCase(scene, geometry, name, shape=(12, 16, 20), names=("liver", "tumour"), seed=0):
    """A volume and a segmentation made from a label map on the same grid; returns (case, label array)."""
    rng = np.random.default_rng(seed)
    values = rng.normal(100, 20, shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[2:6, 3:9, 4:12] = 1
    labels[7:10, 9:14, 10:17] = 2
    volume = volumeFromArray(scene, values, geometry, name)
    labelmap = volumeFromArray(scene, labels, geometry, name + "-label", "vtkMRMLLabelMapVolumeNode")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name + " segmentation")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    scene.RemoveNode(labelmap)
    segments = segmentation.GetSegmentation()
    for index, segmentName in enumerate(names):
        segments.GetNthSegment(index).SetName(segmentName)
    return TrainingCase([volume], segmentation), labels


def test_export_keeps_geometry_and_labels_as_medssl_reads_them(scene, tmp_path):
    """Exported files, read by medssl's own readers, are on the volume grid with the scene's labels."""
    from medssl.data.datasets import collect_cases
    from medssl.io.geometry import Grid, same_grid
    from medssl.io.labels import read_label_map
    from medssl.io.volume_io import read_image

    geometries = [obliqueLeftHanded(), obliqueRightHanded()]
    made = [labelledCase(scene, g, f"case{i}", names=[("liver", "tumour"), ("tumour", "liver")][i], seed=i)
            for i, g in enumerate(geometries)]
    exported = exportTrainingSet([case for case, _ in made], tmp_path)
    pairs = collect_cases([str(tmp_path / "imagesTr")], [str(tmp_path / "labelsTr")])
    assert [Path(p.label) for p in pairs] == [e.label for e in exported]
    for (case, labels), pair, geometry in zip(made, pairs, geometries):
        image, labelMap = read_image(pair.channels[0]), read_label_map(pair.label)
        assert same_grid(Grid.of(image), Grid.of(labelMap.image))  # the check medssl itself applies
        np.testing.assert_allclose(labelMap.image.GetDirection(), image.GetDirection(), atol=1e-12)
        np.testing.assert_allclose(labelMap.image.GetSpacing(), image.GetSpacing(), rtol=1e-12)
        np.testing.assert_allclose(np.array(image.GetOrigin()) * [-1, -1, 1], geometry[:3, 3], atol=1e-6)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), slicer.util.arrayFromVolume(case.volumes[0]))
        byName = {s.name: s.value for s in labelMap.segments}
        fileLabels = sitk.GetArrayFromImage(labelMap.image)
        names = [case.segmentation.GetSegmentation().GetNthSegment(i).GetName() for i in range(2)]
        for sceneValue, name in enumerate(names, start=1):
            np.testing.assert_array_equal(fileLabels == byName[name], labels == sceneValue)


def test_export_resamples_a_segmentation_drawn_on_another_grid(scene, tmp_path):
    from medssl.io.geometry import Grid, same_grid
    from medssl.io.labels import read_label_map
    from medssl.io.volume_io import read_image

    case, _ = labelledCase(scene, obliqueRightHanded(), "fine")
    coarse = ijkToRasMatrix(np.eye(3), (2.0, 2.0, 2.0), (-40.0, -10.0, -30.0))
    other, _ = labelledCase(scene, coarse, "coarse", shape=(30, 30, 30))
    exported = exportTrainingSet([TrainingCase(case.volumes, other.segmentation)], tmp_path)[0]
    labelMap = read_label_map(exported.label)
    assert same_grid(Grid.of(read_image(str(exported.images[0]))), Grid.of(labelMap.image))
    assert [s.name for s in labelMap.segments] == ["liver", "tumour"] == exported.segments


def test_export_refuses_empty_or_transformed_segmentations(scene, tmp_path):
    case, _ = labelledCase(scene, obliqueRightHanded(), "case")
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    with pytest.raises(ValueError, match="no segments"):
        exportSegmentation(empty, case.volumes[0], tmp_path / "a.seg.nrrd")
    empty.GetSegmentation().AddEmptySegment("s", "nothing painted")
    with pytest.raises(ValueError, match="is empty inside"):
        exportSegmentation(empty, case.volumes[0], tmp_path / "a.seg.nrrd")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    case.segmentation.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(ValueError, match="different transforms"):
        exportSegmentation(case.segmentation, case.volumes[0], tmp_path / "a.seg.nrrd")


def test_train_runs_finetune_and_registers_the_package(scene, fakeMedssl, medsslHome):
    cases = [labelledCase(scene, obliqueLeftHanded(), f"CT{i}", seed=i)[0] for i in range(2)]
    before = sceneSnapshot(scene)
    logic = TrainLogic(fakeMedssl)
    progress = []
    job = logic.start("liver model", cases, FinetuneOptions(backbone="resenc:tiny", steps=4, device="cpu"),
                      onProgress=lambda j: progress.append(j.progress.percent))
    logic.jobs.wait(timeout=60)
    assert job.ok, job.error
    args = recordedArgs(fakeMedssl)
    runDir = medsslHome / "slicer-training" / "liver_model"
    assert args[args.index("--images") + 1] == str(runDir / "imagesTr")
    assert args[args.index("--labels") + 1] == str(runDir / "labelsTr")
    assert args[args.index("--out") + 1] == str(modelsDir() / "liver_model")
    assert args[args.index("--steps") + 1] == "4" and args[args.index("--progress") + 1] == "json"
    assert len(list((runDir / "imagesTr").iterdir())) == 2 and len(list((runDir / "labelsTr").iterdir())) == 2
    assert progress[-1] == 100 and job.progress.losses[-1] == (4, 0.25) and job.progress.latestDice() == 0.8
    assert [p.path.name for p in listPackages()] == ["liver_model"] == [job.outputs["package"].path.name]
    assert sceneSnapshot(scene) == before
    with pytest.raises(ValueError, match="already exists"):
        logic.start("liver model", cases)


def test_a_first_run_that_saved_nothing_does_not_block_its_name(scene, fakeMedssl, medsslHome):
    """Found by an audit: a first run stopped before its first checkpoint (e.g. out of memory) left
    ``training/plan.json``, and Start refused the name for good, where medssl itself starts afresh."""
    cases = [labelledCase(scene, obliqueLeftHanded(), "CT0", seed=0)[0]]
    logic = TrainLogic(fakeMedssl)
    failed = modelsDir() / "retry" / "training"
    failed.mkdir(parents=True)
    (failed / "plan.json").write_text("{}")
    args = logic.trainingArgs("retry", cases, FinetuneOptions(device="cpu"))
    assert args[args.index("--out") + 1] == str(modelsDir() / "retry") and "--overwrite" not in args
    (failed / "checkpoint_last.pt").write_bytes(b"state")  # a run with saved progress is kept
    with pytest.raises(ValueError, match="already exists; resume it"):
        logic.trainingArgs("retry", cases, FinetuneOptions(device="cpu"))


def test_continue_training_starts_from_the_last_package(scene, fakeMedssl, medsslHome):
    cases = [labelledCase(scene, obliqueRightHanded(), "CT0")[0]]
    logic = TrainLogic(fakeMedssl)
    first = logic.train("liver", cases, FinetuneOptions(device="cpu"))
    cases.append(labelledCase(scene, obliqueLeftHanded(), "CT1", seed=3)[0])
    logic.continueTraining(first.outputs["package"], cases, FinetuneOptions(preset="standard"))
    second = logic.jobs.wait(timeout=60)
    args = recordedArgs(fakeMedssl)
    assert second.ok and second.outputs["package"].path.name == "liver_v2"
    assert args[args.index("--backbone") + 1] == str(modelsDir() / "liver")
    assert args[args.index("--preset") + 1] == "standard" and "--resume" not in args
    assert len(list((medsslHome / "slicer-training" / "liver_v2" / "labelsTr").iterdir())) == 2
    assert TrainLogic.nextModelName("liver") == "liver_v3"


def test_scene_cases_and_a_folder_together(scene, fakeMedssl, medsslHome, tmp_path):
    folder = tmp_path / "dataset"
    with pytest.raises(ValueError, match="imagesTr and labelsTr"):
        folderLayout(folder)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    case, _ = labelledCase(scene, obliqueRightHanded(), "CT0")
    TrainLogic(fakeMedssl).train("mixed", [case], folder=folder)
    args = recordedArgs(fakeMedssl)
    images = args[args.index("--images") + 1:args.index("--labels")]
    assert images == [str(medsslHome / "slicer-training" / "mixed" / "imagesTr"), str(folder / "imagesTr")]


def test_cases_from_parameter_node_lists(scene):
    volumes = [volumeFromArray(scene, np.zeros((2, 2, 2)), np.eye(4), f"v{i}") for i in range(4)]
    segs = [scene.AddNewNodeByClass("vtkMRMLSegmentationNode") for _ in range(2)]
    cases = casesFromFlat(volumes, segs, 2)
    assert [c.volumes for c in cases] == [volumes[:2], volumes[2:]] and [c.segmentation for c in cases] == segs
    with pytest.raises(ValueError, match="inconsistent"):
        casesFromFlat(volumes[:3], segs, 2)


def test_real_finetune_cancel_then_resume_is_offered(scene, realMedssl, medsslHome):
    """The real ``medssl finetune``: Cancel stops it; the run can be resumed with the same files."""
    cases = [labelledCase(scene, obliqueRightHanded(), f"CT{i}", shape=(16, 16, 16), seed=i)[0] for i in range(2)]
    logic = TrainLogic(realMedssl)
    options = FinetuneOptions(backbone="resenc:test", steps=50, device="cpu", extraArgs=["--patch-size", "16", "16", "16"])
    job = logic.start("real", cases, options)
    assert waitFor(lambda: job.progress.task == "finetune" or job.finished, timeout=120, poll=logic.jobs.poll)
    assert not job.finished, job.error
    logic.cancel()
    logic.jobs.wait(timeout=60)
    assert job.cancelled and logic.canResume("real") and not listPackages()
    saved = json.loads((medsslHome / "slicer-training" / "real" / "run.json").read_text())
    resumed = logic.resume("real")
    assert resumed.args == saved["args"] + ["--resume"]
    logic.cancel()
    logic.jobs.wait(timeout=60)
    assert resumed.cancelled


def test_training_curves_follow_the_events(scene):
    from MedSSLLib.curves import TrainingCurves
    from MedSSLLib.events import ProgressState

    before = sceneSnapshot(scene)
    curves = TrainingCurves(scene)
    state = ProgressState()
    for event in [{"event": "step", "step": s, "total": 4, "loss": 1.0 / s} for s in range(1, 5)] + \
                 [{"event": "validation", "step": 4, "dice": {"liver": 0.7}, "mean_dice": 0.7}]:
        state.update(event)
    curves.update(state)
    loss = curves.lossTable.GetTable()
    assert [loss.GetValue(r, 1).ToDouble() for r in range(loss.GetNumberOfRows())] == pytest.approx([1, .5, 1 / 3, .25])
    assert curves.diceTable.GetTable().GetValue(0, 1).ToDouble() == pytest.approx(0.7)
    assert curves.chart.GetNumberOfPlotSeriesNodes() == 2 and curves.lossTable.GetHideFromEditors()
    view = curves.createViewNode()
    assert view.GetPlotChartNodeID() == curves.chart.GetID() and curves.createViewNode() is view
    assert view.GetHideFromEditors() and view.GetScene() is scene
    curves.remove()
    assert sceneSnapshot(scene) == before


def test_threshold_sample_segmentation_exports_like_the_self_test(scene, tmp_path):
    """What MedSSLTrainTest does with the sample volume inside Slicer, on a synthetic volume."""
    from MedSSLLib.testing import segmentationFromThreshold

    values = np.random.default_rng(1).normal(50, 10, (10, 12, 14)).astype(np.int16)
    volume = volumeFromArray(scene, values, obliqueRightHanded(), "MR")
    exported = exportTrainingSet([TrainingCase([volume], segmentationFromThreshold(volume))], tmp_path)[0]
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(exported.label)))
    np.testing.assert_array_equal(label, (values > values.mean()).astype(np.uint8))
    assert exported.segments == ["bright"]


def test_training_set_table_rows_and_removal(scene):
    from MedSSLLib.train_logic import caseCells, removeCase

    cases = [labelledCase(scene, obliqueRightHanded(), f"CT{i}", seed=i)[0] for i in range(3)]
    volumes = [v for case in cases for v in case.volumes]
    segmentations = [case.segmentation for case in cases]
    assert caseCells(cases[1]) == ("CT1", "CT1 segmentation", "liver, tumour")
    volumes, segmentations = removeCase(volumes, segmentations, 1, 1)
    assert [c.name for c in casesFromFlat(volumes, segmentations, 1)] == ["CT0", "CT2"]
    assert removeCase(volumes, segmentations, 1, 5) == (volumes, segmentations)


def test_run_medssl_adds_json_progress_where_the_real_cli_has_it():
    """`withJsonProgress` covers exactly the medssl subcommands whose parser offers ``--progress json``."""
    pytest.importorskip("medssl.cli.main")
    import argparse

    from medssl.cli.main import build_parser

    from MedSSLLib.commands import PROGRESS_COMMANDS, withJsonProgress

    def commandsWithJsonProgress(parser, prefix=()):
        found = set()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found |= commandsWithJsonProgress(sub, (*prefix, name))
            elif "--progress" in action.option_strings and "json" in (action.choices or ()):
                found.add(prefix)
        return found

    assert commandsWithJsonProgress(build_parser()) == set(PROGRESS_COMMANDS)
    assert withJsonProgress(["pretrain", "--method", "mae3d"]) == ["pretrain", "--method", "mae3d",
                                                                   "--progress", "json"]
    assert withJsonProgress(["weights", "download", "x"])[-2:] == ["--progress", "json"]
    for unchanged in (["pretrain", "--help"], ["predict", "--progress", "none"], ["weights", "list", "--json"],
                      ["info", "--json"], ["pretrain", "--progress=bar"]):
        assert withJsonProgress(unchanged) == unchanged
    build_parser().parse_args(withJsonProgress(["weights", "download", "voco_b"]))


@pytest.mark.slow
def test_headless_pretraining_then_finetuning_from_its_export(scene, realMedssl, medsslHome, tmp_path):
    """The README's scripting example, tiny: ``runMedSSL(["pretrain", ...])`` reports its steps (progress is
    added by runMedSSL), then ``train`` fine-tunes from ``RUN/export`` and registers the package."""
    import yaml

    from MedSSLLib import nodeio

    cases = [labelledCase(scene, obliqueRightHanded(), f"CT{i}", shape=(16, 16, 16), seed=i)[0] for i in range(2)]
    images = tmp_path / "unlabelled"
    images.mkdir()
    for case in cases:
        nodeio.writeVolume(case.volumes[0], images / f"{case.name}.nrrd")
    config = tmp_path / "tiny_mae.yaml"
    config.write_text(yaml.safe_dump({
        "backbone": "resenc:test", "batch_size": 1, "patch_size": [16, 16, 16], "spacing": 2.0, "method": {"block": 4},
        "loop": {"steps": 2, "checkpoint_every": 2, "log_every_s": 0, "num_workers": 0, "warmup_steps": 0}}))
    logic, run = TrainLogic(realMedssl), tmp_path / "run_mae"
    job = logic.runMedSSL(["pretrain", "--method", "mae3d", "--images", str(images), "--out", str(run),
                           "--preset", "cpu", "--config", str(config), "--device", "cpu"], wait=True, timeout=600)
    assert job.args[-2:] == ["--progress", "json"] and [s for s, _ in job.progress.losses] == [1, 2]
    assert job.progress.result["task"] == "pretrain" and (run / "export" / "backbone.safetensors").is_file()
    trained = logic.train("from_mae", cases, FinetuneOptions(backbone=str(run / "export"), steps=2, device="cpu"),
                          timeout=600)
    package = trained.outputs["package"]
    assert package.path == modelsDir() / "from_mae" and [p.path for p in listPackages()] == [package.path]
    assert str(run / "export") in json.dumps(json.loads((package.path / "metadata.json").read_text()))
