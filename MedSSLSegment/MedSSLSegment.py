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
from MedSSLLib.commands import DEVICES, PredictOptions
from MedSSLLib.packages import readPackage
from MedSSLLib.segment_logic import SegmentLogic
from MedSSLLib.segment_widget import SegmentPanel

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
    """State of the module (saved with the scene). ``modelPath`` is the package folder; ``batch*`` are
    the folder mode's (MedSSLLib/folder_widget.py)."""

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
    batchScene: bool = False  # folder mode: every volume of the scene instead of batchInputFolder
    batchInputFolder: Path
    batchOutputFolder: Path  # unset: results next to the inputs
    batchLoadResults: bool = True


class MedSSLSegmentWidget(ScriptedLoadableModuleWidget):
    """Loads the .ui; the panel's behaviour is `MedSSLLib.segment_widget.SegmentPanel`."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None
        self.panel = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSSLSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSSLSegmentLogic()
        self.panel = SegmentPanel(self.ui, self.logic, isEntered=lambda: self.parent.isEntered)

    def cleanup(self) -> None:
        if self.panel:
            self.panel.cleanup()

    def enter(self) -> None:
        self.panel.enter()

    def exit(self) -> None:
        self.panel.exit()


class MedSSLSegmentLogic(ScriptedLoadableModuleLogic):
    """Slicer's module logic (parameter node) holding `MedSSLLib.segment_logic.SegmentLogic` as ``core``, whose
    methods it offers (``segment``, ``start``, ``cancel``, ``busy``, ``jobs``...); usable without the widget::

        import MedSSLSegment
        logic = MedSSLSegment.MedSSLSegmentLogic()
        job = logic.segment([getNode("CT")], logic.listModels()[0])   # blocks; job.outputs["segmentation"]
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.core = SegmentLogic(schedule=slicerui.qtSchedule)

    def __getattr__(self, name: str):
        if name == "core":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.core, name)

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
