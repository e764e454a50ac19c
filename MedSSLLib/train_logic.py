"""Logic of MedSSLTrain without Qt: scene pairs -> training folder -> ``medssl finetune`` -> registered package.

Usage from Slicer's Python console (``MedSSLTrain.MedSSLTrainLogic`` holds this class as
``core`` and offers its methods)::

    from MedSSLLib.train_logic import TrainLogic, TrainingCase
    from MedSSLLib.commands import FinetuneOptions
    logic = TrainLogic()
    cases = [TrainingCase([getNode("CT1")], getNode("CT1 segmentation")),
             TrainingCase([getNode("CT2")], getNode("CT2 segmentation"))]
    job = logic.train("liver", cases, FinetuneOptions(backbone="openmind_resencl_mae", preset="quick"))
    print(job.outputs["package"].summary())             # now selectable in MedSSLSegment
    # bootstrap loop: segment, correct in Segment Editor, add the pair, then
    cases.append(TrainingCase([getNode("CT3")], getNode("CT3 corrected")))
    job = logic.continueTraining(job.outputs["package"], cases)   # writes liver_v2
    logic.jobs.wait()
    # self-supervised pretraining on unlabelled volumes (``--progress json`` is added), then fine-tuning from it:
    logic.runMedSSL(["pretrain", "--method", "mae3d", "--images", "/data/unlabelled", "--out", "/data/run_mae",
                     "--preset", "cpu"], wait=True, onLog=print)
    logic.train("liver_mae", cases, FinetuneOptions(backbone="/data/run_mae/export"))

Scene cases are exported to ``<medssl home>/slicer-training/<name>/imagesTr|labelsTr`` (one NRRD per
channel, labels as ``.seg.nrrd`` on the first channel's grid), an optional folder in the same layout is
added, and the command line is kept in ``run.json`` so that an interrupted run can be resumed.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from . import nodeio
from .commands import (FinetuneOptions, MedSSLCommand, finetuneArgs, weightsDownloadArgs, weightsImportArgs,
                       withJsonProgress)
from .jobs import Job, JobRunner, Schedule
from .packages import PackageInfo, isPackage, medsslHome, nextVersionName, packageFolder, readPackage, safeName
from .process import RunnerFactory

FOLDER_LAYOUTS = (("imagesTr", "labelsTr"), ("images", "labels"))
DELETED = "(deleted)"


@dataclass
class TrainingCase:
    """One labelled case from the scene: channel volume(s) and the segmentation drawn on them."""

    volumes: list[Any]
    segmentation: Any

    @property
    def name(self) -> str:
        return self.volumes[0].GetName() if self.volumes and self.volumes[0] is not None else "case"


@dataclass
class ExportedCase:
    """Files written for one case."""

    images: list[Path]
    label: Path
    segments: list[str] = field(default_factory=list)


def casesFromFlat(volumes: Sequence, segmentations: Sequence, channelCount: int) -> list[TrainingCase]:
    """Parameter-node lists (channels of all cases one after another) -> cases."""
    if channelCount < 1 or len(volumes) != len(segmentations) * channelCount:
        raise ValueError("the training set table is inconsistent; clear it and add the cases again")
    return [TrainingCase(list(volumes[i * channelCount:(i + 1) * channelCount]), seg)
            for i, seg in enumerate(segmentations)]


def removeCase(volumes: Sequence, segmentations: Sequence, channelCount: int, row: int) -> tuple[list, list]:
    """Parameter-node lists without case ``row``."""
    if not 0 <= row < len(segmentations):
        return list(volumes), list(segmentations)
    start, stop = row * channelCount, (row + 1) * channelCount
    return list(volumes[:start]) + list(volumes[stop:]), list(segmentations[:row]) + list(segmentations[row + 1:])


def caseCells(case: TrainingCase) -> tuple[str, str, str]:
    """Volume names, segmentation name and segment names of a case (the training-set table row).

    A node deleted from the scene reads back as None from the parameter node; its case is still listed
    (marked "(deleted)") so that the table rows and `removeCase` index the same list."""
    volumes = ", ".join(v.GetName() if v is not None else DELETED for v in case.volumes)
    if case.segmentation is None:
        return volumes, DELETED, ""
    segmentation = case.segmentation.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    return volumes, case.segmentation.GetName(), ", ".join(names)


def tableRows(volumes: Sequence, segmentations: Sequence, channelCount: int) -> list[tuple[str, str, str]]:
    """The training-set table: one row per case of the parameter-node lists, in their order (row i is case i)."""
    try:
        cases = casesFromFlat(list(volumes), list(segmentations), channelCount)
    except ValueError:  # e.g. the channel count was changed after adding cases
        return []
    return [caseCells(case) for case in cases]


def trainingFolderOrNone(use: bool, folder: Optional[Path]) -> Optional[Path]:
    """The folder of "Also use a folder", None when unticked; an unset field (``Path()``, i.e. ".", which is
    what the parameter node holds before one is chosen) or a relative path is refused instead of meaning
    Slicer's working directory."""
    if not use:
        return None
    if folder is None or str(folder) in ("", ".") or not Path(folder).is_absolute():
        raise ValueError("choose the training folder (imagesTr and labelsTr) or untick \"Also use a folder\"")
    return Path(folder)


