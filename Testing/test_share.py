"""``medssl export`` / ``medssl import``: a model zip round-trips with every hash checked, unsafe or changed
zips are refused with nothing written, and restrictive backbone licences are said wherever a model shows."""
from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest
from medssl_test_utils import REPO, run_cli

from medssl.hub import catalog
from medssl.hub.package import check_files, save_package
from medssl.errors import MedSSLError, PackageError
from medssl.hub.share import MANIFEST, export_package, import_package, licence_notice

sys.path.insert(0, str(REPO))
from MedSSLLib import packages as slicerPackages  # noqa: E402
from MedSSLLib.testing import tinyPlan  # noqa: E402

NC_ND = "CC BY-NC-ND 4.0 (code and weights; gated on Hugging Face)"


def make_package(folder: Path, licence: str = "Apache-2.0 (test)") -> Path:
    import torch

    from medssl.models import build_from_plan
    from medssl.plan import Plan

    plan = Plan.from_dict(tinyPlan([{"value": 1, "name": "liver", "color": [1, 0, 0]}], ["image"]))
    torch.manual_seed(0)
    meta = {"name": "liver", "licence": licence, "provenance": {"backbone": "3dino_vit_l", "steps": 5,
                                                                 "train_cases": ["a"], "best_mean_dice": 0.5}}
    return save_package(folder, plan, build_from_plan(plan).state_dict(), meta)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return make_package(tmp_path_factory.mktemp("pkg") / "liver")


def rewrite(src: Path, dst: Path, change) -> Path:
    """Copy zip ``src`` to ``dst``, passing each (ZipInfo, bytes) through ``change`` (None drops it)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            out = change(info, zin.read(info))
            if out is not None:
                zout.writestr(*out)
    return dst


def assert_one_line_error(proc, pattern: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and pattern in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def refused(archive: Path, out: Path, pattern: str) -> None:
    """import_package refuses ``archive`` with a one-line message containing ``pattern``."""
    with pytest.raises(MedSSLError) as err:
        import_package(archive, out)
    assert pattern in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_export_import_round_trip_checks_every_file(tmp_path, package):
    archive = tmp_path / "liver.zip"
    proc = run_cli("export", str(package), "--out", str(archive))
    assert proc.returncode == 0, proc.stderr
    assert "licence: Apache-2.0 (test)" in proc.stdout and "provenance: backbone 3dino_vit_l, 5 steps" in proc.stdout
    with zipfile.ZipFile(archive) as zf:
        assert sorted(zf.namelist()) == sorted(f"liver/{f}" for f in
                                               ("plan.json", "weights.safetensors", "metadata.json", MANIFEST))
        manifest = json.loads(zf.read(f"liver/{MANIFEST}"))
    assert manifest["files"]["weights.safetensors"]["size"] == (package / "weights.safetensors").stat().st_size
    proc = run_cli("import", str(archive))
    assert proc.returncode == 0, proc.stderr
    home = Path(__import__("os").environ["MEDSSL_HOME"])
    check_files(home / "models" / "liver")
    assert (home / "models" / "liver" / "weights.safetensors").read_bytes() == (package / "weights.safetensors").read_bytes()
    assert not (home / "models" / "liver" / "training").exists()
    assert_one_line_error(run_cli("import", str(archive)), "already exists")
    assert_one_line_error(run_cli("export", str(package), "--out", str(archive)), "already exists")
    assert run_cli("import", str(archive), "--overwrite").returncode == 0


def test_changed_weights_are_refused_and_nothing_is_written(tmp_path, package):
    archive = export_package(package, tmp_path / "liver.zip").archive

    def flip(info, data):
        if info.filename.endswith("weights.safetensors"):
            data = data[:-1] + bytes([data[-1] ^ 1])
        return info, data

    bad = rewrite(archive, tmp_path / "bad.zip", flip)
    assert_one_line_error(run_cli("import", str(bad), "--out", str(tmp_path / "m")), "sha256")  # the CLI says it in one line
    assert not (tmp_path / "m").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".medssl-import")]

    def grow(info, data):
        return (info, data + b"x" * 10) if info.filename.endswith("plan.json") else (info, data)

    refused(rewrite(archive, tmp_path / "big.zip", grow), tmp_path / "m", "larger than its manifest")


def test_manifest_catches_weights_and_metadata_changed_together(tmp_path, package):
    """A zip whose weights and metadata.json were changed consistently passes the package's own check; the
    manifest's sha256 of every file still refuses it."""
    import hashlib

    archive = export_package(package, tmp_path / "liver.zip").archive
    with zipfile.ZipFile(archive) as zf:
        weights = bytearray(zf.read("liver/weights.safetensors"))
    weights[-1] ^= 1
    digest = hashlib.sha256(bytes(weights)).hexdigest()

    def swap(info, data):
        if info.filename.endswith("weights.safetensors"):
            return info, bytes(weights)
        if info.filename.endswith("metadata.json"):
            meta = json.loads(data)
            meta["weights_sha256"] = digest
            return info, json.dumps(meta, indent=1, sort_keys=True).encode()
        return info, data

    refused(rewrite(archive, tmp_path / "forged.zip", swap), tmp_path / "m", "manifest.json")
    assert not (tmp_path / "m").exists()


