"""The core is used from its folder, never pip-installed; what the install plans and the pip argument lists.

Real pip runs these plans in test_install_real_pip.py; here: which core is found, that a child process runs it
even when another medssl is installed, and that every pip call is a list Slicer passes on unchanged.
"""

import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from medssl_slicer_helpers import REPO

from MedSSLLib import bundled_core, install

MODULE_BOOTSTRAP = ('_repository = Path(__file__).resolve().parents[1]  # run from a clone: MedSSLLib is beside '
                    'the module folder\nif (_repository / "MedSSLLib" / "__init__.py").is_file() and '
                    'str(_repository) not in sys.path:\n    sys.path.append(str(_repository))\n')


def copyCore(folder: Path, version: str = "9.9.9") -> Path:
    """A core laid out as MedSSLLib/CMakeLists.txt installs it (pyproject + src/medssl), another version."""
    (folder / "src").mkdir(parents=True)
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8").replace('version = "0.1.0"', f'version = "{version}"')
    (folder / "pyproject.toml").write_text(text, encoding="utf-8")
    shutil.copytree(REPO / "src" / "medssl", folder / "src" / "medssl", ignore=shutil.ignore_patterns("__pycache__"))
    init = folder / "src" / "medssl" / "__init__.py"
    init.write_text(init.read_text(encoding="utf-8").replace('__version__ = "0.1.0"', f'__version__ = "{version}"'))
    return folder


def test_pip_gets_the_cores_requirements_without_torch_or_simpleitk():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert bundled_core.coreRequirements() == declared
    assert install.pipRequirements() == [r for r in declared if not r.startswith(("torch", "SimpleITK"))]
    assert install.noDepsRequirements() == ["dynamic-network-architectures>=0.4"]
    assert not {"medssl", "torch", "simpleitk", "timm"} & {r.split(">")[0].lower() for r in install.pipRequirements()}


def test_the_bundled_core_comes_before_the_clone(tmp_path):
    assert bundled_core.findCoreRoot() == REPO  # this checkout: MedSSLLib/core is not there, the clone is used
    bundled = copyCore(tmp_path / "MedSSLLib" / "core")
    assert bundled_core.findCoreRoot((bundled, REPO)) == bundled
    assert bundled_core.coreVersion(bundled) == "9.9.9"
    assert bundled_core.findCoreRoot((tmp_path / "nothing",)) is None
    assert str(REPO / "src") == sys.path[0] or str(REPO / "src") in sys.path  # MedSSLLib's import activated it
    bundled_core.activate(bundled)
    try:
        assert sys.path[0] == str(bundled / "src")
    finally:
        sys.path.remove(str(bundled / "src"))


def test_a_child_runs_the_core_even_when_another_medssl_is_installed(tmp_path):
    """``-c RUNNER <src>``: sys.path[0], so a stale medssl in site-packages (here on PYTHONPATH) cannot win."""
    core = copyCore(tmp_path / "core")
    stale = tmp_path / "site" / "medssl"
    stale.mkdir(parents=True)
    (stale / "__main__.py").write_text("print('stale medssl')\n")
    env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, *bundled_core.launchArgs(core), "--version"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "medssl 9.9.9"


def test_every_pip_call_is_a_list_that_slicer_passes_on_unchanged():
    plan = install.InstallPlan(None, ["monai>=1.4", "einops>=0.7"], ["dynamic-network-architectures>=0.4"],
                               ["dynamic-network-architectures>=0.4"])
    constraints = "/tmp/a folder with spaces/constraints.txt"
    calls = install.pipCalls(plan, constraints)
    assert calls == [["-c", constraints, "monai>=1.4", "einops>=0.7"],
                     ["--no-deps", "dynamic-network-architectures>=0.4"],
                     ["--force-reinstall", "--no-deps", "dynamic-network-architectures>=0.4"]]
    assert all(type(call) is list for call in calls)  # Slicer: `type(requirements) == list`, a tuple raises
    # what a string would have become (shlex.split in 5.10's pip_install and 5.12's _build_pip_args):
    assert shlex.split(" ".join(calls[0])) != calls[0]


def test_plan_lists_only_what_is_missing_and_repair_reinstalls_the_no_deps_ones(tmp_path, monkeypatch):
    noDeps = tmp_path / "requirements-no-deps.txt"
    noDeps.write_text("# comment\ndynamic-network-architectures>=0.4\nsurely-not-installed-medssl-test>=1\n")
    monkeypatch.setattr(install, "NO_DEPS_FILE", noDeps)
    plan = install.planInstall()
    assert plan.torch is None and plan.packages == [] and plan.reinstall == []  # all installed here
    assert plan.noDeps == ["surely-not-installed-medssl-test>=1"]
    coreLine = f"The MedSSL core (medssl 0.1.0 in {REPO}) is used from there: it is not installed."
    assert plan.describe().splitlines()[-1] == coreLine
    assert not install.isSatisfied("medssl")  # the core's requirements are not complete
    repair = install.planInstall(repair=True)
    assert repair.packages == install.pipRequirements()  # pip sees every requirement and adds what is missing
    assert repair.reinstall == []  # nothing here has lost files (the real-pip test breaks some)
    assert repair.noDeps == ["surely-not-installed-medssl-test>=1"]


