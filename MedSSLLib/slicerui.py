"""Qt/Slicer helpers shared by the MedSSLSegment and MedSSLTrain widgets (only imported inside Slicer).

Both module panels have the same "Setup" section (``installButton``, ``diagnosticsButton``,
``openFolderButton``, ``diagnosticsTextEdit``), a run button that turns into Cancel, a progress bar with
ETA and a log box; the code for those lives here once. The Qt-free behaviour they call is in the other
MedSSLLib modules.
"""

from __future__ import annotations

from typing import Callable, Optional

import qt
import slicer
from slicer.i18n import tr as _

from . import install, support
from .jobs import Job
from .packages import medsslHome

UNCERTAINTY_COLORS = "vtkMRMLColorTableNodeFileViridis.txt"


def qtSchedule(delayMs: int, callback: Callable[[], None]) -> None:
    """`MedSSLLib.jobs.Schedule` backed by the Qt event loop."""
    qt.QTimer.singleShot(delayMs, callback)


def ensureDependencies(requester: str, repair: bool = False) -> bool:
    """Install what is missing (``repair``: and reinstall medssl) after one confirmation; False if declined/failed."""
    if not support.checkSupported():  # an older Slicer: one line saying which Slicer MedSSL needs
        return False
    plan = install.planInstall(repair=repair)
    if plan.empty:
        return True
    if slicer.app.testingEnabled():  # never modify the Python environment from a self-test
        return False
    try:
        with slicer.util.tryWithErrorDisplay(_("Installing the MedSSL dependencies failed."), waitCursor=True):
            return install.installDependencies(plan, install.slicerInstallers(requester), requester)
    except Exception:  # already shown to the user by tryWithErrorDisplay
        return False


def setupSetupSection(ui, requester: str, runner, onFinished: Optional[Callable[[], None]] = None) -> None:
    """Connect the Setup section: install/repair, diagnostics through ``medssl info``, open the folder.

    ``runner`` is a `MedSSLLib.jobs.JobRunner` of the section's own (never the module logic's: Apply or Start
    during diagnostics must start their job, not cancel ``medssl info``); ``onFinished`` runs when ``info``
    ends, so that the panel updates its buttons."""
    ui.installButton.connect("clicked(bool)", lambda: _installAndRefresh(ui, requester, runner, onFinished))
    ui.diagnosticsButton.connect("clicked(bool)", lambda: refreshDiagnostics(ui, runner, onFinished))
    ui.openFolderButton.connect("clicked(bool)", openMedSSLFolder)
    ui.openFolderButton.toolTip = _("Models, downloaded weights and training runs are stored in {folder}. "
                                    "Delete sub-folders there to free disk space.").format(folder=medsslHome())
    ui.diagnosticsTextEdit.setPlainText(install.basicDiagnostics())


def _installAndRefresh(ui, requester: str, runner, onFinished: Optional[Callable[[], None]]) -> None:
    if ensureDependencies(requester, repair=True):
        refreshDiagnostics(ui, runner, onFinished)


def refreshDiagnostics(ui, runner, onFinished: Optional[Callable[[], None]] = None) -> None:
    """Run ``medssl info --json`` in the background and show versions, CUDA and GPU memory."""
    if not install.isSatisfied("medssl") or runner.busy:  # the core is there and its requirements are complete
        ui.diagnosticsTextEdit.setPlainText(install.basicDiagnostics())
        return
    ui.diagnosticsTextEdit.setPlainText(_("Asking medssl for versions and GPUs..."))

    def show(job: Job) -> None:
        info = install.parseInfo(job.log) if job.ok else None
        text = install.formatDiagnostics(info)
        ui.diagnosticsTextEdit.setPlainText(text if info or job.ok else f"{text}\nmedssl info failed: {job.error}")
        if onFinished is not None:
            onFinished()

    runner.run(["info", "--json"], onFinished=show)


def openMedSSLFolder() -> None:
    folder = medsslHome()
    folder.mkdir(parents=True, exist_ok=True)
    qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(folder)))


class RunButton:
    """A run button that doubles as Cancel while its job runs; afterwards its text and tooltip are those of
    the .ui file again (read once, when the panel is set up)."""

    def __init__(self, button) -> None:
        self.button, self.idleText, self.idleToolTip = button, button.text, button.toolTip

    def setRunning(self, running: bool) -> None:
        self.button.text = _("Cancel") if running else self.idleText
        self.button.toolTip = _("Stop the running job (the whole process tree is stopped)") if running \
            else self.idleToolTip


def showProgress(ui, job: Job) -> None:
    """Progress bar and status line (stage, step, loss, Dice, ETA)."""
    ui.progressBar.value = job.progress.percent
    ui.statusLabel.text = job.progress.statusText()


def appendLog(textEdit, text: str) -> None:
    textEdit.appendPlainText(text)
    textEdit.ensureCursorVisible()


def showFinished(ui, job: Job, what: str) -> None:
    """Final status; errors are shown once, with medssl's one-line message."""
    ui.statusLabel.text = job.statusText()
    if job.ok:
        ui.progressBar.value = 100
    elif not job.cancelled:
        slicer.util.errorDisplay(_("{what} failed: {error}").format(what=what, error=job.error),
                                 detailedText="\n".join(job.log[-40:]))


def openSegmentEditor(segmentationNode, sourceVolume) -> None:
    """Switch to Segment Editor with this segmentation and its source volume selected."""
    slicer.util.selectModule("SegmentEditor")
    editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
    editor.setSegmentationNode(segmentationNode)
    setSource = getattr(editor, "setSourceVolumeNode", None) or editor.setMasterVolumeNode
    setSource(sourceVolume)


def showResult(volume, segmentation=None, uncertainty=None) -> None:
    """Input as background, uncertainty (if any) as a semi-transparent foreground."""
    if uncertainty is not None:
        if slicer.mrmlScene.GetNodeByID(UNCERTAINTY_COLORS) and uncertainty.GetDisplayNode():
            uncertainty.GetDisplayNode().SetAndObserveColorNodeID(UNCERTAINTY_COLORS)
        slicer.util.setSliceViewerLayers(background=volume, foreground=uncertainty, foregroundOpacity=0.4)
    else:
        slicer.util.setSliceViewerLayers(background=volume)
    if segmentation is not None and segmentation.GetDisplayNode() is not None:
        segmentation.GetDisplayNode().SetVisibility(True)


def chooseFile(title: str, nameFilter: str) -> Optional[str]:
    path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), title, "", nameFilter)
    return path or None


def chooseSaveFile(title: str, nameFilter: str, suggested: str) -> Optional[str]:
    """Qt's save dialog (it asks before replacing an existing file)."""
    path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), title, suggested, nameFilter)
    return path or None
