"""Logic of MedSSLSegment without Qt: volume node(s) -> ``medssl predict`` -> segmentation node.

Usage from Slicer's Python console (``MedSSLSegment.MedSSLSegmentLogic`` holds this class as
``core`` and offers its methods)::

    from MedSSLLib.segment_logic import SegmentLogic
    from MedSSLLib.commands import PredictOptions
    logic = SegmentLogic()
    model = logic.listModels()[0]                        # packages in ~/.medssl/models
    for path in ["/data/ct1.nrrd", "/data/ct2.nrrd"]:    # batch segmentation
        volume = slicer.util.loadVolume(path)
        job = logic.segment([volume], model, PredictOptions(device="auto", tta=True, uncertainty=True))
        slicer.util.saveNode(job.outputs["segmentation"], path.replace(".nrrd", ".seg.nrrd"))

`segment` blocks until done and raises RuntimeError with medssl's one-line message on failure; `start`
returns at once and reports through callbacks (the module widget uses it with a QTimer).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from . import nodeio
from .commands import MedSSLCommand, PredictOptions, predictArgs
from .jobs import Job, JobRunner, Schedule
from .packages import PackageInfo, listPackages, readPackage
from .process import RunnerFactory

ModelSpec = Union[PackageInfo, str, Path]
MAX_CHANNELS = 4  # input-volume selectors in the MedSSLSegment panel (scripts and the CLI take any number)


def _package(model: ModelSpec) -> PackageInfo:
    return model if isinstance(model, PackageInfo) else readPackage(model)


def checkInputs(volumes: Sequence, package: PackageInfo) -> None:
    """One scalar volume per model channel, in the model's order."""
    present = [volume for volume in volumes if volume is not None]
    if len(present) != len(volumes) or not present:
        raise ValueError("select an input volume for every channel")
    if len(present) != len(package.channels):
        raise ValueError(f"the model {package.name} expects {len(package.channels)} input channel(s) "
                         f"({', '.join(package.channels)}) but {len(present)} volume(s) were selected")


def panelProblem(package: Optional[PackageInfo], volumes: Sequence) -> Optional[str]:
    """Why the MedSSLSegment panel cannot run ``package`` on ``volumes`` (its selectors), or None."""
    if package is None:
        return "Select a model (fine-tune one in the MedSSL Train module)."
    if len(package.channels) > MAX_CHANNELS:
        return (f"The model {package.name} needs {len(package.channels)} input volumes; this panel has "
                f"{MAX_CHANNELS}. Segment from the Python console (MedSSLSegment.MedSSLSegmentLogic().segment) "
                f"or with medssl predict.")
    if len(volumes) < len(package.channels) or not all(volumes):
        return "Select an input volume for every channel of the model."
    return None


class SegmentLogic:
    """Segment volumes with a fine-tuned model package; see the module docstring."""

    RESULT_FILE = "segmentation.seg.nrrd"
    UNCERTAINTY_FILE = "uncertainty.nrrd"

    def __init__(self, command: Optional[MedSSLCommand] = None, runnerFactory: Optional[RunnerFactory] = None,
                 schedule: Optional[Schedule] = None) -> None:
        self.jobs = JobRunner(command, runnerFactory, schedule)

    @staticmethod
    def listModels(folder: Optional[Union[str, Path]] = None) -> list[PackageInfo]:
        """Model packages registered on this computer (``<medssl home>/models``)."""
        return listPackages(folder)

    @property
    def busy(self) -> bool:
        return self.jobs.busy

    def start(self, inputVolumes: Sequence, model: ModelSpec, options: Optional[PredictOptions] = None,
              outputSegmentation=None, uncertaintyVolume=None,
              onProgress: Optional[Callable[[Job], None]] = None, onLog: Optional[Callable[[str], None]] = None,
              onFinished: Optional[Callable[[Job], None]] = None) -> Job:
        """Write the inputs, start ``medssl predict`` and return the job; results are read when it succeeds."""
        package, options = _package(model), options or PredictOptions()
        checkInputs(inputVolumes, package)
        tempDir = Path(tempfile.mkdtemp(prefix="MedSSL-predict-"))
        try:
            inputs = nodeio.writeChannels(list(inputVolumes), tempDir, "input")
            args = predictArgs(package.path, inputs, tempDir / self.RESULT_FILE, options,
                               tempDir / self.UNCERTAINTY_FILE)
        except Exception:
            shutil.rmtree(tempDir, ignore_errors=True)
            raise

        def readResults(job: Job) -> None:
            self._readResults(job, inputVolumes[0], package, options, outputSegmentation, uncertaintyVolume)

        return self.jobs.run(args, onProgress, onLog, onFinished, onSuccess=readResults, tempDir=tempDir)

    def _readResults(self, job: Job, reference, package: PackageInfo, options: PredictOptions,
                     outputSegmentation, uncertaintyVolume) -> None:
        """Read the result files into the scene (only called after medssl succeeded)."""
        name = f"{reference.GetName()} {package.name}"
        job.outputs["segmentation"] = nodeio.importSegmentation(
            job.tempDir / self.RESULT_FILE, package.labels, reference, outputSegmentation, name)
        if options.uncertainty and (job.tempDir / self.UNCERTAINTY_FILE).is_file():
            job.outputs["uncertainty"] = nodeio.importVolume(
                job.tempDir / self.UNCERTAINTY_FILE, reference, f"{name} uncertainty", uncertaintyVolume)

    def segment(self, inputVolumes: Sequence, model: ModelSpec, options: Optional[PredictOptions] = None,
                outputSegmentation=None, uncertaintyVolume=None, timeout: Optional[float] = None,
                onLog: Optional[Callable[[str], None]] = None) -> Job:
        """Blocking version of `start`; raises RuntimeError with medssl's message when it fails."""
        self.start(inputVolumes, model, options, outputSegmentation, uncertaintyVolume, onLog=onLog)
        job = self.jobs.wait(timeout)
        if job.cancelled:
            raise RuntimeError("segmentation was cancelled")
        if not job.ok:
            raise RuntimeError(f"segmentation failed: {job.error}")
        return job

    def cancel(self) -> None:
        """Stop the running segmentation; the scene is left unchanged."""
        self.jobs.cancel()
