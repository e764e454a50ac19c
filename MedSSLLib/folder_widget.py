"""The "Folder mode" section of the MedSSLSegment panel (Qt side of `MedSSLLib.folder_logic`).

Every volume file of a folder, or every volume of the scene, is segmented by one ``medssl predict --input-dir``
run (model loaded once). The panel's progress bar and status line follow the cases; *Segment all* turns into
Cancel: a first press stops after the current case (Cancel between cases), a second press stops at once. The
results text lists the cases written, those that failed with medssl's one-line reason, and those not run.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import slicer
from slicer.i18n import tr as _

from . import slicerui
from .commands import PredictOptions
from .folder_logic import FolderLogic, FolderRun, chosenFolder, sceneVolumes
from .packages import PackageInfo


class FolderPanel:
    """Folder mode of MedSSLSegment: ``parameterNode()``, ``selectedPackage()`` and ``options()`` are the panel's;
    ``onChanged()`` runs when a run starts or ends (the panel updates its buttons)."""

    def __init__(self, ui, parameterNode: Callable, selectedPackage: Callable[[], Optional[PackageInfo]],
                 options: Callable[[], PredictOptions], onChanged: Callable[[], None]) -> None:
        self.ui, self.parameterNode, self.selectedPackage = ui, parameterNode, selectedPackage
        self.options, self.onChanged = options, onChanged
        self.logic = FolderLogic(schedule=slicerui.qtSchedule)
        self.button = slicerui.RunButton(ui.folderApplyButton)
        ui.folderApplyButton.connect("clicked(bool)", self.onApply)

    @property
    def busy(self) -> bool:
        return self.logic.busy

    def problem(self) -> Optional[str]:
        """Why *Segment all* cannot start, or None."""
        p, package = self.parameterNode(), self.selectedPackage()
        if package is None:
            return _("Select a model (fine-tune one in the MedSSL Train module).")
        if len(package.channels) != 1:
            return _("Folder mode segments single-channel volumes; {name} needs {count} channels.").format(
                name=package.name, count=len(package.channels))
        if p is not None and not p.batchScene and chosenFolder(p.batchInputFolder) is None:
            return _("Choose the input folder, or tick \"Every volume in the scene\".")
        return None

    def updateButtons(self, otherBusy: bool) -> None:
        """``otherBusy``: the panel's single-volume segmentation runs (the two never run together)."""
        p = self.parameterNode()
        try:
            problem = self.problem()
        except ValueError as exc:  # a relative path typed into a folder field
            problem = str(exc)
        self.ui.folderApplyButton.enabled = self.busy or (problem is None and not otherBusy)
        if not self.busy:
            self.ui.folderApplyButton.toolTip = problem or self.button.idleToolTip
        ui, fromFolder = self.ui, not (p and p.batchScene)
        for widget in (ui.folderInputLabel, ui.folderInputPathLineEdit, ui.folderOutputLabel,
                       ui.folderOutputPathLineEdit, ui.folderLoadCheckBox):
            widget.enabled = fromFolder

    def cancel(self) -> None:
        self.logic.cancel()

    def onApply(self) -> None:
        if self.busy:
            if self.logic.run.stopRequested:
                self.logic.cancel()  # second press: stop now
            else:
                self.logic.stopAfterCurrent()
                self.ui.statusLabel.text = _("Stopping after the current case; press Cancel again to stop now.")
            return
        if not slicerui.ensureDependencies("MedSSLSegment"):
            return
        p, package = self.parameterNode(), self.selectedPackage()
        options = dataclasses.replace(self.options(), uncertainty=False)  # uncertainty maps are per volume
        callbacks = dict(onCase=self.onProgress, onProgress=self.onProgress, onFinished=self.onFinished,
                         onLog=lambda text: slicerui.appendLog(self.ui.logTextEdit, text))
        with slicer.util.tryWithErrorDisplay(_("Folder mode could not start."), waitCursor=True):
            self.ui.logTextEdit.clear()
            self.ui.folderResultsTextEdit.setPlainText("")
            if p.batchScene:
                run = self.logic.startScene(sceneVolumes(slicer.mrmlScene), package, options, **callbacks)
            else:
                existing = self.logic.existingOutputs(chosenFolder(p.batchInputFolder), package,
                                                      chosenFolder(p.batchOutputFolder))
                if existing and not slicer.util.confirmOkCancelDisplay(
                        _("{count} segmentation(s) from an earlier run are in {folder} ({first}). Replace them?").format(
                            count=len(existing), folder=existing[0].parent, first=existing[0].name)):
                    return
                options = dataclasses.replace(options, overwrite=bool(existing))
                run = self.logic.startFolder(chosenFolder(p.batchInputFolder), package, options,
                                             chosenFolder(p.batchOutputFolder), p.batchLoadResults, **callbacks)
            if not run.finished:  # scene mode with nothing writable ends at once
                self.button.setRunning(True)
                self.onProgress(run)
        self.onChanged()

    def onProgress(self, run: FolderRun) -> None:
        self.ui.progressBar.value = run.percent
        self.ui.statusLabel.text = run.statusText()

    def onFinished(self, run: FolderRun) -> None:
        self.button.setRunning(False)
        self.ui.statusLabel.text = run.statusText()
        self.ui.progressBar.value = run.percent
        written = [f"written: {run.caseName(case)}" + (f" -> {run.outputs[case]}" if case in run.outputs else "")
                   for case in run.written]
        self.ui.folderResultsTextEdit.setPlainText("\n".join([*run.summary().splitlines(), *written]))
        if run.error:
            slicer.util.errorDisplay(_("Folder mode failed: {error}").format(error=run.error))
        segmentations = list(run.segmentations.items())
        if segmentations:
            source, segmentation = segmentations[0]
            volume = segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())
            slicerui.showResult(volume, segmentation)
        self.onChanged()
