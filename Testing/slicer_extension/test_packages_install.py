"""Package listing, weight catalog, command lines and diagnostics (no torch import in Slicer).

The dependency installation is tested with real pip in test_install_real_pip.py and test_install_plan.py."""

import shutil
import sys
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
    from medssl import home as cache

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


def test_every_offered_preset_is_one_the_core_reads(realMedssl):
    """MedSSL Train's presets are ``medssl finetune``'s: ``auto`` (its default, memory-fitted) and the preset files;
    the panel's default is the CLI's, so a large backbone is scaled to the machine from Slicer too."""
    import inspect

    from medssl.train.config import preset_path
    from medssl.train.finetune import finetune

    assert FinetuneOptions().preset == inspect.signature(finetune).parameters["preset"].default == "auto"
    for preset in commands.PRESETS:
        args = finetuneArgs([["a.nrrd"]], ["l.nrrd"], "o", FinetuneOptions(preset=preset))
        assert args[args.index("--preset") + 1] == preset
        assert preset == "auto" or preset_path("finetune", preset).is_file()


def test_diagnostics_from_the_real_medssl_info(realMedssl):
    job = TrainLogic(realMedssl).runMedSSL(["info", "--json"], wait=True, timeout=120)
    info = install.parseInfo(job.log)
    text = install.formatDiagnostics(info)
    assert info["torch"].startswith("2.") and f"torch {info['torch']}" in text
    assert "CUDA available: no" in text and "GPU: none visible to torch" in text
    basic = install.basicDiagnostics()
    assert "medssl 0.1.0" in basic and f"MedSSL core: {REPO}" in basic and sys.version.split()[0] in basic


def test_backbone_choices(tinyPackage):
    entries = catalog.parseCatalog({"entries": [{"id": "voco_b", "title": "VoCo-B", "size_bytes": 2_000_000,
                                                 "licence": "Apache-2.0", "file_name": "voco_b.pt"}]})
    choices = catalog.backboneChoices([readPackage(tinyPackage)], entries)
    assert [c.value for c in choices] == ["voco_b", *catalog.RANDOM_INIT_BACKBONES, str(tinyPackage)]
    assert choices[0].title == "VoCo-B (voco_b)" and "2.0 MB" in choices[0].description
    assert choices[-1].entry is None and "Labels: liver, spleen" in choices[-1].description


