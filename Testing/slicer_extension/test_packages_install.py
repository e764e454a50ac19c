"""Package listing, weight catalog, command lines and dependency installation (no torch import in Slicer)."""

import importlib
import shutil
import sys
from importlib import metadata
from pathlib import Path

import pytest

pytest.importorskip("slicer")


from medssl_slicer_helpers import REPO  # noqa: E402

from MedSSLLib import catalog, commands, install  # noqa: E402
from MedSSLLib.commands import FinetuneOptions, PredictOptions, finetuneArgs, predictArgs  # noqa: E402
from MedSSLLib.packages import (PackageError, listPackages, medsslHome, modelsDir, nextVersionName,  # noqa: E402
                                packageFolder, readPackage, safeName)
from MedSSLLib.train_logic import TrainLogic  # noqa: E402


def test_home_folder_rule_matches_medssl(monkeypatch, tmp_path):
    from medssl.hub import cache

    monkeypatch.setenv("MEDSSL_HOME", str(tmp_path / "h"))
    assert medsslHome() == cache.medssl_home() and modelsDir() == cache.models_dir()
    monkeypatch.delenv("MEDSSL_HOME")
    assert medsslHome() == cache.medssl_home() == Path.home() / ".medssl"


def test_read_package_labels_terminology_and_provenance(tinyPackage):
    info = readPackage(tinyPackage)
    assert [(l.value, l.name) for l in info.labels] == [(1, "liver"), (2, "spleen")]
    assert info.labels[1].terminology["type"] == ["SCT", "78961009", "Spleen"]
    assert info.channels == ["image"] and info.licence.startswith("Apache-2.0")
    assert "Labels: liver, spleen" in info.summary() and "Backbone: resenc:test" in info.summary()


def test_list_packages_skips_broken_folders(tinyPackage, medsslHome):
    for name in ("b_model", "a_model"):
        shutil.copytree(tinyPackage, modelsDir() / name)
    broken = modelsDir() / "c_broken"
    shutil.copytree(tinyPackage, broken)
    (broken / "metadata.json").write_text("{not json")
    (modelsDir() / "d_unfinished" / "training").mkdir(parents=True)
    assert [p.path.name for p in listPackages()] == ["a_model", "b_model"]
    with pytest.raises(PackageError, match="cannot be read"):
        readPackage(broken)


def test_names():
    assert safeName(" Liver CT (v1) ") == "Liver_CT_v1"
    assert nextVersionName("liver") == "liver_v2" and nextVersionName("liver_v9") == "liver_v10"
    assert packageFolder("my model") == modelsDir() / "my_model"
    with pytest.raises(ValueError):
        safeName("???")


def test_catalog_of_the_installed_medssl_is_read_without_torch(medsslHome):
    path = catalog.catalogPath()
    assert path == REPO / "src" / "medssl" / "hub" / "catalog.json"
    entries = {e.id: e for e in catalog.readCatalog()}
    entry = entries["openmind_resencl_mae"]
    assert entry.sizeBytes > 10**8 and "CC BY" in entry.licence and not entry.downloaded and entry.downloadable
    entry.weightsPath().parent.mkdir(parents=True)
    entry.weightsPath().write_bytes(b"x")
    assert entry.downloaded and "Downloaded to" in entry.describe()
    assert entries["3dino_vit_l"].licenceRequiresAcceptance
    manual = entries["misfm_fmunet_abd1k"]
    assert not manual.downloadable and "by hand" in manual.describe() and len(manual.fileNames) == 2
    (medsslHome / "weights" / manual.id).mkdir(parents=True)
    (medsslHome / "weights" / manual.id / manual.fileNames[1]).write_bytes(b"x")
    assert manual.downloaded and manual.weightsPath().name == manual.fileNames[1]
    assert "MB" in catalog.formatSize(entry.sizeBytes) and catalog.formatSize(None) == "unknown"
    with pytest.raises(ValueError, match="no list of entries"):
        catalog.parseCatalog({"entries": {}})


