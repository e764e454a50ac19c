"""Folder mode of MedSSL Segment without Qt: every volume of a folder (or of the scene), one after another.

Usage from Slicer's Python console::

    from MedSSLLib.folder_logic import FolderLogic
    logic = FolderLogic()
    model = logic.listModels()[0]
    run = logic.segmentFolder("/data/cases", model, onCase=lambda run: print(run.statusText()))
    print(run.summary())            # written files; failed cases with medssl's one-line reason
    run = logic.segmentScene(list(slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")), model)
    run.segmentations                # volume node -> new segmentation node

Each case is one ``medssl predict`` run (the runtime's ``medssl predict --input-dir DIR --output-dir DIR``,
which loads the model once, can replace the per-case loop once it is in the core); progress is reported per
case, `cancel` stops the current case and the rest, `stopAfterCurrent` stops between cases, and a case that
fails does not stop the others: it is listed in `FolderRun.failures` at the end. Results go next to the
inputs (``<case>_<model>.seg.nrrd``) or into ``outputDir``; with ``loadResults`` they are also loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from .commands import MedSSLCommand, PredictOptions, predictArgs
from .jobs import Job, JobRunner, Schedule
from .packages import PackageInfo, listPackages, readPackage, safeName
from .process import RunnerFactory

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
ModelSpec = Union[PackageInfo, str, Path]


def volumeFiles(folder: Union[str, Path]) -> list[Path]:
    """Image files directly in ``folder`` (segmentations, ``*.seg.nrrd``, and hidden files left out)."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{folder} is not a folder; choose the folder that holds the volumes")
    files = [p for p in sorted(root.iterdir()) if p.is_file() and not p.name.startswith(".")
             and p.name.lower().endswith(IMAGE_SUFFIXES) and not p.name.lower().endswith(".seg.nrrd")]
    if not files:
        raise ValueError(f"{folder} holds no volumes ({', '.join(IMAGE_SUFFIXES)})")
    return files


