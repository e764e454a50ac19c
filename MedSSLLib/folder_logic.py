"""Folder mode of MedSSL Segment without Qt: every volume of a folder (or of the scene), model loaded once.

Usage from Slicer's Python console::

    from MedSSLLib.folder_logic import FolderLogic
    logic = FolderLogic()
    model = logic.listModels()[0]
    run = logic.segmentFolder("/data/cases", model, onCase=lambda run: print(run.statusText()))
    print(run.summary())            # written files; failed cases with medssl's one-line reason
    run = logic.segmentScene(list(slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")), model)
    run.segmentations                # volume node -> new segmentation node

One ``medssl predict --input-dir DIR --output-dir OUT`` (``medssl.cli.predict_folder``) segments every case with
the model loaded (and compiled) once. Its per-case events (``progress`` of stage ``case``: ``started``, then
``written`` with the finished file or ``failed`` with the one-line reason) drive `FolderRun`: progress per case,
results loaded as each case is written, a failed case listed in `FolderRun.failures` while the others go on.
`stopAfterCurrent` (Cancel between cases) stops the process once the current case is written; `cancel` stops it
at once. Files already written are complete (medssl writes them atomically) and stay. Results go next to the
inputs (``<case>_<model>.seg.nrrd``) or into ``outputDir``; with ``loadResults`` they are also loaded.
Scene mode writes the volumes to a temporary folder and reads the results into new segmentation nodes.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from .commands import MedSSLCommand, PredictOptions, predictFolderArgs
from .events import ProgressState
from .jobs import Job, JobRunner, Schedule
from .packages import PackageInfo, listPackages, readPackage, safeName
from .process import RunnerFactory

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")  # medssl.io.volume_io's, .seg.nrrd apart
ModelSpec = Union[PackageInfo, str, Path]
RunCallback = Optional[Callable[["FolderRun"], None]]


def volumeFiles(folder: Union[str, Path]) -> list[Path]:
    """Image files directly in ``folder`` that medssl segments as cases (segmentations, ``*.seg.nrrd``, and hidden
    files left out, as ``medssl.cli.predict_folder.folder_cases`` does), sorted by file name."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{folder} is not a folder; choose the folder that holds the volumes")
    files = [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")
             and p.name.lower().endswith(IMAGE_SUFFIXES) and not p.name.lower().endswith(".seg.nrrd")]
    if not files:
        raise ValueError(f"{folder} holds no volumes ({', '.join(IMAGE_SUFFIXES)})")
    return sorted(files, key=lambda p: p.name)


def stem(path: Path) -> str:
    """The case name medssl gives a file (``case_01.nii.gz`` -> ``case_01``)."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def sceneVolumes(scene) -> list:
    """Every scalar volume of ``scene`` (label maps left out): what scene mode segments."""
    volumes = [scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
               for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
    return [v for v in volumes if not v.IsA("vtkMRMLLabelMapVolumeNode")]


def chosenFolder(path: Optional[Union[str, Path]]) -> Optional[Path]:
    """A folder chosen in a path field, or None when unset (``Path()``, i.e. ".", is what the parameter node holds
    before one is chosen: never Slicer's working directory)."""
    if path is None or str(path).strip() in ("", "."):
        return None
    if not Path(path).is_absolute():
        raise ValueError(f"{path} is not a full folder path; choose the folder with the ... button")
    return Path(path)


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
    """State of one folder/scene run. ``cases`` are medssl's case names; ``sources`` maps each to its input file
    (folder mode) or volume node (scene mode)."""

    cases: list[str]
    sources: dict[str, Any]
    package: PackageInfo
    current: str = ""                                            # the case being segmented
    written: list[str] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)       # folder mode: case name -> written file
    segmentations: dict[Any, Any] = field(default_factory=dict)  # source (node or input file) -> segmentation
    failures: list[tuple[str, str]] = field(default_factory=list)  # (case name, one-line reason)
    done: list[str] = field(default_factory=list)                 # cases written or failed
    caseProgress: ProgressState = field(default_factory=ProgressState)  # within the current case
    cancelled: bool = False
    stopRequested: bool = False
    finished: bool = False
    error: Optional[str] = None  # the run itself failed (e.g. the model cannot be loaded)
    job: Optional[Job] = None

    def caseName(self, case: str) -> str:
        """What the user calls a case: the volume node's name (scene mode) or medssl's case name."""
        source = self.sources.get(case)
        return source.GetName() if hasattr(source, "GetName") else case

    @property
    def index(self) -> int:
        """Cases finished (written or failed)."""
        return len(self.done)

    @property
    def notRun(self) -> list[str]:
        return [self.caseName(c) for c in self.cases if c not in self.done] if self.finished else []

    def fail(self, case: str, reason: str) -> None:
        self.failures.append((self.caseName(case), reason))
        self.done.append(case)

    @property
    def percent(self) -> int:
        """Whole run in percent: finished cases plus the share of the current one."""
        within = self.caseProgress.fraction if self.current else 0.0
        return int(round(100 * min(1.0, (self.index + within) / max(1, len(self.cases)))))

    def statusText(self) -> str:
        if self.finished:
            return self.summary().splitlines()[0]
        if not self.current:
            return f"Loading the model for {len(self.cases)} case(s)"
        inner = self.caseProgress.statusText()
        return f"Case {self.index + 1} of {len(self.cases)}: {self.caseName(self.current)}" + (
            f" - {inner}" if inner else "")

    def summary(self) -> str:
        first = f"{len(self.written)} of {len(self.cases)} case(s) segmented"
        first += ", cancelled" if self.cancelled else (", stopped" if self.stopRequested and self.notRun else "")
        lines = [first + (f", {len(self.failures)} failed" if self.failures else "")]
        lines += [f"failed: {name}: {reason}" for name, reason in self.failures]
        if self.error:
            lines.append(f"error: {self.error}")
        if self.notRun:
            lines.append(f"not run: {', '.join(self.notRun)}")
        return "\n".join(lines)


