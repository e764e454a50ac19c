"""The module code and its .ui files agree (the widgets cannot be built without Qt, so this is checked statically).

- every ``ui.<name>`` (also through ``getattr(self.ui, ...)``) used by a module, its panel
  (MedSSLLib/segment_widget.py, train_widget.py and the sections they use: `PANELS`) or MedSSLLib/slicerui.py exists in the module's .ui file, with a widget class that has the attribute used;
- every ``SlicerParameterName`` names a field of the module's ``@parameterNodeWrapper`` class, with a widget
  class that Slicer's GUI connector for that field type accepts (``guiConnectors.py``);
- every MRML widget receives the scene through a ``mrmlSceneChanged`` connection.
"""

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = {"MedSSLSegment": REPO / "MedSSLSegment", "MedSSLTrain": REPO / "MedSSLTrain"}
SHARED_UI_CODE = REPO / "MedSSLLib" / "slicerui.py"
LIB = REPO / "MedSSLLib"
PANELS = {"MedSSLSegment": [LIB / "segment_widget.py", LIB / "folder_widget.py", LIB / "share_widget.py"],
          "MedSSLTrain": [LIB / "train_widget.py", LIB / "rank_widget.py", LIB / "share_widget.py"]}

BUTTONS = {"QPushButton", "QToolButton", "QCheckBox", "QRadioButton", "ctkCheckablePushButton"}
TEXT_EDITS = {"QPlainTextEdit"}
ANY = None  # a QWidget property every widget has
ATTRIBUTE_CLASSES = {
    "enabled": ANY, "visible": ANY, "toolTip": ANY, "blockSignals": ANY,
    "text": BUTTONS | {"QLabel", "QLineEdit"},
    "value": {"QProgressBar", "QSpinBox", "ctkSliderWidget"},
    "setPlainText": TEXT_EDITS, "appendPlainText": TEXT_EDITS, "ensureCursorVisible": TEXT_EDITS,
    "clear": TEXT_EDITS | {"QComboBox", "QLineEdit"},
    "addItem": {"QComboBox"}, "currentIndex": {"QComboBox", "QTableWidget"},
    "setRowCount": {"QTableWidget"}, "setItem": {"QTableWidget"}, "currentRow": {"QTableWidget"},
    "setMRMLPlotViewNode": {"qMRMLPlotWidget"},
}
SIGNAL_CLASSES = {"clicked(bool)": BUTTONS, "currentIndexChanged(int)": {"QComboBox"}}
CONNECTOR_CLASSES = {  # Slicer's parameterNodeWrapper/guiConnectors.py canRepresent() rules
    "bool": {"QCheckBox", "ctkCheckBox", "QPushButton", "ctkCheckablePushButton"},
    "int": {"QSlider", "QSpinBox", "QDoubleSpinBox", "ctkSliderWidget", "ctkDoubleSpinBox"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget", "qMRMLSliderWidget", "ctkDoubleSlider", "ctkDoubleSpinBox"},
    "str": {"QLineEdit", "QLabel", "QTextEdit", "QComboBox", "ctkComboBox"},
    "Path": {"ctkPathLineEdit", "ctkDirectoryButton"},
    "node": {"qMRMLNodeComboBox"},
}


def uiWidgets(moduleName):
    """{widget name: class} and {widget name: SlicerParameterName} of a module's .ui file."""
    root = ET.parse(MODULES[moduleName] / "Resources" / "UI" / f"{moduleName}.ui").getroot()
    classes = {w.get("name"): w.get("class") for w in root.iter("widget")}
    params = {}
    for w in root.iter("widget"):
        for p in w.findall("property"):
            if p.get("name") == "SlicerParameterName":
                params[w.get("name")] = p.find("string").text
    return root, classes, params


def _isUi(node) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "ui") or (isinstance(node, ast.Name) and node.id == "ui")


def _parentAttribute(parents, node):
    parent = parents.get(node)
    return parent.attr if isinstance(parent, ast.Attribute) and parent.value is node else None


def _dynamicNames(getattrCall, loops):
    """Names of ``getattr(ui, f"prefix{c}")`` (prefix0..3) or ``getattr(ui, name)`` with name from a literal loop."""
    arg = getattrCall.args[1]
    if isinstance(arg, ast.JoinedStr):
        prefix = "".join(v.value for v in arg.values if isinstance(v, ast.Constant))
        return [f"{prefix}{c}" for c in range(4)]
    if isinstance(arg, ast.Name) and arg.id in loops:
        return loops[arg.id]
    raise AssertionError(f"cannot resolve getattr(ui, {ast.dump(arg)}) at line {getattrCall.lineno}")