def test_the_complete_environment_here_needs_nothing():
    assert install.planInstall().empty and install.isSatisfied("medssl") and install.isSatisfied("medssl>=0.1")
    assert not install.isSatisfied("medssl>=99") and install.installedVersion("medssl") == "0.1.0"
    assert install.isComplete("huggingface-hub>=0.34")  # and what it requires, walked through its metadata
    assert install.constraintLines(("torch", "surely-not-installed-medssl-test")) == ["torch==2.13.0+cpu"]


def test_declined_or_unfinished_installs(monkeypatch):
    calls = []
    plan = install.InstallPlan("torch>=2.3", ["surely-not-installed-medssl-test>=1"])
    declined = install.SlicerInstallers(lambda text, title: False, calls.append, calls.append)
    assert not install.installDependencies(plan, declined) and calls == []
    noTorch = install.SlicerInstallers(lambda text, title: True, lambda requirement: None, calls.append)
    with pytest.raises(RuntimeError, match="PyTorch was not installed; install it from the PyTorch Utils module"):
        install.installDependencies(plan, noTorch)
    pipDidNothing = install.SlicerInstallers(lambda text, title: True, lambda requirement: object(), calls.append)
    with pytest.raises(RuntimeError, match="surely-not-installed-medssl-test>=1 still not installed after pip ran"):
        install.installDependencies(install.InstallPlan(None, ["surely-not-installed-medssl-test>=1"]), pipDidNothing)
    assert calls[0][0] == "-c" and calls[0][2:] == ["surely-not-installed-medssl-test>=1"]


def test_modules_find_medssllib_when_run_from_a_clone():
    """Slicer appends only the module's folder to sys.path; the module adds the clone when MedSSLLib is there."""
    for module in ("MedSSLSegment", "MedSSLTrain"):
        source = (REPO / module / f"{module}.py").read_text(encoding="utf-8")
        assert source.index(MODULE_BOOTSTRAP) < source.index("from MedSSLLib")
        path = [str(REPO / module)]
        fakeSys = type("S", (), {"path": path})
        namespace = {"__file__": str(REPO / module / f"{module}.py"), "Path": Path, "sys": fakeSys}
        exec(MODULE_BOOTSTRAP, namespace)
        assert path == [str(REPO / module), str(REPO)]


def test_slicers_pip_install_is_chosen_by_its_signature(monkeypatch):
    """5.12+: ``slicer.packaging.pip_install`` takes ``requester`` (its progress dialog names MedSSL); 5.10 has no
    ``slicer.packaging`` and ``slicer.util.pip_install(requirements)`` is used. Signatures as in v5.12.0
    packaging.py:517 and v5.10.0 util.py:3991."""
    import types

    import slicer

    received = []

    def pip_install_512(requirements, constraints=None, no_deps_requirements=None, skip_packages=None,
                        blocking=True, show_progress=True, requester=None, parent=None, logCallback=None,
                        completedCallback=None):
        received.append((requirements, requester))

    def pip_install_510(requirements):
        received.append((requirements, None))

    util = types.ModuleType("slicer.util")
    util.pip_install = pip_install_510
    monkeypatch.setattr(slicer, "util", util, raising=False)
    monkeypatch.setitem(sys.modules, "slicer.util", util)
    monkeypatch.setitem(sys.modules, "slicer.packaging", None)  # 5.10: import fails
    assert install._pipInstaller("MedSSLTrain") is pip_install_510
    packaging = types.ModuleType("slicer.packaging")
    packaging.pip_install = pip_install_512
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    install._pipInstaller("MedSSLTrain")(["--no-deps", "x"])
    assert received == [(["--no-deps", "x"], "MedSSLTrain")]


def test_openvino_is_an_optional_last_call_on_x86_only_and_a_failure_is_a_warning(monkeypatch, caplog):
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["openvino"]
    monkeypatch.setattr(install.platform, "machine", lambda: "x86_64")
    assert install.optionalRequirements() == declared  # the extra that `make install` installs
    monkeypatch.setattr(install.platform, "machine", lambda: "arm64")
    assert install.optionalRequirements() == []  # --runtime auto never picks OpenVINO there
    plan = install.InstallPlan(None, ["einops>=0.7"], optional=["surely-not-installed-medssl-test>=1"])
    assert plan.describe().splitlines()[1].endswith("(optional: faster prediction on this CPU; MedSSL works "
                                                    "without it)")
    assert install.InstallPlan(optional=["x>=1"]).empty  # never a reason to ask on its own
    calls = []

    def pip(args):
        calls.append(args)
        if "surely-not-installed-medssl-test>=1" in args:
            raise subprocess.CalledProcessError(1, ["pip", "install", *args])

    installers = install.SlicerInstallers(lambda text, title: True, lambda requirement: object(), pip)
    with caplog.at_level("WARNING"):
        assert install.installDependencies(plan, installers)
    assert calls[-1][0] == "-c" and calls[-1][2:] == ["surely-not-installed-medssl-test>=1"] and len(calls) == 2
    assert "surely-not-installed-medssl-test>=1 could not be installed (CalledProcessError); predictions run " \
           "with torch" in caplog.text
