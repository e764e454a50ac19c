"""The MedSSLSegment panel (Qt): model selector, inputs per channel, Apply/Cancel, progress and results;
Export/Import of models (`MedSSLLib.share_widget`) and the folder mode (`MedSSLLib.folder_widget`).

The module file (``MedSSLSegment/MedSSLSegment.py``) only builds the .ui and hands it here, as SlicerNNUNet's
module files hand theirs to ``SlicerNNUNetLib`` widgets. All work is done by the Qt-free
`MedSSLLib.segment_logic.SegmentLogic` held by the module logic; this class only turns its callbacks into
widget updates. The parameter node is bound through `MedSSLLib.parameter_binding.ParameterBinding`.
"""

from __future__ import annotations

import shutil
from typing import Optional

import slicer
from slicer.i18n import tr as _

from . import slicerui
from .commands import PredictOptions
from .folder_widget import FolderPanel
from .jobs import JobRunner
from .packages import PackageInfo, listPackages
from .parameter_binding import ParameterBinding
from .segment_logic import MAX_CHANNELS, panelProblem
from .share_widget import ModelSharing


class SegmentPanel:
    """Behaviour of the MedSSLSegment panel; ``logic`` is the module logic (parameter node + SegmentLogic)."""

    def __init__(self, ui, logic, isEntered) -> None:
        self.ui, self.logic = ui, logic
        self._packages: list[PackageInfo] = []
        self.lastResult = self.lastInput = None  # the segmentation the last Apply created and the volume it is on
        self._applyInput = None
        self.diagnostics = JobRunner(schedule=slicerui.qtSchedule)  # `medssl info`, apart from the logic's jobs
        self.applyButton = slicerui.RunButton(ui.applyButton)
        self.sharing = ModelSharing(ui, "MedSSLSegment", self.selectedPackage, self._imported)
        self.folder = FolderPanel(ui, lambda: self.parameterNode, self.selectedPackage, self.options,
                                  self.updateButtons)
        self.binding = ParameterBinding(ui, logic.getParameterNode, self.updateButtons, isEntered,
                                        onSceneClose=self.cancel, initialize=self._defaultInput)
        ui.applyButton.connect("clicked(bool)", self.onApply)
        ui.editButton.connect("clicked(bool)", self.onEdit)
        ui.refreshModelsButton.connect("clicked(bool)", self.refreshModels)
        ui.deleteModelButton.connect("clicked(bool)", self.onDeleteModel)
        ui.modelSelector.connect("currentIndexChanged(int)", self.onModelSelected)
        slicerui.setupSetupSection(ui, "MedSSLSegment", self.diagnostics, onFinished=self.updateButtons)
        self.enter()

    @property
    def parameterNode(self):
        return self.binding.node

    @staticmethod
    def _defaultInput(node) -> None:
        if not node.inputVolume0:
            node.inputVolume0 = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def enter(self) -> None:
        self.binding.enter()
        self.refreshModels()

    def exit(self) -> None:
        self.binding.unbind()

    def cancel(self) -> None:
        for runner in (self.logic, self.folder, self.sharing, self.diagnostics):
            runner.cancel()

    def cleanup(self) -> None:
        self.binding.cleanup()
        self.cancel()

    # ------------------------------------------------------------------ models
    def refreshModels(self) -> None:
        """Fill the model selector with the packages registered on this computer."""
        self._packages = listPackages()
        selector = self.ui.modelSelector
        wasBlocked = selector.blockSignals(True)
        selector.clear()
        for package in self._packages:
            selector.addItem(package.listTitle())  # with any licence restriction (3DINO)
        current = self.parameterNode.modelPath if self.parameterNode else ""
        paths = [str(p.path) for p in self._packages]
        selector.currentIndex = paths.index(current) if current in paths else (0 if paths else -1)
        selector.blockSignals(wasBlocked)
        self.onModelSelected(selector.currentIndex)

    def selectedPackage(self) -> Optional[PackageInfo]:
        index = self.ui.modelSelector.currentIndex
        return self._packages[index] if 0 <= index < len(self._packages) else None

    def onModelSelected(self, index: int) -> None:
        package = self.selectedPackage()
        if self.parameterNode:
            self.parameterNode.modelPath = str(package.path) if package else ""
        self.ui.modelInfoLabel.text = package.summary() if package else _(
            "No model yet: fine-tune one in the MedSSL Train module.")
        channels = package.channels if package else ["image"]
        for c in range(MAX_CHANNELS):
            getattr(self.ui, f"inputLabel{c}").text = f"{channels[c]}:" if c < len(channels) else ""
            getattr(self.ui, f"inputLabel{c}").visible = c < len(channels)
            getattr(self.ui, f"inputSelector{c}").visible = c < len(channels)
        self.updateButtons()

    def _imported(self, package: PackageInfo) -> None:
        """A model zip was imported: list it and select it."""
        if self.parameterNode:
            self.parameterNode.modelPath = str(package.path)
        self.refreshModels()

    def onDeleteModel(self) -> None:
        package = self.selectedPackage()
        if package and slicer.util.confirmYesNoDisplay(
                _("Delete the model {name} from {folder}?").format(name=package.path.name, folder=package.path)):
            shutil.rmtree(package.path, ignore_errors=True)
            self.refreshModels()

    # ------------------------------------------------------------------ running
    def inputVolumes(self) -> list:
        """The selected volume of each channel the panel has (at most MAX_CHANNELS; see panelProblem)."""
        package = self.selectedPackage()
        count = min(len(package.channels) if package else 1, MAX_CHANNELS)
        return [getattr(self.parameterNode, f"inputVolume{c}") for c in range(count)]

    def options(self) -> PredictOptions:
        p = self.parameterNode
        return PredictOptions(p.device, p.overlap, p.tta, p.lowMemory, p.computeUncertainty)

    def updateButtons(self) -> None:
        busy = self.logic.busy
        problem = panelProblem(self.selectedPackage(), self.inputVolumes()) if self.parameterNode else ""
        self.ui.applyButton.enabled = busy or (problem is None and not self.folder.busy)
        self.folder.updateButtons(otherBusy=busy)
        self.sharing.updateButtons()
        if not busy:
            self.ui.applyButton.toolTip = self.applyButton.idleToolTip if problem is None else problem
        self.ui.editButton.enabled = bool(self.editableResult()) and not busy

    def editableResult(self):
        """The segmentation *Edit* opens: the last result of this panel if still in the scene, else the chosen
        output node."""
        last = self.lastResult
        if last is not None and last.GetScene() is not None:
            return last
        return self.parameterNode.outputSegmentation if self.parameterNode else None

    def onApply(self) -> None:
        if self.logic.busy:
            self.logic.cancel()
            return
        if not slicerui.ensureDependencies("MedSSLSegment"):
            return
        p = self.parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            self.ui.logTextEdit.clear()
            self._applyInput = self.inputVolumes()[0]
            self.logic.start(self.inputVolumes(), self.selectedPackage(), self.options(), p.outputSegmentation,
                             p.uncertaintyVolume if p.computeUncertainty else None, onProgress=self.onProgress,
                             onLog=self.onLog, onFinished=self.onFinished)
            self.applyButton.setRunning(True)
            self.updateButtons()

    def onProgress(self, job) -> None:
        slicerui.showProgress(self.ui, job)

    def onLog(self, text: str) -> None:
        slicerui.appendLog(self.ui.logTextEdit, text)

    def onFinished(self, job) -> None:
        """The output selectors keep what the user chose: with "Create new" the next Apply creates another node
        (setting the selector to this result had made the next Apply, on another volume, replace it and the
        corrections made to it in Segment Editor)."""
        self.applyButton.setRunning(False)
        slicerui.showFinished(self.ui, job, _("Segmentation"))
        p = self.parameterNode
        if job.ok and p:
            self.lastResult, self.lastInput = job.outputs["segmentation"], self._applyInput
            slicerui.showResult(p.inputVolume0, job.outputs["segmentation"], job.outputs.get("uncertainty"))
        self.updateButtons()

    def onEdit(self) -> None:
        result = self.editableResult()
        volume = self.lastInput if result is self.lastResult and self.lastInput is not None else None
        slicerui.openSegmentEditor(result, volume or self.parameterNode.inputVolume0)