def test_predict_and_finetune_command_lines(tmp_path):
    args = predictArgs("pkg", ["a.nrrd", "b.nrrd"], "out.seg.nrrd",
                       PredictOptions(device="cuda", overlap=0.625, tta=True, lowMemory=True, uncertainty=True), "u.nrrd")
    assert args == ["predict", "--model", "pkg", "--input", "a.nrrd", "b.nrrd", "--output", "out.seg.nrrd", "--device",
                    "cuda", "--progress", "json", "--overlap", "0.625", "--tta", "--low-memory", "--uncertainty", "u.nrrd"]
    args = finetuneArgs([["t1.nrrd", "t2.nrrd"]], ["l.seg.nrrd"], "out", FinetuneOptions(steps=10, resume=True))
    assert args[args.index("--images") + 1] == "t1.nrrd,t2.nrrd" and args[-3:] == ["--steps", "10", "--resume"]
    with pytest.raises(ValueError, match="comma"):
        predictArgs("pkg", ["a,b.nrrd"], "o.seg.nrrd", PredictOptions())
    with pytest.raises(ValueError, match="overlap"):
        predictArgs("pkg", ["a.nrrd"], "o.seg.nrrd", PredictOptions(overlap=1.0))
    with pytest.raises(ValueError, match="preset"):
        finetuneArgs([["a.nrrd"]], ["l.nrrd"], "o", FinetuneOptions(preset="huge"))


def test_weights_command_lines_match_the_real_cli(realMedssl, medsslHome, tmp_path):
    """Download/import command lines parse in medssl's own CLI; the catalog agrees on what is cached."""
    from medssl.cli.main import build_parser
    from medssl.hub import catalog as coreCatalog
    from medssl.hub.download import cached_file

    from MedSSLLib.commands import weightsDownloadArgs, weightsImportArgs

    parser = build_parser()
    assert parser.parse_args(weightsDownloadArgs("3dino_vit_l", True)).accept_licence
    weightsFile = tmp_path / "w.pt"
    weightsFile.write_bytes(b"x")
    assert parser.parse_args(weightsImportArgs(weightsFile, "voco_b", True)).id == "voco_b"
    ours = {e.id: e for e in catalog.readCatalog()}
    theirs = coreCatalog.entries()
    assert set(ours) == set(theirs)
    for entryId, entry in theirs.items():
        assert ours[entryId].downloadable == entry.downloadable and list(ours[entryId].fileNames) == entry.file_names
        (medsslHome / "weights" / entryId).mkdir(parents=True)
        (medsslHome / "weights" / entryId / entry.file_names[-1]).write_bytes(b"x")
        assert ours[entryId].downloaded and cached_file(entry) == ours[entryId].weightsPath()


def test_medssl_cli_accepts_the_command_lines(realMedssl):
    """Every option the modules pass exists in the real CLI (parsed by its own argument parser)."""
    from medssl.cli.main import build_parser

    parser = build_parser()
    predict = predictArgs("pkg", ["a.nrrd"], "o.seg.nrrd", PredictOptions("cpu", 0.5, True, True, True), "u.nrrd")
    finetune = finetuneArgs([["a.nrrd", "b.nrrd"]], ["l.seg.nrrd"], "out",
                            FinetuneOptions("resenc:tiny", "standard", 5, "auto", True, True, "c.yaml"))
    assert parser.parse_args(predict).tta and parser.parse_args(finetune).resume
    from medssl.inference.runtimes import RUNTIMES

    assert RUNTIMES == commands.RUNTIMES
    for runtime in RUNTIMES:
        chosen = predictArgs("pkg", ["a.nrrd"], "o.seg.nrrd", PredictOptions(runtime=runtime))
        assert parser.parse_args(chosen).runtime == runtime
    with pytest.raises(ValueError, match="runtime"):
        predictArgs("pkg", ["a.nrrd"], "o.seg.nrrd", PredictOptions(runtime="tensorrt"))


def test_requirements_never_list_torch_or_simpleitk(monkeypatch):
    requirements = install.loadRequirements()
    names = [r.split(">")[0].split("=")[0].strip().lower() for r in requirements]
    assert "medssl" in names and "dynamic-network-architectures" in names
    assert not {"torch", "simpleitk", "torchvision"} & set(names)
    monkeypatch.setenv("MEDSSL_CORE_REQUIREMENT", "medssl @ file:///wheels/medssl-0.1.0-py3-none-any.whl")
    assert install.loadRequirements()[0].startswith("medssl @ file:")