def stem(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def loadVolumeFile(path: Union[str, Path], scene=None):
    """A scalar volume node read by Slicer's own archetype storage node (works without the application)."""
    import slicer

    scene = scene or slicer.mrmlScene
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", stem(Path(path)))
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        raise RuntimeError(f"could not read the volume {path}")
    node.CreateDefaultDisplayNodes()
    return node


@dataclass
class FolderRun:
    """State of one folder/scene run: cases, the case being segmented, results and failures."""

    cases: list[Any]
    package: PackageInfo
    index: int = 0
    outputs: dict[str, Path] = field(default_factory=dict)       # case name -> written file
    segmentations: dict[Any, Any] = field(default_factory=dict)  # scene mode / loadResults: case -> segmentation
    failures: list[tuple[str, str]] = field(default_factory=list)  # (case name, one-line reason)
    cancelled: bool = False
    stopRequested: bool = False
    finished: bool = False
    currentJob: Optional[Job] = None

    def caseName(self, case: Any) -> str:
        return case.GetName() if hasattr(case, "GetName") else stem(Path(case))

    @property
    def notRun(self) -> list[str]:
        return [self.caseName(c) for c in self.cases[self.index:]] if self.finished else []

    def statusText(self) -> str:
        if self.finished:
            return self.summary().splitlines()[0]
        name = self.caseName(self.cases[self.index]) if self.index < len(self.cases) else ""
        inner = self.currentJob.progress.statusText() if self.currentJob is not None else ""
        return f"Case {self.index + 1} of {len(self.cases)}: {name}" + (f" - {inner}" if inner else "")

    def summary(self) -> str:
        lines = [f"{len(self.outputs)} of {len(self.cases)} case(s) segmented"
                 + (", cancelled" if self.cancelled else "") + (f", {len(self.failures)} failed" if self.failures else "")]
        lines += [f"failed: {name}: {reason}" for name, reason in self.failures]
        if self.notRun:
            lines.append(f"not run: {', '.join(self.notRun)}")
        return "\n".join(lines)


class FolderLogic:
    """Segment many volumes with one model; see the module docstring."""

    def __init__(self, command: Optional[MedSSLCommand] = None, runnerFactory: Optional[RunnerFactory] = None,
                 schedule: Optional[Schedule] = None) -> None:
        from .segment_logic import SegmentLogic

        self.segmenter = SegmentLogic(command, runnerFactory, schedule)
        self.jobs: JobRunner = self.segmenter.jobs
        self.run: Optional[FolderRun] = None

    listModels = staticmethod(listPackages)

    def startFolder(self, folder: Union[str, Path], model: ModelSpec, options: Optional[PredictOptions] = None,
                    outputDir: Optional[Union[str, Path]] = None, loadResults: bool = False,
                    onCase: Optional[Callable[[FolderRun], None]] = None,
                    onFinished: Optional[Callable[[FolderRun], None]] = None) -> FolderRun:
        """Start segmenting every volume file of ``folder``; returns the run (updated as cases finish)."""
        package = model if isinstance(model, PackageInfo) else readPackage(model)
        if len(package.channels) != 1:
            raise ValueError(f"folder mode segments single-channel volumes; {package.name} needs "
                             f"{len(package.channels)} channels")
        out = Path(outputDir) if outputDir is not None else None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        run = FolderRun(list(volumeFiles(folder)), package)

        def startCase(path: Path, done: Callable[[Job], None]) -> Job:
            target = (out or path.parent) / f"{stem(path)}_{safeName(package.path.name)}.seg.nrrd"
            args = predictArgs(package.path, [path], target, options or PredictOptions())

            def record(job: Job) -> None:
                run.outputs[stem(path)] = target
                if loadResults:
                    run.segmentations[path] = self._load(path, target, package)

            return self.jobs.run(args, onSuccess=record, onFinished=done)

        return self._begin(run, startCase, onCase, onFinished)

    def startScene(self, volumes: Sequence, model: ModelSpec, options: Optional[PredictOptions] = None,
                   onCase: Optional[Callable[[FolderRun], None]] = None,
                   onFinished: Optional[Callable[[FolderRun], None]] = None) -> FolderRun:
        """Start segmenting every volume node in ``volumes`` into new segmentation nodes beside them."""
        package = model if isinstance(model, PackageInfo) else readPackage(model)
        run = FolderRun([v for v in volumes if v is not None], package)

        def startCase(volume, done: Callable[[Job], None]) -> Job:
            def record(job: Job) -> None:
                if job.ok:
                    run.outputs[volume.GetName()] = Path(volume.GetName())
                    run.segmentations[volume] = job.outputs["segmentation"]
                done(job)

            return self.segmenter.start([volume], package, options, onFinished=record)

        return self._begin(run, startCase, onCase, onFinished)

    def _begin(self, run: FolderRun, startCase, onCase, onFinished) -> FolderRun:
        if self.jobs.busy:
            raise RuntimeError("MedSSL is already running a job; wait for it or cancel it first")
        if not run.cases:
            raise ValueError("there are no volumes to segment")
        self.run = run

        def next_() -> None:
            if run.cancelled or run.stopRequested or run.index >= len(run.cases):
                run.finished, run.currentJob = True, None
                if onFinished:
                    onFinished(run)
                return
            case = run.cases[run.index]
            try:
                run.currentJob = startCase(case, finished)
            except (ValueError, RuntimeError, OSError) as exc:  # e.g. an empty volume: listed, the rest goes on
                run.failures.append((run.caseName(case), str(exc)))
                run.index += 1
                next_()
                return
            if onCase:
                onCase(run)

        def finished(job: Job) -> None:
            case = run.cases[run.index]
            if job.cancelled:
                run.cancelled = True
            else:
                if not job.ok:
                    run.failures.append((run.caseName(case), job.error or "failed"))
                run.index += 1
            next_()

        next_()
        return run

    @staticmethod
    def _load(path: Path, result: Path, package: PackageInfo):
        from . import nodeio

        volume = loadVolumeFile(path)
        return nodeio.importSegmentation(result, package.labels, volume, name=f"{volume.GetName()} {package.name}")

    def wait(self, timeout: Optional[float] = None) -> FolderRun:
        """Block until the current run has finished (no ``schedule``: Python console, batch scripts)."""
        if self.run is None:
            raise RuntimeError("no folder run was started")
        while not self.run.finished:
            current = self.jobs.job  # the next case may already have started when wait() returns
            self.jobs.wait(timeout)
            if current is not None and not current.finished:
                raise TimeoutError(f"the folder run did not finish within {timeout} s; call cancel() to stop it")
        return self.run

    def segmentFolder(self, folder, model, options=None, outputDir=None, loadResults=False, onCase=None,
                      timeout: Optional[float] = None) -> FolderRun:
        """Blocking `startFolder`."""
        self.startFolder(folder, model, options, outputDir, loadResults, onCase)
        return self.wait(timeout)

    def segmentScene(self, volumes, model, options=None, onCase=None, timeout: Optional[float] = None) -> FolderRun:
        """Blocking `startScene`."""
        self.startScene(volumes, model, options, onCase)
        return self.wait(timeout)

    def stopAfterCurrent(self) -> None:
        """Cancel between cases: the current case finishes, the others are not started."""
        if self.run is not None:
            self.run.stopRequested = True

    def cancel(self) -> None:
        """Stop the current case (its result is not written) and the rest."""
        if self.run is not None and not self.run.finished:
            self.run.cancelled = True
            self.jobs.cancel()
