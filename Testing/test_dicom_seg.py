"""DICOM in, DICOM SEG out: a label map on a real scan's DICOM series is written as a DICOM Segmentation that
highdicom reads back to the same segments, frames and geometry, and that dciodvfy (dicom3tools) accepts."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from medssl_test_utils import run_cli

from medssl.io.dicom_seg import source_series_files, write_dicom_seg
from medssl.plan import LabelSpec

hd = pytest.importorskip("highdicom")
LIVER = {"category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "10200004", "Liver"]}


def write_series(image: sitk.Image, folder: Path, drop: tuple = ()) -> Path:
    """Write a real scan as an MR DICOM series (one file per k slice, geometry in the headers); ``drop``: tags
    left out."""
    folder.mkdir()
    image = sitk.Cast(image, sitk.sitkInt16)
    uid = "1.2.826.0.1.3680043.8.498."
    direction = image.GetDirection()
    common = {"0010|0010": "MedSSL^Test", "0010|0020": "MEDSSL001", "0008|0060": "MR", "0008|0020": "20260101",
              "0008|0030": "120000", "0020|000d": uid + "1", "0020|000e": uid + "2", "0020|0052": uid + "3",
              "0020|0011": "7", "0020|0010": "1", "0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0008|103e": "KmeansTest T1",
              "0020|0037": "\\".join(f"{d:.6f}" for d in (direction[0], direction[3], direction[6],
                                                          direction[1], direction[4], direction[7]))}
    common = {tag: value for tag, value in common.items() if tag not in drop}
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetSize()[2]):
        s = image[:, :, k]
        for tag, value in common.items():
            s.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        s.SetMetaData("0020|0032", "\\".join(f"{p:.6f}" for p in position))
        s.SetMetaData("0020|0013", str(k + 1))
        s.SetMetaData("0008|0018", f"{uid}4.{k + 1}")
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(s)
    return folder


@pytest.fixture(scope="module")
def series(tmp_path_factory, kmeans_t1) -> Path:
    return write_series(sitk.ReadImage(str(kmeans_t1)), tmp_path_factory.mktemp("dicom") / "t1")


def test_dicom_seg_reads_back_equal_and_validates(tmp_path, series, kmeans_labels):
    from medssl.io.volume_io import read_image

    grid = read_image(series)  # the series as medssl reads it: the label map lies on this grid
    labels = sitk.ReadImage(str(kmeans_labels))
    arr = sitk.GetArrayFromImage(labels).astype(np.uint8)
    arr[arr == 4] = 0  # label 4 absent: its segment is described but empty
    labels = sitk.GetImageFromArray(arr)
    labels.CopyInformation(grid)
    specs = [LabelSpec(0, "background"), LabelSpec(1, "liver", (0.9, 0.4, 0.3), LIVER)] + \
            [LabelSpec(v, f"label_{v}", (0.2, 0.6, 0.9)) for v in (2, 3, 4, 5, 6)]
    files = source_series_files([str(series)])
    out = write_dicom_seg(labels, specs, files, tmp_path / "seg.dcm")

    seg = hd.seg.segread(str(out))
    assert seg.number_of_segments == 6
    assert [seg.get_segment_description(n).segment_label for n in range(1, 7)] == \
           ["liver"] + [f"label_{v}" for v in (2, 3, 4, 5, 6)]
    liver = seg.get_segment_description(1)
    assert (liver.segmented_property_type.value, liver.segmented_property_type.scheme_designator) == ("10200004", "SCT")
    assert seg.get_segment_description(2).segmented_property_type.value == "85756007"  # Slicer's default Tissue
    sources = [__import__("pydicom").dcmread(f) for f in files]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert int(seg.NumberOfFrames) == len(sources) * 6
    uids = [s.SOPInstanceUID for s in sources]
    back = seg.get_pixels_by_source_instance(uids, combine_segments=True)  # (slices, rows, cols): segment numbers
    values = np.array([0, 1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(values[back], arr)
    by_uid = {s.SOPInstanceUID: s for s in sources}
    for frame in seg.PerFrameFunctionalGroupsSequence:  # each frame lies exactly on the slice it references
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        source, position = by_uid[uid], frame.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose([float(p) for p in position], [float(p) for p in source.ImagePositionPatient],
                                   atol=1e-4)
    check = dciodvfy(out)
    assert not [line for line in check.splitlines() if line.startswith("Error")], check


def dciodvfy(path: Path) -> str:
    tool = shutil.which("dciodvfy")
    if tool is None:
        if __import__("os").environ.get("CI"):
            pytest.fail("dciodvfy is missing: .ci/run must install dicom3tools")
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed")
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    return proc.stdout + proc.stderr


def test_predict_writes_dicom_seg_for_a_dicom_series(tmp_path, series, tiny_package):
    out = tmp_path / "result.dcm"
    proc = run_cli("predict", "--model", str(tiny_package), "--input", str(series), "--output", str(out),
                   "--device", "cpu", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    seg = hd.seg.segread(str(out))
    assert seg.number_of_segments == 6 and seg.SeriesDescription == "MedSSL segmentation"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == "1.2.826.0.1.3680043.8.498.2"
    assert not [line for line in dciodvfy(out).splitlines() if line.startswith("Error")]


def test_a_series_without_frame_of_reference_is_refused_before_the_work(tmp_path, tiny_package, kmeans_t1):
    """Found by a user audit: highdicom refused such a series only after the prediction, with a traceback."""
    bare = write_series(sitk.ReadImage(str(kmeans_t1)), tmp_path / "bare", drop=("0020|0052",))
    proc = run_cli("predict", "--model", str(tiny_package), "--input", str(bare), "--output", str(tmp_path / "r.dcm"),
                   "--device", "cpu")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: the DICOM series of {bare} has no FrameOfReferenceUID, which a DICOM SEG must reference; write the "
        f"result as .seg.nrrd or .nii.gz instead"]
    assert "sliding window" not in proc.stderr and not (tmp_path / "r.dcm").exists()


def test_dicom_output_needs_a_dicom_series_input(tmp_path, tiny_package, kmeans_t1):
    proc = run_cli("predict", "--model", str(tiny_package), "--input", str(kmeans_t1), "--output",
                   str(tmp_path / "r.dcm"))
    assert proc.returncode == 2 and "DICOM series folder" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.dcm").exists()
