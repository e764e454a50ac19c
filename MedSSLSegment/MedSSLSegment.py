import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Optional

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
from MedSSLLib.commands import DEVICES, PredictOptions
from MedSSLLib.jobs import JobRunner
from MedSSLLib.packages import listPackages, readPackage
from MedSSLLib.segment_logic import MAX_CHANNELS, SegmentLogic, panelProblem

SCRIPTING_HELP = "https://github.com/MedSSL/SlicerMedSSL/blob/main/MedSSLLib/README.md"
TESTING_DATA_URL = "https://github.com/Slicer/SlicerTestingData/releases/download/SHA256/"
SAMPLES = (  # (sample name, file name, SHA256) of public Slicer testing data used in the tutorial and self-tests
    ("MedSSLBrainMR1", "RegLib_C01_1.nrrd", "998cb522173839c78657f4bc0ea907cea09fd04e44601f17c82ea27927937b95"),
    ("MedSSLBrainMR2", "RegLib_C01_2.nrrd", "1a64f3f422eb3d1c9b093d1a18da354b13bcf307907c66317e2463ee530b7a97"),
)


class MedSSLSegment(ScriptedLoadableModule):
    """Segment volumes with a model fine-tuned by MedSSLTrain (medssl predict in a subprocess)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedSSL Segment")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["MedSSL developers"]
        self.parent.helpText = _("""
Segment one or more volumes with a model fine-tuned locally by <b>MedSSL Train</b>. The model runs as
<code>medssl predict</code> in a separate process: Slicer stays responsive and Cancel stops it. The result
is a segmentation with the model's segment names, colours and terminology; correct it in Segment Editor and
add it to the training set in MedSSL Train. Scripting: see <a href="{url}">the MedSSLLib guide</a>.
""").format(url=SCRIPTING_HELP)
        self.parent.acknowledgementText = _("MedSSL builds on 3D Slicer, PyTorch, MONAI and SimpleITK.")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Two public brain MR volumes (Slicer testing data, checked by SHA256) for the tutorial and self-tests."""
    import SampleData

    iconsPath = os.path.join(os.path.dirname(__file__), "Resources", "Icons")
    if hasattr(SampleData.SampleDataLogic, "registerCustomSampleDataCategory"):  # Slicer 5.12+ (title apart)
        SampleData.SampleDataLogic.registerCustomSampleDataCategory("MedSSL", title=_("MedSSL"))
    for sampleName, fileName, sha256 in SAMPLES:
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category="MedSSL", sampleName=sampleName, thumbnailFileName=os.path.join(iconsPath, "MedSSLSegment.png"),
            uris=TESTING_DATA_URL + sha256, fileNames=fileName, checksums=f"SHA256:{sha256}", nodeNames=sampleName)


@parameterNodeWrapper
class MedSSLSegmentParameterNode:
    """State of the module (saved with the scene). ``modelPath`` is the package folder."""

    inputVolume0: vtkMRMLScalarVolumeNode
    inputVolume1: vtkMRMLScalarVolumeNode
    inputVolume2: vtkMRMLScalarVolumeNode
    inputVolume3: vtkMRMLScalarVolumeNode
    modelPath: str = ""
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    overlap: Annotated[float, WithinRange(0.0, 0.9)] = 0.5
    tta: bool = False
    lowMemory: bool = False
    computeUncertainty: bool = False
    outputSegmentation: vtkMRMLSegmentationNode
    uncertaintyVolume: vtkMRMLScalarVolumeNode


class MedSSLSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI over MedSSLSegmentLogic; all work is done by the logic and reported through callbacks."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._packages = []

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSSLSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSSLSegmentLogic()
        self.diagnostics = JobRunner(schedule=slicerui.qtSchedule)  # `medssl info`, apart from the logic's jobs
        self.applyButton = slicerui.RunButton(self.ui.applyButton)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.editButton.connect("clicked(bool)", self.onEditButton)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.refreshModels)
        self.ui.deleteModelButton.connect("clicked(bool)", self.onDeleteModel)
        self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelSelected)
        slicerui.setupSetupSection(self.ui, "MedSSLSegment", self.diagnostics, onFinished=self._updateButtons)
        self.initializeParameterNode()
        self.refreshModels()

    def cleanup(self) -> None:
        self.removeObservers()
        if self.logic:
            self.logic.cancel()
            self.diagnostics.cancel()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.refreshModels()

    def exit(self) -> None:
        """Stop updating the GUI from the parameter node (a running job still reports to it)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.cancel()  # results must not land in the next scene
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume0:
            self._parameterNode.inputVolume0 = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, inputParameterNode: Optional[MedSSLSegmentParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._updateButtons()

    # ------------------------------------------------------------------ models
    def refreshModels(self) -> None:
        """Fill the model selector with the packages registered on this computer."""
        self._packages = listPackages()
        wasBlocked = self.ui.modelSelector.blockSignals(True)
        self.ui.modelSelector.clear()
        for package in self._packages:
            self.ui.modelSelector.addItem(package.path.name)
        current = self._parameterNode.modelPath if self._parameterNode else ""
        paths = [str(p.path) for p in self._packages]
        self.ui.modelSelector.currentIndex = paths.index(current) if current in paths else (0 if paths else -1)
        self.ui.modelSelector.blockSignals(wasBlocked)
        self.onModelSelected(self.ui.modelSelector.currentIndex)

    def _selectedPackage(self):
        index = self.ui.modelSelector.currentIndex
        return self._packages[index] if 0 <= index < len(self._packages) else None

    def onModelSelected(self, index: int) -> None:
        package = self._selectedPackage()
        if self._parameterNode:
            self._parameterNode.modelPath = str(package.path) if package else ""
        self.ui.modelInfoLabel.text = package.summary() if package else _(
            "No model yet: fine-tune one in the MedSSL Train module.")
        channels = package.channels if package else ["image"]
        for c in range(MAX_CHANNELS):
            getattr(self.ui, f"inputLabel{c}").text = f"{channels[c]}:" if c < len(channels) else ""
            getattr(self.ui, f"inputLabel{c}").visible = c < len(channels)
            getattr(self.ui, f"inputSelector{c}").visible = c < len(channels)
        self._updateButtons()

    def onDeleteModel(self) -> None:
        package = self._selectedPackage()
        if package and slicer.util.confirmYesNoDisplay(
                _("Delete the model {name} from {folder}?").format(name=package.path.name, folder=package.path)):
            shutil.rmtree(package.path, ignore_errors=True)
            self.refreshModels()

    # ------------------------------------------------------------------ running
    def _inputVolumes(self) -> list:
        """The selected volume of each channel the panel has (at most MAX_CHANNELS; see panelProblem)."""
        package = self._selectedPackage()
        count = min(len(package.channels) if package else 1, MAX_CHANNELS)
        return [getattr(self._parameterNode, f"inputVolume{c}") for c in range(count)]

    def _options(self) -> PredictOptions:
        p = self._parameterNode
        return PredictOptions(p.device, p.overlap, p.tta, p.lowMemory, p.computeUncertainty)

    def _updateButtons(self, caller=None, event=None) -> None:
        busy = bool(self.logic and self.logic.busy)
        problem = panelProblem(self._selectedPackage(), self._inputVolumes()) if self._parameterNode else ""
        self.ui.applyButton.enabled = busy or problem is None
        if not busy:
            self.ui.applyButton.toolTip = self.applyButton.idleToolTip if problem is None else problem
        output = self._parameterNode.outputSegmentation if self._parameterNode else None
        self.ui.editButton.enabled = bool(output) and not busy

    def onApplyButton(self) -> None:
        if self.logic.busy:
            self.logic.cancel()
            return
        if not slicerui.ensureDependencies("MedSSLSegment"):
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            self.ui.logTextEdit.clear()
            self.logic.start(self._inputVolumes(), self._selectedPackage(), self._options(), p.outputSegmentation,
                             p.uncertaintyVolume if p.computeUncertainty else None, onProgress=self.onProgress,
                             onLog=self.onLog, onFinished=self.onFinished)
            self.applyButton.setRunning(True)
            self._updateButtons()

    def onProgress(self, job) -> None:
        slicerui.showProgress(self.ui, job)

    def onLog(self, text: str) -> None:
        slicerui.appendLog(self.ui.logTextEdit, text)

    def onFinished(self, job) -> None:
        self.applyButton.setRunning(False)
        slicerui.showFinished(self.ui, job, _("Segmentation"))
        if job.ok and self._parameterNode:
            self._parameterNode.outputSegmentation = job.outputs["segmentation"]
            if "uncertainty" in job.outputs:
                self._parameterNode.uncertaintyVolume = job.outputs["uncertainty"]
            slicerui.showResult(self._parameterNode.inputVolume0, job.outputs["segmentation"],
                                job.outputs.get("uncertainty"))
        self._updateButtons()

    def onEditButton(self) -> None:
        slicerui.openSegmentEditor(self._parameterNode.outputSegmentation, self._parameterNode.inputVolume0)


class MedSSLSegmentLogic(ScriptedLoadableModuleLogic, SegmentLogic):
    """`MedSSLLib.segment_logic.SegmentLogic` with Slicer's parameter node; usable without the widget::

        import MedSSLSegment
        logic = MedSSLSegment.MedSSLSegmentLogic()
        job = logic.segment([getNode("CT")], logic.listModels()[0])   # blocks; job.outputs["segmentation"]
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)  # newer Slicer also runs SegmentLogic.__init__ (super())
        if not hasattr(self, "jobs"):  # older Slicer: the base class does not call super().__init__()
            SegmentLogic.__init__(self)
        self.jobs.schedule = slicerui.qtSchedule

    def getParameterNode(self):
        return MedSSLSegmentParameterNode(super().getParameterNode())


