"""First use and repair with real pip, through Slicer 5.10's and 5.12+'s own pip_install argument handling.

A clean interpreter (a new venv with only what a fresh Slicer and the PyTorch extension have: pip, packaging,
numpy, SimpleITK, torch; no medssl, none of its requirements) runs MedSSLLib's install from a clone (module
paths) and from the unpacked release zip; pip can reach only a local folder of wheels repacked from this
environment (no network). Each test passes only if, afterwards, the bundled medssl version imports there, in
the process and in the child process the modules start, with all its requirements.
"""

import json
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import clean_python
from medssl_slicer_helpers import REPO
from slicer_pip import _execute_python_module, install_one_args_512, pip_install_510

from MedSSLLib import bundled_core, install

sys.path.insert(0, str(REPO / "Utilities"))
import slicer_zip  # noqa: E402

HERE = Path(__file__).resolve().parent
CHECK = """
import json, subprocess, sys
withChild = sys.argv.pop(1) == "child"
sys.path.extend(sys.argv[1:])
from MedSSLLib import bundled_core
import medssl, monai, huggingface_hub, safetensors, einops, yaml, PIL, tqdm, dynamic_network_architectures
child = subprocess.run([sys.executable, *bundled_core.launchArgs(), "info", "--json"], capture_output=True,
                       text=True) if withChild else None
print(json.dumps({"version": medssl.__version__, "file": medssl.__file__,
                  "child": child.stdout.strip().splitlines() if child else [],
                  "child_error": child and child.stderr[-1500:]}))
"""


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wheelhouse")
    clean_python.buildWheelhouse(install.pipRequirements(), folder, install.noDepsRequirements())
    return folder


