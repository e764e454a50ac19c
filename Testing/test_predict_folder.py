"""medssl predict --input-dir/--output-dir: one model load and compile for every case of a folder."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from medssl_test_utils import NO_GPU, run_cli

from medssl.cli.predict_folder import folder_cases
from medssl.errors import InputError


def test_folder_cases_pair_channels_by_nnunet_suffix(tmp_path):
    for name in ("b_0000.nii.gz", "b_0001.nii.gz", "a_0001.nrrd", "a_0000.nrrd", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    cases = folder_cases(tmp_path, 2)
    assert list(cases) == ["a", "b"] and [p.name for p in cases["a"]] == ["a_0000.nrrd", "a_0001.nrrd"]
    (tmp_path / "c_0000.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="case c does not have files _0000 .. _0001"):
        folder_cases(tmp_path, 2)
    assert list(folder_cases(tmp_path, 1)) == ["a_0000", "a_0001", "b_0000", "b_0001", "c_0000"]
    (tmp_path / "._a_0000.nrrd").write_bytes(b"")  # macOS resource fork beside a copied scan: not a case
    assert "._a_0000" not in folder_cases(tmp_path, 1)


def test_a_folder_is_segmented_like_single_cases(tmp_path, tiny_package, kmeans_t1):
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(kmeans_t1, scans / "one.nii.gz")
    flipped = sitk.Flip(sitk.ReadImage(str(kmeans_t1)), [True, False, False])
    sitk.WriteImage(flipped, str(scans / "two.nii.gz"))
    (scans / "broken.nii.gz").write_bytes(b"not an image")
    proc = run_cli("predict", "--model", str(tiny_package), "--input-dir", str(scans), "--output-dir",
                   str(tmp_path / "segs"), "--device", "cpu", "--runtime", "torch", "--progress", "none", env=NO_GPU)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "1 of 3 case(s) failed (broken; first: broken: input image " in proc.stderr  # the reason, also with --progress none
    assert sorted(p.name for p in (tmp_path / "segs").iterdir()) == ["one.seg.nrrd", "two.seg.nrrd"]
    single = run_cli("predict", "--model", str(tiny_package), "--input", str(scans / "two.nii.gz"), "--output",
                     str(tmp_path / "two.seg.nrrd"), "--device", "cpu", "--runtime", "torch", env=NO_GPU)
    assert single.returncode == 0, single.stderr
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "segs" / "two.seg.nrrd"))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "two.seg.nrrd"))))


def test_folder_and_single_options_do_not_mix(tmp_path, tiny_package, kmeans_t1):
    proc = run_cli("predict", "--model", str(tiny_package), "--input", str(kmeans_t1), "--output-dir", str(tmp_path))
    assert proc.returncode == 2 and "give either --input IMG... with --output OUT, or --input-dir" in proc.stderr


def test_folder_events_report_each_case_written_or_failed(tmp_path, tiny_package, kmeans_t1):
    """The per-case events MedSSL Segment's folder mode reads (MedSSLLib/folder_logic.py): started, then written
    with the finished file or failed with the one-line reason."""
    import json

    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "a_broken.nii.gz").write_bytes(b"not an image")
    shutil.copy(kmeans_t1, scans / "b_scan.nii.gz")
    proc = run_cli("predict", "--model", str(tiny_package), "--input-dir", str(scans), "--output-dir",
                   str(tmp_path / "segs"), "--output-suffix", "_m.seg.nrrd", "--device", "cpu", "--runtime", "torch",
                   "--progress", "json", env=NO_GPU)
    assert proc.returncode == 2, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    cases = [(e["case"], e["status"], e["done"], e["total"]) for e in events if e.get("stage") == "case"]
    assert cases == [("a_broken", "started", 0, 2), ("a_broken", "failed", 1, 2), ("b_scan", "started", 1, 2),
                     ("b_scan", "written", 2, 2)]
    failed, written = [e for e in events if e.get("status") in ("failed", "written")]
    assert "a_broken.nii.gz" in failed["error"] and "\n" not in failed["error"]
    assert written["output"] == str(tmp_path / "segs" / "b_scan_m.seg.nrrd") and Path(written["output"]).is_file()


def test_a_folder_run_replaces_no_input_and_no_earlier_result_unasked(tmp_path, tiny_package, kmeans_t1):
    """Found by a user audit: --output-dir DIR --output-suffix .nii.gz into the input folder had replaced every
    scan by its segmentation, and two files of one case name had been segmented as one without a word."""
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("a.nii.gz", "a.mha", "b.nii.gz"):
        sitk.WriteImage(sitk.ReadImage(str(kmeans_t1)), str(scans / name))
    before = {p.name: p.read_bytes() for p in scans.iterdir()}
    base = ["predict", "--model", str(tiny_package), "--input-dir", str(scans), "--device", "cpu", "--runtime",
            "torch"]
    proc = run_cli(*base, "--output-dir", str(scans), "--output-suffix", ".nii.gz", "--overwrite", env=NO_GPU)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: --output-dir {scans}: the output a.nii.gz would replace an input image; choose another --output-dir "
        f"or --output-suffix (the inputs are never replaced)"]
    proc = run_cli(*base, "--output-dir", str(scans), "--output-suffix", ".txt", env=NO_GPU)
    assert proc.returncode == 2 and "--output-suffix .txt: medssl writes" in proc.stderr
    (scans / "b.seg.nrrd").write_bytes(b"an earlier result")
    proc = run_cli(*base, "--output-dir", str(scans), env=NO_GPU)
    assert proc.returncode == 2 and "1 of the 2 output(s) already exist (b.seg.nrrd); pass --overwrite" in proc.stderr
    assert (scans / "b.seg.nrrd").read_bytes() == b"an earlier result"
    proc = run_cli(*base, "--output-dir", str(scans), "--overwrite", "--progress", "json", env=NO_GPU)
    assert proc.returncode == 0, proc.stderr
    assert "a.mha left out: another file of the folder has the case name a" in proc.stdout
    assert {p.name: p.read_bytes() for p in scans.iterdir() if not p.name.endswith(".seg.nrrd")} == before
    assert (scans / "b.seg.nrrd").read_bytes() != b"an earlier result" and (scans / "a.seg.nrrd").is_file()