class MedSSLSegmentTest(ScriptedLoadableModuleTest):
    """Self-test on public sample data. The medssl part runs when medssl is installed (never installed here)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_volumeFileRoundTrip()
        self.setUp()
        self.test_segmentWithTinyModel()

    def _sample(self, name: str = "MedSSLBrainMR1"):
        import SampleData

        registerSampleData()
        return SampleData.downloadSample(name)

    def test_volumeFileRoundTrip(self):
        """The volume written for medssl reads back with identical voxels and geometry."""
        from MedSSLLib import nodeio

        volume = self._sample()
        folder = Path(tempfile.mkdtemp(prefix="MedSSLSegmentTest-"))
        path = nodeio.writeVolume(volume, folder / "volume.nrrd")
        copy = nodeio.importVolume(path, volume, "copy")
        self.assertTrue(nodeio.sameGeometry(volume, copy, tolerance=1e-9))
        self.assertTrue((slicer.util.arrayFromVolume(volume) == slicer.util.arrayFromVolume(copy)).all())
        shutil.rmtree(folder)
        self.delayDisplay("Volume round trip passed")

    def test_segmentWithTinyModel(self):
        """Segment the sample with a tiny random model: names, label values and reference geometry."""
        from MedSSLLib import install
        from MedSSLLib.testing import makeTinyPackage

        if not install.isSatisfied("medssl") or not install.isSatisfied("torch"):
            self.delayDisplay("medssl is not installed: segmentation self-test skipped")
            return
        volume = self._sample()
        folder = Path(tempfile.mkdtemp(prefix="MedSSLSegmentTest-"))
        labels = [{"value": 1, "name": "tissue", "color": [1.0, 0.0, 0.0], "terminology": None}]
        package = makeTinyPackage(folder / "tiny", labels, spacing=(4.0, 4.0, 4.0))
        job = MedSSLSegmentLogic().segment([volume], package, PredictOptions(device="cpu"), timeout=600)
        segmentation = job.outputs["segmentation"]
        self.assertEqual(segmentation.GetSegmentation().GetNthSegment(0).GetName(), "tissue")
        self.assertEqual(segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole()), volume)
        self.assertEqual(readPackage(package).labelNames, ["tissue"])
        shutil.rmtree(folder)
        self.delayDisplay("Segmentation self-test passed")
