import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Callable, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from MedSSLLib import slicerui
from MedSSLLib.catalog import backboneChoices
from MedSSLLib.commands import DEVICES, PRESETS, FinetuneOptions, PredictOptions
from MedSSLLib.curves import TrainingCurves
from MedSSLLib.events import ProgressState
from MedSSLLib.packages import listPackages, readPackage
from MedSSLLib.segment_logic import SegmentLogic
from MedSSLLib.train_logic import TrainingCase, TrainLogic, caseCells, casesFromFlat, removeCase

MAX_CHANNELS = 4


class MedSSLTrain(ScriptedLoadableModule):
    """Fine-tune a pretrained backbone on segmentations made in Slicer (medssl finetune in a subprocess)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedSSL Train")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["MedSSLSegment"]
        self.parent.contributors = ["MedSSL developers"]
        self.parent.helpText = _("""
Fine-tune a self-supervised pretrained backbone on a few volumes you segmented, on this computer (no server).
Build the training set from volume + segmentation pairs, pick a backbone (its licence and size are shown),
press Start: loss and validation Dice are plotted live, Cancel stops, Resume continues. The finished model
appears in <b>MedSSL Segment</b>. Bootstrap loop: Segment next, correct, Add to training set, Continue
training. Scripting: see <code>MedSSLLib/README.md</code>.
""")
        self.parent.acknowledgementText = _("MedSSL builds on 3D Slicer, PyTorch, MONAI and SimpleITK. Pretrained "
                                            "weights keep their own licences, shown before download.")


@parameterNodeWrapper
class MedSSLTrainParameterNode:
    """State of the module (saved with the scene). The training set is ``caseVolumes`` (channels of all
    cases one after another) and ``caseSegmentations``; ``lastPackage`` is the model the bootstrap continues."""

    channelCount: Annotated[int, WithinRange(1, MAX_CHANNELS)] = 1
    candidateVolume0: vtkMRMLScalarVolumeNode
    candidateVolume1: vtkMRMLScalarVolumeNode
    candidateVolume2: vtkMRMLScalarVolumeNode
    candidateVolume3: vtkMRMLScalarVolumeNode
    candidateSegmentation: vtkMRMLSegmentationNode
    caseVolumes: list[vtkMRMLScalarVolumeNode]
    caseSegmentations: list[vtkMRMLSegmentationNode]
    useTrainingFolder: bool = False
    trainingFolder: Path
    backbone: str = "resenc:tiny"
    acceptLicence: bool = False
    modelName: str = "my_model"
    preset: Annotated[str, Choice(list(PRESETS))] = "quick"
    steps: Annotated[int, WithinRange(0, 1000000)] = 0
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    sparseSlices: bool = False  # "A few painted slices" (medssl finetune --sparse-slices auto)
    lastPackage: str = ""


class MedSSLTrainWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI over MedSSLTrainLogic (training, downloads) and SegmentLogic (bootstrap "Segment next")."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._backbones = []  # MedSSLLib.catalog.BackboneChoice
        self._curves = None
        self._activeButton = None  # the button that cancels the running job

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSSLTrain.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSSLTrainLogic()
        self.segmentLogic = SegmentLogic(schedule=slicerui.qtSchedule)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        for name, slot in (("addCaseButton", self.onAddCase), ("removeCaseButton", self.onRemoveCase),
                           ("downloadButton", self.onDownload), ("importWeightsButton", self.onImportWeights),
                           ("startButton", self.onStart), ("resumeButton", self.onResume),
                           ("segmentNextButton", self.onSegmentNext), ("addToTrainingSetButton", self.onAddCase),
                           ("continueTrainingButton", self.onContinue)):
            getattr(self.ui, name).connect("clicked(bool)", slot)
        self.ui.backboneComboBox.connect("currentIndexChanged(int)", self.onBackboneSelected)
        slicerui.setupSetupSection(self.ui, "MedSSLTrain", self.logic.jobs)
        self.initializeParameterNode()
        self.refreshBackbones()

    def cleanup(self) -> None:
        self.removeObservers()
        for logic in filter(None, (self.logic, getattr(self, "segmentLogic", None))):
            logic.cancel()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.refreshBackbones()

    def exit(self) -> None:
        """Stop updating the GUI from the parameter node (a running job still reports to it)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.cancel()  # results must not land in the next scene
        self.segmentLogic.cancel()
        self.setParameterNode(None)
        self._curves = None

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: Optional[MedSSLTrainParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
            self.updateGui()

    # ------------------------------------------------------------------ training set
    def _cases(self) -> list:
        p = self._parameterNode
        return casesFromFlat(list(p.caseVolumes), list(p.caseSegmentations), p.channelCount)

    def _candidateVolumes(self) -> list:
        return [getattr(self._parameterNode, f"candidateVolume{c}") for c in range(self._parameterNode.channelCount)]

    def onAddCase(self) -> None:
        """Add the selected volume(s) + segmentation as one training case ("Add pair" / "Add to training set")."""
        p, volumes = self._parameterNode, self._candidateVolumes()
        if not all(volumes) or not p.candidateSegmentation:
            slicer.util.errorDisplay(_("Select a volume for every channel and its segmentation first."))
            return
        if p.candidateSegmentation in p.caseSegmentations:
            slicer.util.errorDisplay(_("This segmentation is already in the training set."))
            return
        p.caseVolumes = list(p.caseVolumes) + volumes
        p.caseSegmentations = list(p.caseSegmentations) + [p.candidateSegmentation]

    def onRemoveCase(self) -> None:
        p = self._parameterNode
        volumes, segmentations = removeCase(p.caseVolumes, p.caseSegmentations, p.channelCount,
                                            self.ui.casesTableWidget.currentRow())
        p.caseVolumes, p.caseSegmentations = volumes, segmentations

    def _updateCasesTable(self) -> None:
        try:
            cases = self._cases()
        except ValueError:  # e.g. the channel count was changed after adding cases
            cases = []
        cases = [case for case in cases if case.segmentation is not None]
        table = self.ui.casesTableWidget
        table.setRowCount(len(cases))
        for row, case in enumerate(cases):
            for column, text in enumerate(caseCells(case)):
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
        current = self._parameterNode.backbone if self._parameterNode else ""
        combo.currentIndex = values.index(current) if current in values else values.index("resenc:tiny")
        combo.blockSignals(wasBlocked)
        self.onBackboneSelected(combo.currentIndex)

    def onBackboneSelected(self, index: int) -> None:
        if not 0 <= index < len(self._backbones):
            return
        choice = self._backbones[index]
        entry = choice.entry
        if self._parameterNode:
            self._parameterNode.backbone = choice.value
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
        if entry.licenceRequiresAcceptance and not self._parameterNode.acceptLicence:
            slicer.util.errorDisplay(_("Read and accept the licence ({url}) first.").format(url=entry.licenceUrl))
            return
        if slicerui.ensureDependencies("MedSSLTrain"):
            self._run(lambda **cb: self.logic.downloadWeights(entry.id, self._parameterNode.acceptLicence, **cb),
                      _("Download"), self.ui.downloadButton, _("Download"))

    def onImportWeights(self) -> None:
        entry = self._selectedEntry()
        if self.logic.busy:
            self.logic.cancel()
            return
        path = slicerui.chooseFile(_("Weights file for {id}").format(id=entry.id),
                                   "Weights (*.pth *.pt *.safetensors *.ckpt *.zip)")
        accept = self._parameterNode.acceptLicence
        if path and slicerui.ensureDependencies("MedSSLTrain"):
            self._run(lambda **cb: self.logic.importWeights(path, entry.id, accept, **cb), _("Import"),
                      self.ui.importWeightsButton, _("Import file..."))

    # ------------------------------------------------------------------ training
    def _options(self) -> FinetuneOptions:
        p = self._parameterNode
        return FinetuneOptions(p.backbone, p.preset, p.steps or None, p.device,
                               sparseSlices="auto" if p.sparseSlices else None)

    def _folder(self) -> Optional[Path]:
        p = self._parameterNode
        return p.trainingFolder if p.useTrainingFolder else None

    def _train(self, starter: Callable) -> None:
        """Start (or, while training, cancel) a training job; the Start button is its Cancel button."""
        if self.logic.busy or slicerui.ensureDependencies("MedSSLTrain"):
            self._run(starter, _("Training"), self.ui.startButton, _("Start training"), training=True)

    def onStart(self) -> None:
        p = self._parameterNode
        self._train(lambda **cb: self.logic.start(p.modelName, self._cases(), self._options(), self._folder(), **cb))

    def onResume(self) -> None:
        self._train(lambda **cb: self.logic.resume(self._parameterNode.modelName, **cb))

    def onContinue(self) -> None:
        p = self._parameterNode
        name = self.logic.nextModelName(Path(p.lastPackage).name)
        self._train(lambda **cb: self.logic.continueTraining(p.lastPackage, self._cases(), self._options(),
                                                             self._folder(), name, **cb))
        p.modelName = name

    def _run(self, starter: Callable, what: str, button, idleText: str, training: bool = False) -> None:
        """Start a job (or cancel it when ``button`` is its Cancel button) and wire progress to the panel."""
        if self.logic.busy:
            self.logic.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("{what} could not start.").format(what=what), waitCursor=True):
            self.ui.logTextEdit.clear()
            if training:
                self._resetCurves()
            starter(onProgress=self.onProgress, onLog=lambda text: slicerui.appendLog(self.ui.logTextEdit, text),
                    onFinished=lambda job: self.onFinished(job, what, button, idleText))
            slicerui.setRunning(button, True, idleText)
            self._activeButton = button
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

    def onFinished(self, job, what: str, button, idleText: str) -> None:
        slicerui.setRunning(button, False, idleText)
        self._activeButton = None
        slicerui.showFinished(self.ui, job, what)
        if job.ok and "package" in job.outputs and self._parameterNode:
            self._parameterNode.lastPackage = str(job.outputs["package"].path)
            self.ui.statusLabel.text = _("Model {name} is ready and selectable in MedSSL Segment.").format(
                name=job.outputs["package"].path.name)
        self.refreshBackbones()

    # ------------------------------------------------------------------ bootstrap loop
    def onSegmentNext(self) -> None:
        """Segment the selected (unlabelled) volume with the last model; the result opens in Segment Editor."""
        p, volumes = self._parameterNode, self._candidateVolumes()
        if self.segmentLogic.busy:
            self.segmentLogic.cancel()
            return

        def done(job) -> None:
            slicerui.setRunning(self.ui.segmentNextButton, False, _("Segment next"))
            slicerui.showFinished(self.ui, job, _("Segmentation"))
            if job.ok and self._parameterNode:
                p.candidateSegmentation = job.outputs["segmentation"]
                slicerui.openSegmentEditor(job.outputs["segmentation"], volumes[0])

        with slicer.util.tryWithErrorDisplay(_("Segmentation could not start."), waitCursor=True):
            self.segmentLogic.start(volumes, p.lastPackage, PredictOptions(device=p.device),
                                    onProgress=self.onProgress, onFinished=done)
            slicerui.setRunning(self.ui.segmentNextButton, True, _("Segment next"))

    def updateGui(self, caller=None, event=None) -> None:
        p = self._parameterNode
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
        hasModel = bool(p.lastPackage) and Path(p.lastPackage).is_dir()
        self.ui.lastModelLabel.text = Path(p.lastPackage).name if hasModel else _("none yet")
        self.ui.segmentNextButton.enabled = hasModel and all(self._candidateVolumes())
        self.ui.addToTrainingSetButton.enabled = bool(p.candidateSegmentation) and all(self._candidateVolumes())
        self.ui.continueTrainingButton.enabled = hasModel and not busy and bool(p.caseSegmentations)