def test_a_package_check_failing_inside_the_zip_names_the_zip(tmp_path, package):
    """Found by a user audit: a plan changed together with the manifest (not the package's own hash) was reported
    against the scratch folder ``.medssl-import-XXXX`` instead of the zip."""
    import hashlib

    archive = export_package(package, tmp_path / "liver.zip").archive
    with zipfile.ZipFile(archive) as zf:
        plan = json.loads(zf.read("liver/plan.json"))
    plan["sliding_window"]["overlap"] = 0.75
    data = json.dumps(plan).encode()

    def swap(info, content):
        if info.filename.endswith("plan.json"):
            return info, data
        if info.filename.endswith("manifest.json"):
            manifest = json.loads(content)
            manifest["files"]["plan.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            return info, json.dumps(manifest).encode()
        return info, content

    forged = rewrite(archive, tmp_path / "forged.zip", swap)
    with pytest.raises(PackageError) as info:
        import_package(forged, tmp_path / "m")
    assert f"{forged} (liver/)" in str(info.value) and ".medssl-import-" not in str(info.value)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("entry, message", [("../evil.txt", "outside the model folder"),
                                            ("liver/../../evil.txt", "outside the model folder"),
                                            ("/tmp/evil.txt", "outside the model folder"),
                                            ("C:/evil.txt", "outside the model folder"),
                                            ("liver/evil.py", "unexpected entry"),
                                            ("other/plan.json", "exactly one folder")])
def test_unsafe_entries_are_refused(tmp_path, package, entry, message):
    archive = export_package(package, tmp_path / "liver.zip").archive
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(entry, "print('owned')")
    refused(archive, tmp_path / "m", message)
    assert not (tmp_path / "m").exists() and not (tmp_path.parent / "evil.txt").exists()


def test_symlink_entries_are_refused(tmp_path, package):
    archive = export_package(package, tmp_path / "liver.zip").archive

    def as_link(info, data):
        if info.filename.endswith("plan.json"):
            link = zipfile.ZipInfo(info.filename)
            link.external_attr = (0o120777 << 16)
            return link, "/etc/passwd"
        return info, data

    bad = rewrite(archive, tmp_path / "link.zip", as_link)
    refused(bad, tmp_path / "m", "symbolic link")
    assert not (tmp_path / "m").exists()


def test_non_commercial_no_derivatives_licence_is_said_everywhere(tmp_path):
    pkg = make_package(tmp_path / "dino_model", NC_ND)
    archive = tmp_path / "dino.zip"
    proc = run_cli("export", str(pkg), "--out", str(archive))
    assert proc.returncode == 0 and "non-commercial use only and no derivatives" in proc.stdout, proc.stdout + proc.stderr
    shared = import_package(archive, tmp_path / "imported")
    assert any("non-commercial use only and no derivatives" in line for line in shared.describe())
    listed = slicerPackages.listPackages(tmp_path)
    assert [p.name for p in listed] == ["liver", "liver"]
    assert all("non-commercial use only and no derivatives" in p.summary() for p in listed)
    assert licence_notice("Apache-2.0 (VoCo code)") == ""


def test_slicer_and_core_licence_rules_agree():
    licences = {e.licence for e in catalog.entries().values()} | {NC_ND, "CC BY-NC-SA 4.0", "Apache-2.0", ""}
    for licence in licences:
        assert slicerPackages.licenceNotice(licence) == licence_notice(licence), licence
    assert licence_notice(catalog.get_entry("3dino_vit_l").licence)