def fakePipEnsure(calls):
    """Stands in for slicer.pydeps.pip_ensure: reads what its pip_check reads (req.marker, req.name)."""
    from packaging.requirements import Requirement

    def pipEnsure(requirements, constraints=None, skip_packages=None, prompt_install=True, prompt_restart=True,
                  requester=None, skip_in_testing=True, show_progress=True):
        assert isinstance(requirements, list) and all(isinstance(r, Requirement) for r in requirements)
        assert all(r.marker is None and r.name for r in requirements)
        calls.append(("ensure", [str(r) for r in requirements],
                      {"skip_packages": skip_packages, "prompt_install": prompt_install, "requester": requester}))

    return pipEnsure


def test_install_plan_and_one_confirmation():
    assert install.isSatisfied("numpy>=1.0") and not install.isSatisfied("numpy>=999")
    assert not install.isSatisfied("surely-not-installed-package")
    assert install.planInstall(["numpy>=1.0"]).empty  # torch 2.13 here satisfies torch>=2.3
    plan = install.planInstall(["numpy>=999", "numpy>=1.0"])
    assert plan.torch is None and plan.packages == ["numpy>=999"] and plan.reinstall == []
    calls = []
    installers = install.SlicerInstallers(
        confirm=lambda text, title: calls.append(("confirm", text)) or True,
        installTorch=lambda req: calls.append(("torch", req)) or object(),
        pipInstall=lambda req: calls.append(("pip", req)),
        pipEnsure=fakePipEnsure(calls))
    assert install.installDependencies(install.InstallPlan("torch>=2.3", ["medssl>=0.1.0"]), installers, "MedSSLTrain")
    assert [c[0] for c in calls] == ["confirm", "torch", "ensure"]
    assert "torch>=2.3" in calls[0][1] and "medssl>=0.1.0" in calls[0][1]
    assert calls[1] == ("torch", ">=2.3")
    assert calls[2][1] == ["medssl>=0.1.0"] and calls[2][2]["prompt_install"] is False
    assert calls[2][2]["requester"] == "MedSSLTrain"
    assert {"torch", "SimpleITK", "timm"} <= set(calls[2][2]["skip_packages"])


class HiddenMetadata:
    """``importlib.metadata`` as a Slicer sees it where the ``hidden`` distributions are not installed."""

    PackageNotFoundError = metadata.PackageNotFoundError

    def __init__(self, hidden):
        self.hidden = set(hidden)

    def _check(self, name):
        if name.lower().replace("_", "-") in self.hidden:
            raise metadata.PackageNotFoundError(name)

    def version(self, name):
        self._check(name)
        return metadata.version(name)

    def requires(self, name):
        self._check(name)
        return metadata.requires(name)


def test_dialog_lists_what_medssl_pulls_in_before_it_is_installed(monkeypatch):
    """Before medssl is installed its requirements come from the resource file; torch and SimpleITK stay out."""
    monkeypatch.setattr(install, "metadata", HiddenMetadata({"medssl", "monai", "safetensors", "einops"}))
    plan = install.planInstall(["medssl>=0.1.0", "dynamic-network-architectures>=0.4"])
    assert plan.packages == ["medssl>=0.1.0"]  # dynamic-network-architectures is installed here
    assert plan.dependencies == [("monai>=1.4", "medssl"), ("safetensors>=0.4", "medssl"), ("einops>=0.7", "medssl")]
    text = plan.describe()
    assert "- medssl>=0.1.0\n" in text and "- monai>=1.4 (required by medssl)" in text
    assert "einops>=0.7 (required by medssl)" in text and "torch" not in text and "SimpleITK" not in text
    calls = []
    installers = install.SlicerInstallers(lambda t, title: calls.append(t) or True, calls.append, calls.append,
                                          fakePipEnsure(calls))
    install.installDependencies(plan, installers)
    assert "monai>=1.4 (required by medssl)" in calls[0]
    assert calls[1][1] == ["medssl>=0.1.0"]  # pip_ensure resolves the dependencies itself


def test_a_missing_requirement_of_an_installed_package_is_installed(monkeypatch):
    monkeypatch.setattr(install, "metadata", HiddenMetadata({"einops"}))
    plan = install.planInstall(["medssl>=0.1.0", "dynamic-network-architectures>=0.4"])
    assert plan.packages == ["einops>=0.7"] and plan.dependencies == [] and not plan.empty


