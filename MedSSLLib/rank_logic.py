"""Logic of *Segment next* without Qt: rank unlabelled volumes by uncertainty, then segment the first.

Usage from Slicer's Python console::

    from MedSSLLib.rank_logic import RankLogic, unlabelledVolumes
    logic = RankLogic()
    model = logic.listModels()[0]
    job = logic.rank(unlabelledVolumes(slicer.mrmlScene), model)       # one `medssl rank`, model loaded once
    for entry in job.outputs["ranking"]:                                # most uncertain first
        print(entry.text())
    job = logic.segmentNext(unlabelledVolumes(slicer.mrmlScene), model)  # rank, then segment the first
    job.outputs["segmentation"], job.outputs["volume"]                   # correct it in Segment Editor
    logic.rankFolder("/data/unlabelled", model)                           # files of a folder instead

The score is medssl's (``medssl rank --help``, ``medssl.inference.ranking``): mean test-time-augmentation entropy inside
the predicted foreground and the fraction of uncertain voxels.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from .commands import MedSSLCommand, PredictOptions, rankArgs
from .jobs import Job, JobRunner, Schedule
from .packages import PackageInfo, listPackages, readPackage
from .process import RunnerFactory

ModelSpec = Union[PackageInfo, str, Path]


@dataclass
class RankedVolume:
    """One ranked case: its volume node (scene mode) or file name (folder mode) and medssl's scores."""

    name: str
    score: Optional[float]
    meanEntropy: Optional[float]
    uncertainFraction: Optional[float]
    images: list[str]
    node: Any = None
    error: Optional[str] = None

    def text(self) -> str:
        """One line for the ranking list."""
        if self.error:
            return f"{self.name}: not ranked ({self.error})"
        if self.meanEntropy is None:
            return f"{self.name}: score {self.score:.3f} (no structure found)"
        return (f"{self.name}: score {self.score:.3f} (mean entropy {self.meanEntropy:.3f}, "
                f"{100 * self.uncertainFraction:.1f} % uncertain)")


def _package(model: ModelSpec) -> PackageInfo:
    return model if isinstance(model, PackageInfo) else readPackage(model)


def unlabelledVolumes(scene, exclude: Sequence = ()) -> list:
    """Scalar volumes of ``scene`` that are not in ``exclude`` (e.g. the training set) and that no segmentation
    uses as its reference geometry (already segmented or being labelled)."""
    referenced = set()
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
        segmentation = scene.GetNthNodeByClass(index, "vtkMRMLSegmentationNode")
        reference = segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())
        if reference is not None:
            referenced.add(reference.GetID())
    excluded = {node.GetID() for node in exclude if node is not None}
    volumes = []
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        volume = scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        if volume.IsA("vtkMRMLLabelMapVolumeNode") or volume.GetID() in referenced | excluded:
            continue
        volumes.append(volume)
    return volumes


def parseRanking(result: Optional[dict], nodesByFile: Optional[dict] = None) -> list[RankedVolume]:
    """The ``ranking`` of medssl's final event -> RankedVolume list (nodes matched by their exported file)."""
    entries = (result or {}).get("ranking")
    if not isinstance(entries, list):
        raise RuntimeError("medssl rank reported no ranking; update the medssl core (Install / repair dependencies)")
    ranked = []
    for entry in entries:
        images = [str(i) for i in entry.get("images") or []]
        node = (nodesByFile or {}).get(images[0]) if images else None
        score = entry.get("score")
        ranked.append(RankedVolume(node.GetName() if node is not None else str(entry.get("name")),
                                   float(score) if isinstance(score, (int, float)) and math.isfinite(score) else None,
                                   entry.get("mean_entropy"), entry.get("uncertain_fraction"), images, node,
                                   entry.get("error")))
    return ranked