def checkCases(cases: Sequence[TrainingCase]) -> None:
    """Every case has all its channels and a segmentation, and all cases have the same channel count."""
    for case in cases:
        if not case.volumes or any(v is None for v in case.volumes) or case.segmentation is None:
            raise ValueError(f"training case {case.name} misses a volume or its segmentation")
    if len({len(case.volumes) for case in cases}) > 1:
        raise ValueError("all training cases need the same number of channels")


def exportCase(case: TrainingCase, imagesDir: Path, labelsDir: Path, index: int) -> ExportedCase:
    """Write the channels (``<stem>_0000.nrrd``...) and the label (``<stem>.seg.nrrd``) of one case."""
    stem = f"slicer{index:03d}_{safeName(case.name)}"
    images = nodeio.writeChannels(case.volumes, imagesDir, stem, compress=True)
    label = labelsDir / f"{stem}.seg.nrrd"
    segments = nodeio.exportSegmentation(case.segmentation, case.volumes[0], label)
    return ExportedCase(images, label, segments)


def exportTrainingSet(cases: Sequence[TrainingCase], folder: Union[str, Path]) -> list[ExportedCase]:
    """Export scene cases into ``folder/imagesTr`` and ``folder/labelsTr`` (replacing an earlier export)."""
    checkCases(cases)
    imagesDir, labelsDir = Path(folder) / "imagesTr", Path(folder) / "labelsTr"
    for sub in (imagesDir, labelsDir):
        shutil.rmtree(sub, ignore_errors=True)
        sub.mkdir(parents=True)
    return [exportCase(case, imagesDir, labelsDir, index) for index, case in enumerate(cases)]


def folderLayout(folder: Union[str, Path]) -> tuple[Path, Path]:
    """(images folder, labels folder) of a training folder in nnU-Net layout (imagesTr/labelsTr or images/labels)."""
    root = Path(folder)
    for images, labels in FOLDER_LAYOUTS:
        if (root / images).is_dir() and (root / labels).is_dir():
            return root / images, root / labels
    raise ValueError(f"{root} needs sub-folders imagesTr and labelsTr (or images and labels); cases are "
                     f"matched by file name, channels as <case>_0000, <case>_0001...")