def test_medssl_requirements_resource_matches_pyproject():
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert install.readRequirementLines(install.MEDSSL_REQUIREMENTS_FILE) == declared
    installed = [r for r in metadata.requires("medssl") if "extra ==" not in r]
    assert installed == declared, "the installed medssl is older than pyproject.toml: reinstall it"


def test_repair_reinstalls_medssl_without_its_dependencies():
    plan = install.planInstall(["medssl>=0.1.0", "numpy>=999"], repair=True)
    assert plan.torch is None and plan.packages == ["numpy>=999"] and plan.reinstall == ["medssl>=0.1.0"]
    calls = []
    installers = install.SlicerInstallers(lambda t, title: calls.append(t) or True, calls.append, calls.append)
    assert install.installDependencies(plan, installers)
    assert "medssl>=0.1.0 (reinstalled" in calls[0]
    assert calls[1:] == ["--force-reinstall --no-deps medssl>=0.1.0", "--no-deps numpy>=999"]


def test_declined_installation_installs_nothing():
    calls = []
    installers = install.SlicerInstallers(lambda t, title: False, lambda r: calls.append(r), calls.append)
    assert not install.installDependencies(install.InstallPlan("torch>=2.3", ["medssl"]), installers)
    assert calls == []


def test_selective_pip_fallback_skips_torch_and_simpleitk():
    """Older Slicer (no pip_ensure): --no-deps install, then own requirements minus the skipped ones."""
    calls = []
    installers = install.SlicerInstallers(lambda t, title: True, lambda r: object(), calls.append, None)
    install.installDependencies(install.InstallPlan(None, ["medssl>=99"]), installers)
    assert calls == ["--no-deps medssl>=99"]  # medssl's own requirements are installed here, torch is skipped


def writeDistribution(site: Path, name: str, requires=()):
    """What pip leaves behind: ``<name>-1.0.dist-info/METADATA``."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0", *[f"Requires-Dist: {r}" for r in requires]]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


def test_pip_fallback_reads_the_metadata_pip_just_wrote(tmp_path, monkeypatch):
    """The walk sees a package pip installed a moment ago (caches invalidated) and installs its requirements."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    calls = []
    realInvalidate = importlib.invalidate_caches
    monkeypatch.setattr(importlib, "invalidate_caches", lambda: calls.append("invalidate") or realInvalidate())

    def pipInstall(args):
        calls.append(args)
        name = args.split()[-1].split(">")[0]
        writeDistribution(site, name, ["medssl-test-dep>=1.0", "torch>=2.3", "pytest>=7; extra == 'dev'"]
                          if name == "medssl-test-plugin" else [])

    installers = install.SlicerInstallers(lambda t, title: True, lambda r: object(), pipInstall, None)
    install.installDependencies(install.InstallPlan(None, ["medssl-test-plugin>=1.0"]), installers)
    assert calls == ["--no-deps medssl-test-plugin>=1.0", "invalidate", "--no-deps medssl-test-dep>=1.0", "invalidate"]
    failing = install.SlicerInstallers(lambda t, title: True, lambda r: object(), lambda args: None, None)
    with pytest.raises(RuntimeError, match="medssl-other-plugin is still not installed after pip ran"):
        install.installDependencies(install.InstallPlan(None, ["medssl-other-plugin"]), failing)


def test_pip_ensure_is_found_in_slicer_pydeps_then_slicer_packaging(monkeypatch):
    import types

    def module(name, function=None):
        m = types.ModuleType(name)
        if function is not None:
            m.pip_ensure = function
        return m

    def current(requirements, **kw):
        return "pydeps"

    def earlier(requirements, **kw):
        return "packaging"

    monkeypatch.delitem(sys.modules, "slicer.pydeps", raising=False)
    monkeypatch.delitem(sys.modules, "slicer.packaging", raising=False)
    assert install.findPipEnsure() is None  # slicer-core: neither exists, as in Slicer < 5.11
    monkeypatch.setitem(sys.modules, "slicer.packaging", module("slicer.packaging", earlier))
    assert install.findPipEnsure() is earlier
    monkeypatch.setitem(sys.modules, "slicer.pydeps", module("slicer.pydeps", current))
    assert install.findPipEnsure() is current
    monkeypatch.setitem(sys.modules, "slicer.pydeps", module("slicer.pydeps"))  # a module without pip_ensure
    assert install.findPipEnsure() is earlier