def _run(python: Path, args, env, timeout=300) -> subprocess.CompletedProcess:
    """Run in an empty folder: ``-c`` puts the working folder on sys.path, the repository must not be there."""
    out = subprocess.run([str(python), *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout,
                         cwd=python.parents[2])
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    return out


def _lastJson(out: subprocess.CompletedProcess) -> dict:
    return json.loads(out.stdout.strip().splitlines()[-1])


def _unpackZip(tmp_path: Path) -> Path:
    archive = slicer_zip.buildZip(tmp_path / "dist")
    with zipfile.ZipFile(archive) as handle:
        handle.extractall(tmp_path / "unzipped")
    return tmp_path / "unzipped" / f"MedSSL-{slicer_zip.version()}"


@pytest.mark.slow  # about 25 s each on an idle machine: a new venv, two real pip runs
@pytest.mark.parametrize("slicer, route, withTorch", [("5.10", "clone", True), ("5.12", "zip", False)])
def test_first_use_then_repair_installs_the_requirements_and_the_bundled_core_imports(slicer, route, withTorch,
                                                                                      wheelhouse, tmp_path):
    """5.10 from a clone with the PyTorch extension's torch already there; 5.12 from the zip on a Slicer without
    torch: first use installs it (PyTorchUtils stand-in), then pins it for pip."""
    python, torchFolder = clean_python.makeCleanPython(tmp_path, withTorch)
    temp = tmp_path / "Temp with spaces"  # the constraints file goes here, as under "C:/Users/First Last" on Windows
    temp.mkdir()
    env = {**clean_python.offlinePipEnvironment(wheelhouse), "HOME": str(tmp_path), "MEDSSL_HOME": str(tmp_path / "h"),
           "TMPDIR": str(temp), "TEMP": str(temp), "TMP": str(temp)}
    if route == "clone":  # Slicer appends the module folder; the module adds the clone (test_install_plan.py)
        folders, core = [REPO / "MedSSLSegment", REPO], REPO
    else:  # one module path: the unzipped folder holds both modules, MedSSLLib and MedSSLLib/core
        folders = [_unpackZip(tmp_path)]
        core = folders[0] / "MedSSLLib" / "core"
    absent = subprocess.run([str(python), "-c", "import monai"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert absent.returncode != 0 and "No module named 'monai'" in absent.stderr  # a clean interpreter

    torchArgs = [] if withTorch else ["--torch-from", torchFolder]
    first = _lastJson(_run(python, [HERE / "install_driver.py", "--slicer", slicer, *torchArgs, *folders], env))
    assert first["torch"] == ([] if withTorch else [install.TORCH_REQUIREMENT])
    assert f"torch=={metadata.version('torch')}" in first["constraints"][0]  # pip may not replace that torch
    assert f"numpy=={metadata.version('numpy')}" in first["constraints"][0]
    assert first["plan"]["core"] == f"medssl {bundled_core.coreVersion(core)} in {core}"
    missing = [r for r in install.pipRequirements() if not r.startswith("numpy")]  # numpy: Slicer has it
    assert first["plan"]["packages"] == missing and first["empty_after"]
    assert first["calls"][0][0] == "-c" and first["calls"][0][2:] == missing
    optional = install.optionalRequirements()  # OpenVINO on x86: its wheels are not in the wheelhouse, pip fails
    assert first["plan"]["optional"] == optional and first["after"]["optional"] == optional
    assert first["calls"][1:] == [["--no-deps", "dynamic-network-architectures>=0.4"]] + (
        [["-c", first["calls"][0][1], *optional]] if optional else [])
    checked = _lastJson(_run(python, ["-c", CHECK, "child", *folders], env))
    assert checked["version"] == bundled_core.coreVersion(core) == "0.1.0"
    assert Path(checked["file"]).is_relative_to(core / "src"), checked["file"]
    info = json.loads(checked["child"][-1])  # the child process the modules start: `medssl info --json`
    assert info["medssl"] == "0.1.0" and info["torch"].startswith("2."), checked["child_error"]

    site = clean_python.sitePackages(python)
    (site / "dynamic_network_architectures" / "__init__.py").unlink()  # broken, its metadata still says installed
    (site / "einops").rename(site / "einops-moved")  # a requirement gone
    repair = _lastJson(_run(python, [HERE / "install_driver.py", "--slicer", slicer, "--repair", *folders], env))
    assert repair["plan"]["packages"] == install.pipRequirements()  # pip sees them all and adds what is missing
    assert sorted(repair["plan"]["reinstall"]) == [f"{name}=={metadata.version(name)}"
                                                   for name in ("dynamic-network-architectures", "einops")]
    reinstalled = sorted(repair["plan"]["reinstall"])
    assert sorted(repair["calls"][1:len(repair["calls"]) - bool(optional)]) == [
        ["--force-reinstall", "--no-deps", r] for r in reinstalled]
    assert repair["empty_after"]
    assert _lastJson(_run(python, ["-c", CHECK, "no-child", *folders], env))["version"] == "0.1.0"


def test_the_old_single_string_is_split_by_slicer_and_refused_by_real_pip(tmp_path, monkeypatch, capsys):
    """What MedSSL passed before: Slicer 5.10 shlex-splits it and pip gets ``medssl``, ``@`` and the URL."""
    for key, value in clean_python.offlinePipEnvironment(tmp_path).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(subprocess.CalledProcessError) as failed:
        pip_install_510(f"--no-deps medssl @ {REPO.as_uri()}")
    assert failed.value.cmd[-4:] == ["--no-deps", "medssl", "@", REPO.as_uri()]
    assert "Invalid requirement: '@'" in failed.value.output
    with pytest.raises(ValueError, match="must be string or list"):
        pip_install_510(("--no-deps", "x"))  # a tuple is refused by Slicer: MedSSL passes lists
    assert os.environ["PIP_NO_INDEX"] == "1"


def test_pip_ensure_would_drop_the_url_and_look_for_medssl_on_the_index(tmp_path, monkeypatch):
    """Why MedSSL does not use 5.12's pip_ensure/skip_packages for its core: the URL never reaches pip."""
    for key, value in clean_python.offlinePipEnvironment(tmp_path).items():
        monkeypatch.setenv(key, value)
    args = install_one_args_512(f"medssl @ {REPO.as_uri()}")
    assert args == ["install", "medssl", "--no-deps"]
    with pytest.raises(subprocess.CalledProcessError) as failed:
        _execute_python_module("pip", [*args, "--target", str(tmp_path / "target")])
    assert "No matching distribution found for medssl" in failed.value.output