class TrainLogic:
    """Fine-tune models from scene cases and/or a folder; see the module docstring."""

    RUN_FILE = "run.json"

    def __init__(self, command: Optional[MedSSLCommand] = None, runnerFactory: Optional[RunnerFactory] = None,
                 schedule: Optional[Schedule] = None) -> None:
        self.jobs = JobRunner(command, runnerFactory, schedule)

    @property
    def busy(self) -> bool:
        return self.jobs.busy

    @staticmethod
    def runFolder(modelName: str) -> Path:
        """Where the exported training set and ``run.json`` of a model live."""
        return medsslHome() / "slicer-training" / safeName(modelName)

    def canResume(self, modelName: str) -> bool:
        """An interrupted run exists: its command line is saved and the package is not complete (False for a
        name that is not one yet, e.g. an empty field while the user types)."""
        try:
            out = packageFolder(modelName)
        except ValueError:
            return False
        saved = (self.runFolder(modelName) / self.RUN_FILE).is_file()
        return saved and (out / "training" / "plan.json").is_file() and not isPackage(out)

    def trainingArgs(self, modelName: str, cases: Sequence[TrainingCase], options: FinetuneOptions,
                     folder: Optional[Union[str, Path]] = None) -> list[str]:
        """Export the scene cases and build the ``medssl finetune`` command line."""
        if not cases and folder is None:
            raise ValueError("add at least one labelled case (volume + segmentation) or choose a training folder")
        out, runDir = packageFolder(modelName), self.runFolder(modelName)
        # medssl's own rule (RunFolder.prepare): a package, or a run that saved a training state, is kept; a first
        # run that stopped before its first checkpoint (out of memory, wrong device) holds nothing to lose
        started = isPackage(out) or (out / "training" / "checkpoint_last.pt").is_file()
        if started and not options.overwrite:
            raise ValueError(f"a model or an interrupted run named {safeName(modelName)} already exists; "
                             f"resume it or choose another name")
        images, labels = [], []
        if cases:
            exportTrainingSet(cases, runDir)
            images.append([runDir / "imagesTr"])
            labels.append(runDir / "labelsTr")
        if folder is not None:
            folderImages, folderLabels = folderLayout(folder)
            images.append([folderImages])
            labels.append(folderLabels)
        return finetuneArgs(images, labels, out, options)

    def start(self, modelName: str, cases: Sequence[TrainingCase], options: Optional[FinetuneOptions] = None,
              folder: Optional[Union[str, Path]] = None, onProgress: Optional[Callable[[Job], None]] = None,
              onLog: Optional[Callable[[str], None]] = None,
              onFinished: Optional[Callable[[Job], None]] = None) -> Job:
        """Export, start ``medssl finetune`` and return the job; the package is read when it succeeds."""
        args = self.trainingArgs(modelName, cases, options or FinetuneOptions(), folder)
        runDir = self.runFolder(modelName)
        runDir.mkdir(parents=True, exist_ok=True)
        (runDir / self.RUN_FILE).write_text(json.dumps({"model": modelName, "args": args}, indent=1))
        return self._runFinetune(args, modelName, onProgress, onLog, onFinished)

    def continueTraining(self, previous: Union[PackageInfo, str, Path], cases: Sequence[TrainingCase],
                         options: Optional[FinetuneOptions] = None, folder: Optional[Union[str, Path]] = None,
                         modelName: Optional[str] = None, **callbacks) -> Job:
        """Bootstrap loop: train a new version (``<name>_v2``...) starting from the previous package."""
        package = previous if isinstance(previous, PackageInfo) else readPackage(previous)
        options = dataclasses.replace(options or FinetuneOptions(), backbone=str(package.path), resume=False)
        return self.start(modelName or self.nextModelName(package.path.name), cases, options, folder, **callbacks)

    @staticmethod
    def nextModelName(name: str) -> str:
        """The first free ``<name>_vN`` in the models folder."""
        candidate = nextVersionName(name)
        while packageFolder(candidate).exists():
            candidate = nextVersionName(candidate)
        return candidate

    def resume(self, modelName: str, onProgress: Optional[Callable[[Job], None]] = None,
               onLog: Optional[Callable[[str], None]] = None,
               onFinished: Optional[Callable[[Job], None]] = None) -> Job:
        """Continue the interrupted run of ``modelName`` with the same files and settings."""
        if not self.canResume(modelName):
            raise ValueError(f"there is no interrupted training run of {modelName} to resume")
        saved = json.loads((self.runFolder(modelName) / self.RUN_FILE).read_text())
        args = [a for a in saved["args"] if a != "--overwrite"] + ["--resume"]
        return self._runFinetune(args, modelName, onProgress, onLog, onFinished)

    def _runFinetune(self, args: list[str], modelName: str, onProgress, onLog, onFinished) -> Job:
        def readPackageInfo(job: Job) -> None:
            job.outputs["package"] = readPackage(packageFolder(modelName))

        return self.jobs.run(args, onProgress, onLog, onFinished, onSuccess=readPackageInfo)

    def train(self, modelName: str, cases: Sequence[TrainingCase], options: Optional[FinetuneOptions] = None,
              folder: Optional[Union[str, Path]] = None, timeout: Optional[float] = None,
              onLog: Optional[Callable[[str], None]] = None) -> Job:
        """Blocking version of `start`; raises RuntimeError with medssl's message when it fails."""
        self.start(modelName, cases, options, folder, onLog=onLog)
        return self.jobs.waitOrRaise(timeout, "training")

    def downloadWeights(self, weightsId: str, acceptLicence: bool, **callbacks) -> Job:
        """``medssl weights download ID`` (progress and log through the callbacks)."""
        return self.jobs.run(weightsDownloadArgs(weightsId, acceptLicence), **callbacks)

    def importWeights(self, path: Union[str, Path], weightsId: str, acceptLicence: bool = False, **callbacks) -> Job:
        """``medssl weights import FILE --id ID``: offline installation of a downloaded weights file."""
        return self.jobs.run(weightsImportArgs(path, weightsId, acceptLicence), **callbacks)

    def runMedSSL(self, args: Sequence[str], wait: bool = False, timeout: Optional[float] = None,
                  **callbacks) -> Job:
        """Any medssl command (e.g. ``pretrain``); ``--progress json`` is added where the command has it
        (`MedSSLLib.commands.withJsonProgress`). ``wait=True`` blocks and raises RuntimeError on failure."""
        job = self.jobs.run(withJsonProgress(args), **callbacks)
        return self.jobs.waitOrRaise(timeout, f"medssl {args[0]}") if wait else job

    def cancel(self) -> None:
        """Stop the running job; training can be resumed later from its last checkpoint."""
        self.jobs.cancel()