def test_diagnostics_from_the_real_medssl_info(realMedssl):
    job = TrainLogic(realMedssl).runMedSSL(["info", "--json"], wait=True, timeout=120)
    info = install.parseInfo(job.log)
    text = install.formatDiagnostics(info)
    assert info["torch"].startswith("2.") and f"torch {info['torch']}" in text
    assert "CUDA available: no" in text and "GPU: none visible to torch" in text
    assert "medssl 0.1.0" in install.basicDiagnostics() and sys.version.split()[0] in install.basicDiagnostics()


def test_backbone_choices(tinyPackage):
    entries = catalog.parseCatalog({"entries": [{"id": "voco_b", "title": "VoCo-B", "size_bytes": 2_000_000,
                                                 "licence": "Apache-2.0", "file_name": "voco_b.pt"}]})
    choices = catalog.backboneChoices([readPackage(tinyPackage)], entries)
    assert [c.value for c in choices] == ["voco_b", *catalog.RANDOM_INIT_BACKBONES, str(tinyPackage)]
    assert choices[0].title == "VoCo-B (voco_b)" and "2.0 MB" in choices[0].description
    assert choices[-1].entry is None and "Labels: liver, spleen" in choices[-1].description


def _bundle_core(folder: Path, version: str = "0.1.0") -> Path:
    """The layout MedSSLLib/CMakeLists.txt installs as MedSSLLib/core (pyproject, README, LICENSE, src/medssl)."""
    core = folder / "core"
    (core / "src").mkdir(parents=True)
    for name in ("README.md", "LICENSE", "NOTICE"):
        shutil.copy(REPO / name, core / name)
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    (core / "pyproject.toml").write_text(text.replace('version = "0.1.0"', f'version = "{version}"', 1))
    shutil.copytree(REPO / "src" / "medssl", core / "src" / "medssl", ignore=shutil.ignore_patterns("__pycache__"))
    return core


def test_cmake_bundles_every_file_the_core_needs():
    text = (REPO / "MedSSLLib" / "CMakeLists.txt").read_text(encoding="utf-8")
    files = text.split("set(MEDSSL_CORE_FILES", 1)[1].split(")", 1)[0].split()
    assert set(files) == {"pyproject.toml", "README.md", "LICENSE", "NOTICE"}
    assert all((REPO / f).is_file() for f in files) and "src/medssl" in text and "MedSSLLib/core" in text


def test_bundled_core_is_the_medssl_requirement(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDSSL_CORE_REQUIREMENT", raising=False)
    assert install.bundledCoreVersion() is None  # a source checkout bundles nothing: PyPI's medssl line is kept
    core = _bundle_core(tmp_path)
    monkeypatch.setattr(install, "BUNDLED_CORE", core)
    requirement = install.loadRequirements()[0]
    assert requirement == f"medssl @ {core.resolve().as_uri()}"
    assert install.isSatisfied(requirement)  # the medssl installed here is 0.1.0, as bundled
    (core / "pyproject.toml").write_text((core / "pyproject.toml").read_text().replace('"0.1.0"', '"0.2.0"', 1))
    assert install.bundledCoreVersion() == "0.2.0"
    assert not install.isSatisfied(requirement)  # an updated extension reinstalls its core
    plan = install.planInstall()
    assert plan.packages[0] == requirement
    assert "- medssl 0.2.0 (the MedSSL core, shipped with this extension)" in plan.describe().splitlines()


@pytest.mark.slow
def test_bundled_core_builds_a_wheel_with_its_data_files(tmp_path):
    """pip can install the bundled folder: it builds, and the catalog and configs travel with the code."""
    import subprocess
    import zipfile

    core = _bundle_core(tmp_path)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path / "wheels"), str(core)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel, = (tmp_path / "wheels").glob("medssl-0.1.0-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"medssl/hub/catalog.json", "medssl/cli/main.py", "medssl/configs/finetune/quick.yaml"} <= names
