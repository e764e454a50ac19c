"""The *Segment next* button of the MedSSLTrain panel (Qt side of `MedSSLLib.rank_logic`).

Active learning step of the bootstrap loop: the unlabelled volumes of the scene (not in the training set, not
the reference of any segmentation) are ranked by the last model's uncertainty with one ``medssl rank`` run
(model loaded once; score: mean test-time-augmentation entropy inside the predicted structures, as
``medssl.inference.ranking`` computes it); the ranking is listed in ``rankingTableWidget``, the most uncertain
volume becomes the candidate volume, is segmented by ``medssl predict`` and opens in Segment Editor.
"""

from __future__ import annotations

from typing import Callable, Optional

import qt
import slicer
from slicer.i18n import tr as _

from . import slicerui
from .commands import PredictOptions
from .jobs import Job
from .rank_logic import RankedVolume, RankLogic, unlabelledVolumes
from .segment_logic import SegmentLogic


def rankingCells(entry: RankedVolume) -> list[str]:
    """Volume, score, mean entropy, uncertain share: one row of the ranking table."""
    if entry.error:
        return [entry.name, _("not ranked"), entry.error, ""]

    def number(value: Optional[float], text: str) -> str:
        return text.format(value) if isinstance(value, (int, float)) else "-"

    uncertain = entry.uncertainFraction * 100 if isinstance(entry.uncertainFraction, (int, float)) else None
    return [entry.name, number(entry.score, "{:.3f}"), number(entry.meanEntropy, "{:.3f}"),
            number(uncertain, "{:.1f} %")]


class SegmentNext:
    """Rank, then segment the first; ``parameterNode()`` is the MedSSLTrain parameter node, ``onProgress(job)``
    and ``onLog(text)`` the panel's progress display."""

    def __init__(self, ui, parameterNode: Callable, onProgress: Callable[[Job], None],
                 onLog: Callable[[str], None], onChanged: Callable[[], None]) -> None:
        self.ui, self.parameterNode = ui, parameterNode
        self.onProgress, self.onLog, self.onChanged = onProgress, onLog, onChanged
        self.rankLogic = RankLogic(schedule=slicerui.qtSchedule)
        self.segmentLogic = SegmentLogic(schedule=slicerui.qtSchedule)
        self.button = slicerui.RunButton(ui.segmentNextButton)
        self.ranking: list[RankedVolume] = []
        ui.segmentNextButton.connect("clicked(bool)", self.onClick)

    @property
    def busy(self) -> bool:
        return self.rankLogic.jobs.busy or self.segmentLogic.busy

    def cancel(self) -> None:
        self.rankLogic.cancel()
        self.segmentLogic.cancel()

    def onClick(self) -> None:
        if self.busy:
            self.cancel()
            return
        if not slicerui.ensureDependencies("MedSSLTrain"):
            return
        p = self.parameterNode()
        with slicer.util.tryWithErrorDisplay(_("Segment next could not start."), waitCursor=True):
            volumes = unlabelledVolumes(slicer.mrmlScene, exclude=list(p.caseVolumes))
            self.rankLogic.startRank(volumes, p.lastPackage, p.device, onProgress=self.onProgress, onLog=self.onLog,
                                     onFinished=self._ranked)
            self.button.setRunning(True)
            self.ui.statusLabel.text = _("Ranking {count} unlabelled volume(s)...").format(count=len(volumes))
        self.onChanged()

    def _stop(self, message: Optional[str] = None) -> None:
        self.button.setRunning(False)
        if message:
            slicer.util.errorDisplay(message)
        self.onChanged()

    def _ranked(self, job: Job) -> None:
        if not job.ok:
            slicerui.showFinished(self.ui, job, _("Ranking"))
            self._stop()
            return
        self.ranking = job.outputs["ranking"]
        self.showRanking()
        first = next((entry for entry in self.ranking if entry.node is not None and not entry.error), None)
        if first is None:
            self._stop(_("No volume could be ranked; the ranking table says why."))
            return
        p = self.parameterNode()
        p.candidateVolume0 = first.node
        try:
            self.segmentLogic.start([first.node], p.lastPackage, PredictOptions(device=p.device),
                                    onProgress=self.onProgress, onLog=self.onLog,
                                    onFinished=lambda segJob: self._segmented(segJob, first))
        except (ValueError, RuntimeError, OSError) as exc:
            self._stop(_("Segment next could not segment {name}: {error}").format(name=first.name, error=exc))

    def _segmented(self, job: Job, entry: RankedVolume) -> None:
        slicerui.showFinished(self.ui, job, _("Segmentation"))
        p = self.parameterNode()
        if job.ok and p is not None:
            p.candidateSegmentation = job.outputs["segmentation"]
            self.ui.statusLabel.text = _("Segmented {name}, the most uncertain volume (score {score}): correct it, "
                                         "then Add to training set.").format(name=entry.name,
                                                                             score=rankingCells(entry)[1])
            slicerui.openSegmentEditor(job.outputs["segmentation"], entry.node)
        self._stop()

    def showRanking(self) -> None:
        table = self.ui.rankingTableWidget
        table.setRowCount(len(self.ranking))
        for row, entry in enumerate(self.ranking):
            for column, text in enumerate(rankingCells(entry)):
                table.setItem(row, column, qt.QTableWidgetItem(text))