def _literalLoops(tree):
    """``for name, slot in (("aButton", ...), ...)`` -> {"name": ["aButton", ...]}."""
    loops = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple) and isinstance(node.target, ast.Tuple):
            first = node.target.elts[0]
            names = [e.elts[0].value for e in node.iter.elts if isinstance(e, ast.Tuple) and isinstance(e.elts[0], ast.Constant)]
            if isinstance(first, ast.Name) and names:
                loops[first.id] = names
    return loops


def uiUsages(path: Path):
    """[(widget name, attribute or None, signal or None, line)] for every ui access in a Python file."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    loops, usages = _literalLoops(tree), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _isUi(node.value):
            usages.append((node.attr, node))
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "getattr" and _isUi(node.args[0]):
            usages += [(name, node) for name in _dynamicNames(node, loops)]
    result = []
    for name, node in usages:
        attribute = _parentAttribute(parents, node)
        call = parents.get(parents.get(node))
        signal = call.args[0].value if attribute == "connect" and isinstance(call, ast.Call) and call.args else None
        result.append((name, attribute, signal, node.lineno))
    return result


def parameterFields(moduleName):
    """{field: annotation source} of the module's @parameterNodeWrapper class."""
    tree = ast.parse((MODULES[moduleName] / f"{moduleName}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", "") == "parameterNodeWrapper" for d in node.decorator_list):
            return {s.target.id: ast.unparse(s.annotation) for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError(f"{moduleName} has no @parameterNodeWrapper class")


def connectorKind(annotation: str) -> str:
    base = re.sub(r"^Annotated\[(\w+),.*\]$", r"\1", annotation)
    if base.startswith("vtkMRML"):
        return "node"
    return base


@pytest.mark.parametrize("moduleName", list(MODULES))
def test_every_ui_name_exists_with_a_compatible_class(moduleName):
    _, classes, _ = uiWidgets(moduleName)
    problems = []
    for source in (MODULES[moduleName] / f"{moduleName}.py", *PANELS[moduleName], SHARED_UI_CODE):
        for name, attribute, signal, line in uiUsages(source):
            where = f"{source.name}:{line} ui.{name}"
            if name not in classes:
                problems.append(f"{where}: no widget named {name} in {moduleName}.ui")
                continue
            allowed = SIGNAL_CLASSES.get(signal) if attribute == "connect" else ATTRIBUTE_CLASSES.get(attribute, "unknown")
            if allowed == "unknown" and attribute is not None:
                problems.append(f"{where}.{attribute}: attribute not in this test's table; add it")
            elif allowed not in (ANY, "unknown") and classes[name] not in allowed:
                problems.append(f"{where}.{attribute or signal}: {classes[name]} is not one of {sorted(allowed)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("moduleName", list(MODULES))
def test_parameter_names_match_fields_and_connectors(moduleName):
    _, classes, params = uiWidgets(moduleName)
    fields = parameterFields(moduleName)
    assert params, "the .ui file binds no widget to the parameter node"
    for widgetName, parameter in params.items():
        assert parameter in fields, f"{widgetName} is bound to {parameter}, which the parameter node lacks"
        kind = connectorKind(fields[parameter])
        assert classes[widgetName] in CONNECTOR_CLASSES[kind], f"{widgetName}: {classes[widgetName]} cannot show {kind}"
        if classes[widgetName] in ("QComboBox", "ctkComboBox"):
            assert "Choice(" in fields[parameter], f"{parameter}: a combo box needs a Choice annotation"
        if classes[widgetName] == "ctkSliderWidget":
            assert "WithinRange(" in fields[parameter], f"{parameter}: a slider needs a WithinRange annotation"
    assert len(set(params.values())) == len(params), "two widgets are bound to the same parameter"


@pytest.mark.parametrize("moduleName", list(MODULES))
def test_mrml_widgets_receive_the_scene(moduleName):
    root, classes, _ = uiWidgets(moduleName)
    receivers = {c.find("receiver").text for c in root.iter("connection")
                 if c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)"}
    mrmlWidgets = {name for name, cls in classes.items() if cls.startswith("qMRML") and cls != "qMRMLWidget"}
    assert mrmlWidgets and mrmlWidgets <= receivers, mrmlWidgets - receivers
    assert root.find("widget").get("class") == "qMRMLWidget"


def test_the_checker_finds_a_missing_widget(tmp_path):
    """The usage scanner sees attribute, getattr-prefix and literal-loop accesses (so the checks can fail)."""
    source = tmp_path / "m.py"
    source.write_text("def f(self, ui):\n    self.ui.aButton.connect('clicked(bool)', f)\n"
                      "    getattr(self.ui, f'label{c}').text = ''\n"
                      "    for name, slot in (('bButton', f),):\n        getattr(self.ui, name).enabled = True\n")
    found = {(n, a, s) for n, a, s, _ in uiUsages(source)}
    assert ("aButton", "connect", "clicked(bool)") in found and ("label3", "text", None) in found
    assert ("bButton", "enabled", None) in found
