"""The MedSSLTrain panel (Qt): training set, backbone and weights, Start/Cancel/Resume, live curves, bootstrap.

The module file (``MedSSLTrain/MedSSLTrain.py``) only builds the .ui and hands it here, as SlicerNNUNet's
module files hand theirs to ``SlicerNNUNetLib`` widgets. The work is done by the Qt-free
`MedSSLLib.train_logic.TrainLogic` held by the module logic (training, downloads); "Segment next" is
`MedSSLLib.rank_widget.SegmentNext` and Export/Import of the last model `MedSSLLib.share_widget.ModelSharing`;
this class only turns their callbacks into widget updates. The parameter node is bound through `MedSSLLib.parameter_binding.ParameterBinding`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import qt
import slicer
from slicer.i18n import tr as _

from . import slicerui
from .catalog import backboneChoices
from .commands import FinetuneOptions
from .curves import TrainingCurves
from .events import ProgressState
from .jobs import JobRunner
from .packages import PackageError, PackageInfo, listPackages, readPackage
from .parameter_binding import ParameterBinding
from .rank_widget import SegmentNext
from .segment_logic import MAX_CHANNELS
from .share_widget import ModelSharing
from .train_logic import casesFromFlat, removeCase, tableRows, trainingFolderOrNone


class TrainPanel:
    """Behaviour of the MedSSLTrain panel; ``logic`` is the module logic (parameter node + TrainLogic)."""

    def __init__(self, ui, logic, isEntered) -> None:
        self.ui, self.logic = ui, logic
        self.diagnostics = JobRunner(schedule=slicerui.qtSchedule)  # `medssl info`, apart from the logic's jobs
        self.runButtons = {name: slicerui.RunButton(button) for name, button in (
            ("startButton", ui.startButton), ("downloadButton", ui.downloadButton),
            ("importWeightsButton", ui.importWeightsButton))}
        self._backbones = []  # MedSSLLib.catalog.BackboneChoice
        self._curves = None
        self._activeButton = None  # the button that cancels the running job
        self.segmentNext = SegmentNext(ui, lambda: self.parameterNode, self.onProgress,
                                       lambda text: slicerui.appendLog(self.ui.logTextEdit, text), self.updateGui)
        self.sharing = ModelSharing(ui, "MedSSLTrain", self.lastPackage, self._imported)
        self.binding = ParameterBinding(ui, logic.getParameterNode, self.updateGui, isEntered,
                                        onSceneClose=self._sceneClosing)
        for name, slot in (("addCaseButton", self.onAddCase), ("removeCaseButton", self.onRemoveCase),
                           ("downloadButton", self.onDownload), ("importWeightsButton", self.onImportWeights),
                           ("startButton", self.onStart), ("resumeButton", self.onResume),
                           ("addToTrainingSetButton", self.onAddCase),
                           ("continueTrainingButton", self.onContinue)):
            getattr(ui, name).connect("clicked(bool)", slot)
        ui.backboneComboBox.connect("currentIndexChanged(int)", self.onBackboneSelected)
        slicerui.setupSetupSection(ui, "MedSSLTrain", self.diagnostics, onFinished=self.updateGui)
        self.enter()

    @property
    def parameterNode(self):
        return self.binding.node

    def enter(self) -> None:
        self.binding.enter()
        self.refreshBackbones()

    def exit(self) -> None:
        self.binding.unbind()

    def cancel(self) -> None:
        for runner in (self.logic, self.segmentNext, self.sharing, self.diagnostics):
            runner.cancel()

    def _sceneClosing(self) -> None:
        self.cancel()  # results must not land in the next scene
        self._curves = None

    def cleanup(self) -> None:
        self.binding.cleanup()
        self.cancel()

    # ------------------------------------------------------------------ training set
    def _cases(self) -> list:
        p = self.parameterNode
        return casesFromFlat(list(p.caseVolumes), list(p.caseSegmentations), p.channelCount)

    def _candidateVolumes(self) -> list:
        return [getattr(self.parameterNode, f"candidateVolume{c}") for c in range(self.parameterNode.channelCount)]

    def onAddCase(self) -> None:
        """Add the selected volume(s) + segmentation as one training case ("Add pair" / "Add to training set")."""
        p, volumes = self.parameterNode, self._candidateVolumes()
        if not all(volumes) or not p.candidateSegmentation:
            slicer.util.errorDisplay(_("Select a volume for every channel and its segmentation first."))
            return
        if p.candidateSegmentation in p.caseSegmentations:
            slicer.util.errorDisplay(_("This segmentation is already in the training set."))
            return
        p.caseVolumes = list(p.caseVolumes) + volumes
        p.caseSegmentations = list(p.caseSegmentations) + [p.candidateSegmentation]

    def onRemoveCase(self) -> None:
        p = self.parameterNode
        volumes, segmentations = removeCase(p.caseVolumes, p.caseSegmentations, p.channelCount,
                                            self.ui.casesTableWidget.currentRow())
        p.caseVolumes, p.caseSegmentations = volumes, segmentations

    def _updateCasesTable(self) -> None:
        """Every case, deleted nodes marked, so that row i is the case "Remove selected" removes."""
        p = self.parameterNode
        rows = tableRows(p.caseVolumes, p.caseSegmentations, p.channelCount)
        table = self.ui.casesTableWidget
        table.setRowCount(len(rows))
        for row, cells in enumerate(rows):
            for column, text in enumerate(cells):
                table.setItem(row, column, qt.QTableWidgetItem(text))

    # ------------------------------------------------------------------ backbones
    def refreshBackbones(self) -> None:
        """Catalog backbones, random-init architectures and local packages (to continue from)."""
        try:
            self._backbones = backboneChoices(listPackages())
        except ValueError as exc:
            slicerui.appendLog(self.ui.logTextEdit, _("The weight catalog cannot be read: {error}").format(error=exc))
            self._backbones = backboneChoices(listPackages(), entries=[])
        combo, wasBlocked = self.ui.backboneComboBox, self.ui.backboneComboBox.blockSignals(True)
        combo.clear()
        for choice in self._backbones:
            combo.addItem(choice.title)
        values = [choice.value for choice in self._backbones]
        current = self.parameterNode.backbone if self.parameterNode else ""
        combo.currentIndex = values.index(current) if current in values else values.index("resenc:tiny")
        combo.blockSignals(wasBlocked)
        self.onBackboneSelected(combo.currentIndex)

    def onBackboneSelected(self, index: int) -> None:
        if not 0 <= index < len(self._backbones):
            return
        choice = self._backbones[index]
        entry = choice.entry
        if self.parameterNode:
            self.parameterNode.backbone = choice.value
        self.ui.backboneInfoLabel.text = choice.description
        self.ui.acceptLicenceCheckBox.visible = bool(entry and entry.licenceRequiresAcceptance)
        self.updateGui()

    def _selectedEntry(self):
        index = self.ui.backboneComboBox.currentIndex
        return self._backbones[index].entry if 0 <= index < len(self._backbones) else None

    def onDownload(self) -> None:
        entry = self._selectedEntry()
        if self.logic.busy:
            self.logic.cancel()
            return
        if entry.licenceRequiresAcceptance and not self.parameterNode.acceptLicence:
            slicer.util.errorDisplay(_("Read and accept the licence ({url}) first.").format(url=entry.licenceUrl))
            return
        if slicerui.ensureDependencies("MedSSLTrain"):
            self._run(lambda **cb: self.logic.downloadWeights(entry.id, self.parameterNode.acceptLicence, **cb),
                      _("Download"), self.runButtons["downloadButton"])

    def onImportWeights(self) -> None:
        entry = self._selectedEntry()
        if self.logic.busy:
            self.logic.cancel()
            return
        path = slicerui.chooseFile(_("Weights file for {id}").format(id=entry.id),
                                   "Weights (*.pth *.pt *.safetensors *.ckpt *.zip)")
        accept = self.parameterNode.acceptLicence
        if path and slicerui.ensureDependencies("MedSSLTrain"):
            self._run(lambda **cb: self.logic.importWeights(path, entry.id, accept, **cb), _("Import"),
                      self.runButtons["importWeightsButton"])

    # ------------------------------------------------------------------ training
    def _options(self) -> FinetuneOptions:
        p = self.parameterNode
        return FinetuneOptions(p.backbone, p.preset, p.steps or None, p.device,
                               sparseSlices="auto" if p.sparseSlices else None)

    def _folder(self) -> Optional[Path]:
        p = self.parameterNode
        return trainingFolderOrNone(p.useTrainingFolder, p.trainingFolder)

    def _train(self, starter: Callable) -> None:
        """Start (or, while training, cancel) a training job; the Start button is its Cancel button."""
        if self.logic.busy or slicerui.ensureDependencies("MedSSLTrain"):
            self._run(starter, _("Training"), self.runButtons["startButton"], training=True)

    def onStart(self) -> None:
        p = self.parameterNode
        self._train(lambda **cb: self.logic.start(p.modelName, self._cases(), self._options(), self._folder(), **cb))

    def onResume(self) -> None:
        self._train(lambda **cb: self.logic.resume(self.parameterNode.modelName, **cb))

    def onContinue(self) -> None:
        p = self.parameterNode
        name = self.logic.nextModelName(Path(p.lastPackage).name)
        self._train(lambda **cb: self.logic.continueTraining(p.lastPackage, self._cases(), self._options(),
                                                             self._folder(), name, **cb))
        p.modelName = name

    def _run(self, starter: Callable, what: str, button: slicerui.RunButton, training: bool = False) -> None:
        """Start a job (or cancel it when ``button`` is its Cancel button) and wire progress to the panel."""
        if self.logic.busy:
            self.logic.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("{what} could not start.").format(what=what), waitCursor=True):
            self.ui.logTextEdit.clear()
            if training:
                self._resetCurves()
            starter(onProgress=self.onProgress, onLog=lambda text: slicerui.appendLog(self.ui.logTextEdit, text),
                    onFinished=lambda job: self.onFinished(job, what, button))
            button.setRunning(True)
            self._activeButton = button.button
        self.updateGui()

    def _resetCurves(self) -> None:
        if self._curves is None:
            self._curves = TrainingCurves(slicer.mrmlScene)
            self.ui.plotWidget.setMRMLPlotViewNode(self._curves.createViewNode())
        self._curves.update(ProgressState())

    def onProgress(self, job) -> None:
        slicerui.showProgress(self.ui, job)
        if self._curves is not None and job.progress.task in ("finetune", "pretrain"):
            self._curves.update(job.progress)

    def onFinished(self, job, what: str, button: slicerui.RunButton) -> None:
        button.setRunning(False)
        self._activeButton = None
        slicerui.showFinished(self.ui, job, what)
        if job.ok and "package" in job.outputs and self.parameterNode:
            self.parameterNode.lastPackage = str(job.outputs["package"].path)
            self.ui.statusLabel.text = _("Model {name} is ready and selectable in MedSSL Segment.").format(
                name=job.outputs["package"].path.name)
        self.refreshBackbones()

    # ------------------------------------------------------------------ bootstrap loop, sharing
    def lastPackage(self) -> Optional[PackageInfo]:
        """The model the bootstrap loop continues (and Export writes), if it is still a readable package."""
        path = self.parameterNode.lastPackage if self.parameterNode else ""
        try:
            return readPackage(path) if path and Path(path).is_dir() else None
        except PackageError:
            return None

    def _imported(self, package: PackageInfo) -> None:
        """An imported model becomes the last model: Segment next and Continue training use it."""
        self.parameterNode.lastPackage = str(package.path)
        self.refreshBackbones()

    def updateGui(self) -> None:
        p = self.parameterNode
        if p is None:
            return
        for c in range(MAX_CHANNELS):
            getattr(self.ui, f"candidateVolumeSelector{c}").visible = c < p.channelCount
            getattr(self.ui, f"candidateLabel{c}").visible = c < p.channelCount
        self._updateCasesTable()
        entry, busy = self._selectedEntry(), self.logic.busy
        downloadable = bool(entry and entry.downloadable and not entry.downloaded)
        for button, idle in ((self.ui.startButton, True), (self.ui.downloadButton, downloadable),
                             (self.ui.importWeightsButton, bool(entry))):
            button.enabled = button is self._activeButton if busy else idle
        self.ui.resumeButton.enabled = not busy and self.logic.canResume(p.modelName)
        last = self.lastPackage()
        hasModel = last is not None
        self.ui.lastModelLabel.text = last.listTitle() if hasModel else _("none yet")  # with any restriction
        self.ui.segmentNextButton.enabled = self.segmentNext.busy or (hasModel and not busy)
        self.sharing.updateButtons()
        self.ui.addToTrainingSetButton.enabled = bool(p.candidateSegmentation) and all(self._candidateVolumes())
        self.ui.continueTrainingButton.enabled = hasModel and not busy and bool(p.caseSegmentations)
