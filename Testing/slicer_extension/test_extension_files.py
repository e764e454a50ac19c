"""Extension packaging: CMake files, the Extensions Index entry (peers.md section 11) and import hygiene."""

import ast
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = ("MedSSLSegment", "MedSSLTrain")
# slicer-extension-catalog-entry-schema-v1.0.1.json: required and allowed properties
SCHEMA_REQUIRED = {"$schema", "category", "scm_url"}
SCHEMA_PROPERTIES = SCHEMA_REQUIRED | {"scm_revision", "scm_type", "build_dependencies", "build_subdirectory", "enabled",
                                       "tier"}
ACCEPTED_CATEGORIES = {"Active Learning", "Analysis", "Segmentation", "Quantification", "Utilities"}  # subset
TOP_LEVEL_ALLOWED = {"__future__", "ast", "dataclasses", "importlib", "json", "logging", "math", "os", "pathlib",
                     "platform", "queue", "re", "shutil", "signal", "subprocess", "sys", "tempfile", "threading",
                     "time", "typing", "numpy", "slicer", "vtk", "qt", "ctk", "MedSSLLib"}


def cmakeSet(text: str, name: str) -> str:
    match = re.search(rf'set\s*\({name}\s+"([^"]*)"\s*\)', text)
    assert match, f"{name} is not set"
    return match.group(1)


def test_root_cmakelists_has_the_extension_fields():
    text = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"project\s*\(\s*MedSSL\s*\)", text)
    for field in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION"):
        assert cmakeSet(text, field).strip()
    assert cmakeSet(text, "EXTENSION_CATEGORY") == "Segmentation"
    assert re.search(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', text)  # the Index CI's own patterns
    assert re.search(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', text)
    for url in [cmakeSet(text, "EXTENSION_ICONURL")] + cmakeSet(text, "EXTENSION_SCREENSHOTURLS").split():
        assert url.startswith("https://raw.githubusercontent.com/") and "?" not in url
    icon = REPO / cmakeSet(text, "EXTENSION_ICONURL").split("/main/", 1)[1]
    header = icon.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", header[16:24]) == (128, 128)
    for url in cmakeSet(text, "EXTENSION_SCREENSHOTURLS").split():  # each screenshot is a PNG in this repository
        assert (REPO / url.split("/main/", 1)[1]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any((REPO / name).is_file() for name in ("LICENSE", "LICENSE.txt", "LICENCE", "COPYING"))  # rule B.7
    for sub in ("MedSSLLib",) + MODULES:
        assert re.search(rf"add_subdirectory\({sub}\)", text)
    assert "include(${Slicer_EXTENSION_GENERATE_CONFIG})" in text and "include(${Slicer_EXTENSION_CPACK})" in text


def test_index_entry_follows_the_catalog_rules():
    raw = (REPO / "MedSSL.json").read_bytes()
    assert b"\r" not in raw, "the Index requires LF line endings"
    entry = json.loads(raw)
    assert SCHEMA_REQUIRED <= set(entry) <= SCHEMA_PROPERTIES
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert entry["category"] in ACCEPTED_CATEGORIES and entry["scm_url"].startswith("https://github.com/")
    assert entry["scm_url"].rsplit("/", 1)[1].startswith("Slicer"), "the repository name should start with Slicer"
    assert entry["scm_revision"] == "main" and entry["tier"] in (1, 3, 5)
    depends = cmakeSet((REPO / "CMakeLists.txt").read_text(), "EXTENSION_DEPENDS").split()
    assert entry["build_dependencies"] == depends == ["PyTorch"]


def listed(cmakeText: str, variable: str) -> list:
    match = re.search(rf"set\({variable}\s+(.*?)\)", cmakeText, re.S)
    return match.group(1).split()


def test_every_library_file_is_packaged():
    text = (REPO / "MedSSLLib" / "CMakeLists.txt").read_text()
    scripts = listed(text, "MEDSSLLIB_PYTHON_SCRIPTS")
    assert sorted(scripts) == sorted(p.name for p in (REPO / "MedSSLLib").glob("*.py"))
    for resource in listed(text, "MEDSSLLIB_PYTHON_RESOURCES"):
        assert (REPO / "MedSSLLib" / resource).is_file()
    assert "INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}" in text
    assert "${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/MedSSLLib" in text


def test_module_cmakelists_list_existing_files():
    for module in MODULES:
        text = (REPO / module / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", module)
        assert f"set(MODULE_NAME {module})" in (REPO / module / "CMakeLists.txt").read_text()
        for item in listed(text, "MODULE_PYTHON_SCRIPTS") + listed(text, "MODULE_PYTHON_RESOURCES"):
            assert (REPO / module / item).is_file(), f"{module}: {item} is listed but missing"
        assert "WITH_GENERIC_TESTS" in text  # peers.md section 11, rule B.9
        assert re.search(r"if\(BUILD_TESTING\)\s*(#[^\n]*\n\s*)*slicer_add_python_unittest\(SCRIPT "
                         + module + r"\.py\)\s*endif\(\)", text)


def topLevelImports(path: Path) -> set:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_heavy_imports_at_file_scope():
    files = [REPO / m / f"{m}.py" for m in MODULES] + sorted((REPO / "MedSSLLib").glob("*.py"))
    for path in files:
        extra = topLevelImports(path) - TOP_LEVEL_ALLOWED
        assert not extra, f"{path.name} imports {extra} at file scope; import them inside functions"


def test_importing_the_library_loads_neither_torch_nor_medssl():
    pytest.importorskip("slicer")  # nodeio and curves need slicer-core
    qtOnly = ("__init__", "slicerui", "segment_widget", "train_widget", "share_widget", "folder_widget",
              "rank_widget")  # the panels: Qt, inside Slicer only
    modules = [p.stem for p in (REPO / "MedSSLLib").glob("*.py") if p.stem not in qtOnly]
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
            + "".join(f"import MedSSLLib.{m}\n" for m in modules)
            + "bad = [m for m in ('torch', 'medssl', 'monai', 'packaging') if m in sys.modules]\n"
            + "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_module_files_stay_small():
    for path in [REPO / m / f"{m}.py" for m in MODULES] + sorted((REPO / "MedSSLLib").glob("*.py")):
        assert len(path.read_text().splitlines()) <= 410, f"{path.name} is too long"


def test_module_files_and_scripting_snippets_compile():
    for path in [REPO / m / f"{m}.py" for m in MODULES] + [REPO / "Testing" / "slicer_extension" / "fake_medssl.py"]:
        compile(path.read_text(), str(path), "exec")
    readme = (REPO / "MedSSLLib" / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(snippets) == 3
    for snippet in snippets:
        compile(snippet, "README.md", "exec")
