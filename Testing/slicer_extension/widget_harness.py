"""Run the modules' widget code headless: Qt widgets replaced by plain objects built from the real .ui files.

What cannot exist without Qt is replaced, nothing else: each widget of the module's .ui file becomes a
`FakeWidget` that holds its ``text`` and ``toolTip`` from the .ui and the properties the code sets; the
``@parameterNodeWrapper`` becomes `parameterNodeWrapper` below, whose instances keep the fields on a real
``vtkMRMLScriptedModuleNode`` stand-in and fire its ModifiedEvent on every change as Slicer's wrapper does
(``Base/Python/slicer/parameterNodeWrapper/wrapper.py``: setting a field modifies the node). MRML, the
logics, the medssl subprocesses and ``slicer.util.VTKObservationMixin`` are real.
"""

import pathlib
import sys
import types
import typing
import xml.etree.ElementTree as ET

import slicer


class FakeWidget:
    """A widget of the .ui file: properties are plain attributes; signals remember their slots."""

    def __init__(self, name: str, className: str, text: str = "", toolTip: str = "") -> None:
        self.objectName, self.className = name, className
        self.text, self.toolTip, self.enabled, self.visible = text, toolTip, True, True
        self.currentIndex, self.value, self.slots, self.items, self.cells = -1, 0, {}, [], {}
        self.plainText, self.selectedRow, self.rowCount = "", -1, 0

    def connect(self, signal: str, slot) -> None:
        self.slots.setdefault(signal, []).append(slot)

    def click(self) -> None:
        for slot in self.slots.get("clicked(bool)", []):
            slot()

    def blockSignals(self, block: bool) -> bool:
        return False

    def clear(self) -> None:
        self.items, self.plainText = [], ""

    def addItem(self, text: str) -> None:
        self.items.append(text)

    def setRowCount(self, rows: int) -> None:
        self.rowCount = rows
        self.cells = {key: value for key, value in self.cells.items() if key[0] < rows}

    def setItem(self, row: int, column: int, item) -> None:
        self.cells[(row, column)] = item

    def currentRow(self) -> int:
        return self.selectedRow

    def setPlainText(self, text: str) -> None:
        self.plainText = text

    def appendPlainText(self, text: str) -> None:
        self.plainText += text + "\n"

    def ensureCursorVisible(self) -> None:
        pass

    def setMRMLScene(self, scene) -> None:
        pass

    def addWidget(self, widget) -> None:
        pass

    def setMRMLPlotViewNode(self, node) -> None:
        pass


def _property(widget: ET.Element, name: str) -> str:
    for prop in widget.findall("property"):
        if prop.get("name") == name and prop.find("string") is not None:
            return prop.find("string").text or ""
    return ""


def uiFromFile(path) -> types.SimpleNamespace:
    """``slicer.util.childWidgetVariables(loadUI(path))``: every named widget of the .ui file."""
    widgets = {}
    for widget in ET.parse(str(path)).getroot().iter("widget"):
        name = widget.get("name")
        widgets[name] = FakeWidget(name, widget.get("class"), _property(widget, "text"), _property(widget, "toolTip"))
    return types.SimpleNamespace(**widgets)


def _default(annotation, cls, name):
    if name in cls.__dict__:
        return cls.__dict__[name]
    base = typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation
    if typing.get_origin(base) is list:
        return []
    if base is pathlib.Path:
        return pathlib.Path()  # PathSerializer.default()
    return None  # a node reference


def parameterNodeWrapper(cls):
    """Stand-in for Slicer's decorator: fields with their defaults on top of a real MRML node."""
    fields = typing.get_type_hints(cls, include_extras=True)

    class Wrapped:
        def __init__(self, node) -> None:
            object.__setattr__(self, "parameterNode", node)
            for name, annotation in fields.items():
                object.__setattr__(self, name, _default(annotation, cls, name))

        def __setattr__(self, name, value) -> None:
            object.__setattr__(self, name, value)
            if name in fields:
                self.parameterNode.Modified()

        def AddObserver(self, *args):
            return self.parameterNode.AddObserver(*args)

        def RemoveObserver(self, *args):
            return self.parameterNode.RemoveObserver(*args)

        def connectGui(self, ui):
            return "gui-tag"

        def disconnectGui(self, tag) -> None:
            pass

    Wrapped.__name__ = cls.__name__
    return Wrapped


class ScriptedLoadableModule:
    def __init__(self, parent) -> None:
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None) -> None:
        self.parent = parent or types.SimpleNamespace(isEntered=True)
        self.layout = FakeWidget("layout", "QVBoxLayout")

    def setup(self) -> None:
        pass

    def resourcePath(self, relative: str) -> str:
        return str(self.moduleFolder / "Resources" / relative)


class ScriptedLoadableModuleLogic:
    """Slicer's base: cooperative ``__init__``, a singleton parameter node named after the module."""

    def __init__(self, parent=None) -> None:
        super().__init__()
        self.moduleName = self.__class__.__name__[:-len("Logic")]

    def getParameterNode(self):
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(self.moduleName)
            node.SetModuleName(self.moduleName)
            slicer.mrmlScene.AddNode(node)
        return node


def stubModules(scheduled: list) -> dict:
    """The Qt-only modules, with ``qt.QTimer.singleShot`` queueing callbacks into ``scheduled``."""
    qt = types.ModuleType("qt")
    qt.QTimer = types.SimpleNamespace(singleShot=lambda ms, fn: scheduled.append(fn))
    qt.QTableWidgetItem = str
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    scripted.ScriptedLoadableModule = ScriptedLoadableModule
    scripted.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    scripted.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    scripted.ScriptedLoadableModuleTest = type("ScriptedLoadableModuleTest", (), {})
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = parameterNodeWrapper
    wrapper.Choice = wrapper.WithinRange = lambda *args: args
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr, i18n.translate = (lambda text: text), (lambda context, text: text)
    return {"qt": qt, "slicer.ScriptedLoadableModule": scripted, "slicer.parameterNodeWrapper": wrapper,
            "slicer.i18n": i18n}


def runScheduled(scheduled: list, until, timeout: float = 60.0) -> bool:
    """Run queued timer callbacks (what the Qt event loop does) until ``until()`` holds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until():
            return True
        if scheduled:
            scheduled.pop(0)()
        time.sleep(0.02)
    return until()


def dropModules(names) -> None:
    for name in names:
        sys.modules.pop(name, None)