class RankLogic:
    """Rank volumes (scene or folder) by a model's uncertainty and segment the most uncertain one."""

    def __init__(self, command: Optional[MedSSLCommand] = None, runnerFactory: Optional[RunnerFactory] = None,
                 schedule: Optional[Schedule] = None) -> None:
        self.jobs = JobRunner(command, runnerFactory, schedule)
        self._command, self._runnerFactory, self._schedule = command, runnerFactory, schedule

    listModels = staticmethod(listPackages)

    def startRank(self, volumes: Sequence, model: ModelSpec, device: str = "auto", tta: bool = True,
                  onProgress: Optional[Callable[[Job], None]] = None, onLog: Optional[Callable[[str], None]] = None,
                  onFinished: Optional[Callable[[Job], None]] = None) -> Job:
        """Write the volumes (one channel each) and start ``medssl rank``; ``job.outputs["ranking"]`` when done."""
        from . import nodeio

        package = _package(model)
        if len(package.channels) != 1:
            raise ValueError(f"Segment next ranks single-channel volumes; {package.name} needs "
                             f"{len(package.channels)} channels ({', '.join(package.channels)})")
        if not volumes:
            raise ValueError("there is no unlabelled volume in the scene to rank; load some volumes first")
        tempDir = Path(tempfile.mkdtemp(prefix="MedSSL-rank-"))
        try:
            files = [nodeio.writeChannels([v], tempDir, f"case{n:03d}")[0] for n, v in enumerate(volumes)]
            args = rankArgs(package.path, [[f] for f in files], device, tta)
        except Exception:
            shutil.rmtree(tempDir, ignore_errors=True)
            raise
        nodesByFile = {str(f): v for f, v in zip(files, volumes)}

        def readRanking(job: Job) -> None:
            job.outputs["ranking"] = parseRanking(job.progress.result, nodesByFile)

        return self.jobs.run(args, onProgress, onLog, onFinished, onSuccess=readRanking, tempDir=tempDir)

    def startRankFolder(self, folder: Union[str, Path], model: ModelSpec, device: str = "auto", tta: bool = True,
                        **callbacks) -> Job:
        """``medssl rank`` over the image files of ``folder`` (entries carry file names, no nodes)."""
        if not Path(folder).is_dir():
            raise ValueError(f"{folder} is not a folder; choose the folder of unlabelled volumes")
        args = rankArgs(_package(model).path, [[folder]], device, tta)

        def readRanking(job: Job) -> None:
            job.outputs["ranking"] = parseRanking(job.progress.result)

        return self.jobs.run(args, onSuccess=readRanking, **callbacks)

    def rank(self, volumes: Sequence, model: ModelSpec, timeout: Optional[float] = None, **options) -> Job:
        """Blocking `startRank`; raises RuntimeError with medssl's message on failure."""
        self.startRank(volumes, model, **options)
        return self.jobs.waitOrRaise(timeout, "ranking")

    def rankFolder(self, folder: Union[str, Path], model: ModelSpec, timeout: Optional[float] = None,
                   **options) -> Job:
        self.startRankFolder(folder, model, **options)
        return self.jobs.waitOrRaise(timeout, "ranking")

    def segmentNext(self, volumes: Sequence, model: ModelSpec, options: Optional[PredictOptions] = None,
                    timeout: Optional[float] = None) -> Job:
        """Rank ``volumes``, then segment the most uncertain one (blocking). The returned segmentation job has
        ``outputs``: ``segmentation``, ``volume`` (the node segmented) and ``ranking``."""
        from .segment_logic import SegmentLogic

        ranked = [r for r in self.rank(volumes, model, timeout).outputs["ranking"] if r.node is not None and not r.error]
        if not ranked:
            raise RuntimeError("no volume could be ranked; see the ranking for the reasons")
        segmenter = SegmentLogic(self._command, self._runnerFactory, self._schedule)
        job = segmenter.segment([ranked[0].node], model, options, timeout=timeout)
        job.outputs.update(volume=ranked[0].node, ranking=self.jobs.job.outputs["ranking"])
        return job

    def cancel(self) -> None:
        self.jobs.cancel()
