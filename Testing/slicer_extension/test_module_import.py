"""The module files import and their Logic classes work headless, with the Qt-only Slicer parts stubbed.

Only what cannot exist without Qt is replaced: ``qt``, ``slicer.ScriptedLoadableModule`` (with the base
classes' constructor behaviour of Slicer 5.13, where ``ScriptedLoadableModuleLogic.__init__`` calls
``super().__init__()``, and of older Slicer, where it does not), ``slicer.parameterNodeWrapper`` and
``slicer.i18n``. MRML, the logics and the medssl subprocesses are real.
"""

import importlib
import sys
import time
import types

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from medssl_slicer_helpers import REPO, obliqueRightHanded  # noqa: E402

from MedSSLLib.testing import volumeFromArray  # noqa: E402

import widget_harness  # noqa: E402


_ScriptedLoadableModuleLogic = widget_harness.ScriptedLoadableModuleLogic  # Slicer's base, one fake for both files


class _OldScriptedLoadableModuleLogic(_ScriptedLoadableModuleLogic):
    """The same base as in Slicer releases whose ``__init__`` does not call ``super().__init__()``."""

    def __init__(self, parent=None):  # deliberately no super().__init__()
        self.moduleName = self.__class__.__name__[:-len("Logic")]


QT_LIBRARY = ("slicerui", "parameter_binding", "segment_widget", "train_widget")


def _stubModules(scheduled, logicBase=_ScriptedLoadableModuleLogic):
    qt = types.ModuleType("qt")
    qt.QTimer = types.SimpleNamespace(singleShot=lambda ms, fn: scheduled.append(fn))
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleTest"):
        setattr(scripted, name, type(name, (), {}))
    scripted.ScriptedLoadableModuleLogic = logicBase
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: (lambda node: types.SimpleNamespace(node=node, cls=cls))
    wrapper.Choice = wrapper.WithinRange = lambda *args: args
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr, i18n.translate = (lambda text: text), (lambda context, text: text)
    return {"qt": qt, "slicer.ScriptedLoadableModule": scripted, "slicer.parameterNodeWrapper": wrapper,
            "slicer.i18n": i18n}


@pytest.fixture(params=[_ScriptedLoadableModuleLogic, _OldScriptedLoadableModuleLogic], ids=["cooperative", "old"])
def modules(request, monkeypatch, scene):
    scheduled = []
    for name, module in _stubModules(scheduled, request.param).items():
        monkeypatch.setitem(sys.modules, name, module)
    for folder in ("MedSSLSegment", "MedSSLTrain"):
        monkeypatch.syspath_prepend(str(REPO / folder))
    for name in QT_LIBRARY:  # bound to another test's stubbed qt
        monkeypatch.delitem(sys.modules, f"MedSSLLib.{name}", raising=False)
        monkeypatch.delattr(importlib.import_module("MedSSLLib"), name, raising=False)
    loaded = {name: importlib.import_module(name) for name in ("MedSSLSegment", "MedSSLTrain")}
    yield loaded, scheduled
    for name in ("MedSSLSegment", "MedSSLTrain", *(f"MedSSLLib.{name}" for name in QT_LIBRARY)):
        sys.modules.pop(name, None)


def test_logic_classes_combine_slicer_base_and_library_logic(modules, monkeypatch):
    """Both Slicer bases: the library Logic is initialised exactly once and the Qt timer drives its jobs."""
    from MedSSLLib.segment_logic import SegmentLogic
    from MedSSLLib.train_logic import TrainLogic

    (loaded, _) = modules
    inits = []

    def counted(cls):
        original = cls.__init__

        def init(self, *args, **kwargs):
            inits.append(cls)
            original(self, *args, **kwargs)
        return init

    for cls in (SegmentLogic, TrainLogic):
        monkeypatch.setattr(cls, "__init__", counted(cls))
    segmentLogic = loaded["MedSSLSegment"].MedSSLSegmentLogic()
    trainLogic = loaded["MedSSLTrain"].MedSSLTrainLogic()
    from MedSSLLib import slicerui

    assert segmentLogic.jobs.schedule is slicerui.qtSchedule and trainLogic.jobs.schedule is slicerui.qtSchedule
    assert inits == [SegmentLogic, TrainLogic]
    assert segmentLogic.moduleName == "MedSSLSegment" and trainLogic.moduleName == "MedSSLTrain"
    parameterNode = segmentLogic.getParameterNode()
    assert parameterNode.cls.__name__ == "MedSSLSegmentParameterNode"
    assert parameterNode.node.GetModuleName() == "MedSSLSegment"


def test_module_logic_segments_with_qt_timer_polling(modules, fakeMedssl, tinyPackage, scene):
    """The GUI path: start() returns at once, the QTimer callbacks poll, the result lands in the scene."""
    (loaded, scheduled) = modules
    logic = loaded["MedSSLSegment"].MedSSLSegmentLogic()
    logic.core.jobs = type(logic.jobs)(fakeMedssl, schedule=logic.jobs.schedule)
    volume = volumeFromArray(scene, (np.arange(6 * 7 * 8) % 5).reshape(6, 7, 8).astype("int16"),
                             obliqueRightHanded(), "MR")
    finished = []
    job = logic.start([volume], tinyPackage, onFinished=finished.append)
    assert not job.finished and len(scheduled) == 1
    deadline = time.monotonic() + 30
    while scheduled and time.monotonic() < deadline:
        scheduled.pop(0)()  # what the Qt event loop does
        time.sleep(0.02)
    assert finished == [job] and job.ok and job.outputs["segmentation"].GetScene() is scene