class FolderLogic:
    """Segment many volumes with one model in one medssl process; see the module docstring."""

    def __init__(self, command: Optional[MedSSLCommand] = None, runnerFactory: Optional[RunnerFactory] = None,
                 schedule: Optional[Schedule] = None) -> None:
        self.jobs = JobRunner(command, runnerFactory, schedule)
        self.run: Optional[FolderRun] = None

    listModels = staticmethod(listPackages)

    @property
    def busy(self) -> bool:
        return self.run is not None and not self.run.finished

    def startFolder(self, folder: Union[str, Path], model: ModelSpec, options: Optional[PredictOptions] = None,
                    outputDir: Optional[Union[str, Path]] = None, loadResults: bool = False, onCase: RunCallback = None,
                    onFinished: RunCallback = None, onProgress: RunCallback = None,
                    onLog: Optional[Callable[[str], None]] = None) -> FolderRun:
        """Start segmenting every volume file of ``folder``; returns the run (updated as cases finish)."""
        package = self._singleChannel(model)
        files = volumeFiles(folder)
        sources = {stem(f): f for f in files}  # a.nii.gz beside a.nrrd: one case, the later file (as medssl)
        run = FolderRun(sorted(sources), sources, package)
        out, suffix = self._outputsOf(folder, package, outputDir)

        def written(case: str, output: Path) -> None:
            run.outputs[case] = output
            if loadResults:
                run.segmentations[run.sources[case]] = self._loadFile(run.sources[case], output, package)

        args = predictFolderArgs(package.path, folder, out, options or PredictOptions(), suffix)
        return self._start(run, args, written, None, onCase, onProgress, onLog, onFinished)

    @staticmethod
    def _outputsOf(folder, package: PackageInfo, outputDir) -> tuple[Path, str]:
        """(output folder, file ending) of folder mode: ``<case>_<model>.seg.nrrd`` beside the inputs or in
        ``outputDir``."""
        return (Path(outputDir) if outputDir is not None else Path(folder)), f"_{safeName(package.path.name)}.seg.nrrd"

    def existingOutputs(self, folder: Union[str, Path], model: ModelSpec,
                        outputDir: Optional[Union[str, Path]] = None) -> list[Path]:
        """The files `startFolder` would write that exist already (an earlier run's): medssl refuses to replace
        them unless the options say ``overwrite`` (the widget asks first)."""
        if folder is None or not Path(folder).is_dir():
            return []  # startFolder says what is wrong with it
        package = self._singleChannel(model)
        out, suffix = self._outputsOf(folder, package, outputDir)
        return [out / f"{case}{suffix}" for case in sorted({stem(f) for f in volumeFiles(folder)})
                if (out / f"{case}{suffix}").exists()]

    def startScene(self, volumes: Sequence, model: ModelSpec, options: Optional[PredictOptions] = None,
                   onCase: RunCallback = None, onFinished: RunCallback = None, onProgress: RunCallback = None,
                   onLog: Optional[Callable[[str], None]] = None) -> FolderRun:
        """Start segmenting every volume node in ``volumes`` into new segmentation nodes beside them."""
        from . import nodeio

        package = self._singleChannel(model)
        volumes = [v for v in volumes if v is not None]
        cases = [f"case{n:03d}" for n in range(len(volumes))]
        run = FolderRun(cases, dict(zip(cases, volumes)), package)
        if not volumes:
            raise ValueError("there are no volumes to segment")
        tempDir = Path(tempfile.mkdtemp(prefix="MedSSL-folder-"))
        (tempDir / "in").mkdir()
        try:
            for case, volume in zip(cases, volumes):
                try:
                    nodeio.writeVolume(volume, tempDir / "in" / f"{case}.nrrd")
                except (ValueError, RuntimeError, OSError) as exc:  # e.g. an empty volume: listed, the rest goes on
                    run.fail(case, str(exc))
            args = predictFolderArgs(package.path, tempDir / "in", tempDir / "out", options or PredictOptions())
        except Exception:
            shutil.rmtree(tempDir, ignore_errors=True)
            raise

        def written(case: str, output: Path) -> None:
            volume = run.sources[case]
            run.segmentations[volume] = nodeio.importSegmentation(output, package.labels, volume,
                                                                  name=f"{volume.GetName()} {package.name}")

        if len(run.failures) == len(cases):  # nothing left for medssl
            shutil.rmtree(tempDir, ignore_errors=True)
            self.run, run.finished = run, True
            if onFinished:
                onFinished(run)
            return run
        return self._start(run, args, written, tempDir, onCase, onProgress, onLog, onFinished)

    @staticmethod
    def _singleChannel(model: ModelSpec) -> PackageInfo:
        package = model if isinstance(model, PackageInfo) else readPackage(model)
        if len(package.channels) != 1:
            raise ValueError(f"folder mode segments single-channel volumes; {package.name} needs "
                             f"{len(package.channels)} channels (use medssl predict --input-dir with "
                             f"case_0000.nii.gz, case_0001.nii.gz ... files)")
        return package

    def _start(self, run: FolderRun, args: list[str], written: Callable[[str, Path], None], tempDir,
               onCase: RunCallback, onProgress: RunCallback, onLog, onFinished: RunCallback) -> FolderRun:
        if self.busy or self.jobs.busy:
            raise RuntimeError("MedSSL is already running a job; wait for it or cancel it first")

        def onEvent(event: dict) -> None:
            if run.cancelled:  # e.g. the scene is closing: nothing more is read into it
                return
            if event.get("event") == "progress" and event.get("stage") == "case":
                self._caseEvent(run, event, written, onCase)
            elif run.current:
                run.caseProgress.update(event)
            if onProgress:
                onProgress(run)

        def finished(job: Job) -> None:
            if job.cancelled and not run.stopRequested:
                run.cancelled = True
            elif not job.ok and run.index < len(run.cases):  # not just the exit code 2 of failed cases
                run.error = job.error
            run.current, run.finished = "", True
            if onFinished:
                onFinished(run)

        self.run = run
        try:
            run.job = self.jobs.run(args, onLog=onLog, onFinished=finished, tempDir=tempDir, onEvent=onEvent)
        except Exception:
            self.run = None
            raise
        return run

    def _caseEvent(self, run: FolderRun, event: dict, written: Callable[[str, Path], None], onCase: RunCallback):
        """One per-case event of ``medssl predict --input-dir`` (see ``medssl.cli.predict_folder``)."""
        case, status = str(event.get("case", "")), event.get("status")
        if case not in run.sources:
            run.cases.append(case)
            run.sources[case] = case
        if run.stopRequested and status == "started":  # Cancel between cases: the next case is not segmented
            self.jobs.cancel()
            return
        if status == "started":
            run.current, run.caseProgress = case, ProgressState(task="predict")
            if onCase:
                onCase(run)
            return
        if status == "written":
            try:
                written(case, Path(str(event.get("output"))))
            except (ValueError, RuntimeError, OSError) as exc:
                run.fail(case, f"written to {event.get('output')} but not loaded: {exc}")
            else:
                run.written.append(case)
                run.done.append(case)
        elif status == "failed":
            run.fail(case, str(event.get("error") or "failed"))
        run.current = ""

    @staticmethod
    def _loadFile(path: Path, result: Path, package: PackageInfo):
        from . import nodeio

        volume = loadVolumeFile(path)
        return nodeio.importSegmentation(result, package.labels, volume, name=f"{volume.GetName()} {package.name}")

    def wait(self, timeout: Optional[float] = None) -> FolderRun:
        """Block until the current run has finished (no ``schedule``: Python console, batch scripts)."""
        if self.run is None:
            raise RuntimeError("no folder run was started")
        if not self.run.finished:
            self.jobs.wait(timeout)
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
        """Cancel between cases: the current case is finished and written, the others are not started."""
        if self.busy:
            self.run.stopRequested = True
            if not self.run.current:  # the model is still loading: nothing to finish
                self.jobs.cancel()

    def cancel(self) -> None:
        """Stop now: the current case is not written; the cases written so far stay."""
        if self.busy:
            self.run.cancelled = True
            self.jobs.cancel()
