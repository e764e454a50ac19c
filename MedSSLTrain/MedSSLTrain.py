import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

_repository = Path(__file__).resolve().parents[1]  # run from a clone: MedSSLLib is beside the module folder
if (_repository / "MedSSLLib" / "__init__.py").is_file() and str(_repository) not in sys.path:
    sys.path.append(str(_repository))

from MedSSLLib import slicerui
from MedSSLLib.commands import DEVICES, PRESETS, FinetuneOptions
from MedSSLLib.packages import readPackage
from MedSSLLib.segment_logic import MAX_CHANNELS
from MedSSLLib.train_logic import TrainingCase, TrainLogic
from MedSSLLib.train_widget import TrainPanel

SCRIPTING_HELP = "https://github.com/MedSSL/SlicerMedSSL/blob/main/MedSSLLib/README.md"


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
training. Scripting: see <a href="{url}">the MedSSLLib guide</a>.
""").format(url=SCRIPTING_HELP)
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
    preset: Annotated[str, Choice(list(PRESETS))] = "auto"
    steps: Annotated[int, WithinRange(0, 1000000)] = 0
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    sparseSlices: bool = False  # "A few painted slices" (medssl finetune --sparse-slices auto)
    lastPackage: str = ""


class MedSSLTrainWidget(ScriptedLoadableModuleWidget):
    """Loads the .ui; the panel's behaviour is `MedSSLLib.train_widget.TrainPanel`."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None
        self.panel = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSSLTrain.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSSLTrainLogic()
        self.panel = TrainPanel(self.ui, self.logic, isEntered=lambda: self.parent.isEntered)

    def cleanup(self) -> None:
        if self.panel:
            self.panel.cleanup()

    def enter(self) -> None:
        self.panel.enter()

    def exit(self) -> None:
        self.panel.exit()


class MedSSLTrainLogic(ScriptedLoadableModuleLogic):
    """Slicer's module logic (parameter node) holding `MedSSLLib.train_logic.TrainLogic` as ``core``, whose
    methods it offers (``train``, ``start``, ``resume``, ``continueTraining``, ``runMedSSL``...)::

        import MedSSLTrain
        from MedSSLLib.train_logic import TrainingCase
        logic = MedSSLTrain.MedSSLTrainLogic()
        job = logic.train("liver", [TrainingCase([getNode("CT")], getNode("CT segmentation"))])  # blocks
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.core = TrainLogic(schedule=slicerui.qtSchedule)

    def __getattr__(self, name: str):
        if name == "core":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.core, name)

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