class MedSSLTrainLogic(ScriptedLoadableModuleLogic, TrainLogic):
    """`MedSSLLib.train_logic.TrainLogic` with Slicer's parameter node; usable without the widget::

        import MedSSLTrain
        from MedSSLLib.train_logic import TrainingCase
        logic = MedSSLTrain.MedSSLTrainLogic()
        job = logic.train("liver", [TrainingCase([getNode("CT")], getNode("CT segmentation"))])  # blocks
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)  # newer Slicer also runs TrainLogic.__init__ (super())
        if not hasattr(self, "jobs"):  # older Slicer: the base class does not call super().__init__()
            TrainLogic.__init__(self)
        self.jobs.schedule = slicerui.qtSchedule

    def getParameterNode(self):
        return MedSSLTrainParameterNode(super().getParameterNode())


class MedSSLTrainTest(ScriptedLoadableModuleTest):
    """Self-test: training-set export on sample data; a short real training when MEDSSL_SELFTEST_TRAINING=1."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_exportTrainingSet()

    def _labelledSample(self):
        import MedSSLSegment
        import SampleData
        from MedSSLLib.testing import segmentationFromThreshold

        MedSSLSegment.registerSampleData()
        volume = SampleData.downloadSample("MedSSLBrainMR1")
        return TrainingCase([volume], segmentationFromThreshold(volume, "bright"))

    def test_exportTrainingSet(self):
        from MedSSLLib import nodeio
        from MedSSLLib.train_logic import exportTrainingSet

        case = self._labelledSample()
        folder = Path(tempfile.mkdtemp(prefix="MedSSLTrainTest-"))
        exported = exportTrainingSet([case], folder)[0]
        image = nodeio.importVolume(exported.images[0], case.volumes[0], "exported")
        self.assertTrue(nodeio.sameGeometry(image, case.volumes[0], tolerance=1e-6))
        self.assertEqual(exported.segments, ["bright"])
        if os.environ.get("MEDSSL_SELFTEST_TRAINING") == "1":
            job = MedSSLTrainLogic().train("selftest", [case], FinetuneOptions(steps=2, device="auto", overwrite=True),
                                           timeout=3600)
            self.assertEqual(readPackage(job.outputs["package"].path).labelNames, ["bright"])
        shutil.rmtree(folder)
        self.delayDisplay("Training-set export self-test passed")
