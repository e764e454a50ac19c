"""DICOM series folders (README: "Images: ... DICOM series folders"), written by SimpleITK/GDCM and read back
by a second reader, pydicom, whose geometry is computed here by hand from the DICOM tags (Image Orientation /
Position Patient, Pixel Spacing; PS3.3 C.7.6.2): direction, origin, spacing and voxels; two series in one
folder; a DICOM folder through ``medssl finetune`` and ``medssl predict``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from medssl_test_utils import cli_in_process

from medssl.io.volume_io import read_image

pydicom = pytest.importorskip("pydicom")

pytestmark = pytest.mark.usefixtures("one_thread")


def oblique_ct(size=(20, 18, 7), spacing=(1.25, 1.5, 2.75), origin=(-40.5, 22.25, 101.0), angle=0.35, seed=0):
    """An int16 CT-like volume with an oblique, right-handed direction."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(-900, 1200, size=size[::-1]).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    img.SetDirection(rot.ravel().tolist())
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


def write_series(image: sitk.Image, folder: Path, uid: str, prefix: str) -> None:
    """One file per slice with the tags a scanner writes (SimpleITK's DicomSeriesFromArray example)."""
    folder.mkdir(exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = image.GetDirection()
    for k in range(image.GetDepth()):
        sl = image[:, :, k]
        tags = {"0008|0060": "CT", "0010|0020": "TEST", "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
                "0020|000e": uid, "0008|103e": prefix, "0020|0013": str(k + 1),
                "0020|0037": "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
                "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
                "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}",
                "0018|0050": f"{image.GetSpacing()[2]:.6f}", "0008|0018": f"{uid}.{k + 1}"}
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{prefix}_{k:03d}.dcm"))
        writer.Execute(sl)


def pydicom_volume(folder: Path, uid: str):
    """(array (k, j, i), spacing, origin, direction 3x3 in LPS) from the tags, by hand."""
    slices = [ds for ds in (pydicom.dcmread(str(f)) for f in sorted(folder.glob("*.dcm")))
              if ds.SeriesInstanceUID == uid]
    row, col = np.array(slices[0].ImageOrientationPatient[:3], float), np.array(slices[0].ImageOrientationPatient[3:], float)
    normal = np.cross(row, col)
    slices.sort(key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, float))))
    positions = np.array([ds.ImagePositionPatient for ds in slices], float)
    dz = float(np.median(np.linalg.norm(np.diff(positions, axis=0), axis=1)))
    dy, dx = (float(v) for v in slices[0].PixelSpacing)  # PixelSpacing is (row spacing, column spacing)
    arr = np.stack([ds.pixel_array * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))
                    for ds in slices])
    return arr, (dx, dy, dz), positions[0], np.stack([row, col, normal], axis=1)


def assert_geometry(image: sitk.Image, spacing, origin, direction, atol=1e-4) -> None:
    np.testing.assert_allclose(image.GetSpacing(), spacing, atol=atol)
    np.testing.assert_allclose(image.GetOrigin(), origin, atol=atol)
    np.testing.assert_allclose(np.array(image.GetDirection()).reshape(3, 3), direction, atol=atol)


def test_oblique_series_geometry_and_voxels_match_pydicom(tmp_path):
    truth = oblique_ct()
    write_series(truth, tmp_path / "ct", "1.2.826.0.1.3680043.2.1125.7", "ct")
    img = read_image(tmp_path / "ct")
    arr, spacing, origin, direction = pydicom_volume(tmp_path / "ct", "1.2.826.0.1.3680043.2.1125.7")
    assert img.GetSize() == truth.GetSize() == arr.shape[::-1]
    assert_geometry(img, spacing, origin, direction)
    assert_geometry(img, truth.GetSpacing(), truth.GetOrigin(), np.array(truth.GetDirection()).reshape(3, 3))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), arr)
    np.testing.assert_array_equal(arr, sitk.GetArrayFromImage(truth))


def test_folder_with_two_series_reads_the_larger_one_whole(tmp_path, capsys):
    big, small = oblique_ct(seed=1), oblique_ct(size=(12, 10, 4), spacing=(2.0, 2.0, 5.0), origin=(0, 0, 0), angle=-0.6,
                                                seed=2)
    write_series(big, tmp_path / "mixed", "1.2.826.0.1.3680043.2.1125.21", "axial")
    write_series(small, tmp_path / "mixed", "1.2.826.0.1.3680043.2.1125.22", "scout")
    img = read_image(tmp_path / "mixed")
    arr, spacing, origin, direction = pydicom_volume(tmp_path / "mixed", "1.2.826.0.1.3680043.2.1125.21")
    assert img.GetSize() == big.GetSize()  # no slice of the other series mixed in
    note = capsys.readouterr().err
    assert "holds 2 DICOM series; reading 1.2.826.0.1.3680043.2.1125.21" in note  # said, not silent
    assert_geometry(img, spacing, origin, direction)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), arr)


def test_dicom_folder_through_finetune_and_predict(tmp_path):
    truth = oblique_ct(size=(24, 22, 9), spacing=(2.0, 2.0, 3.0), seed=3)
    write_series(truth, tmp_path / "case01", "1.2.826.0.1.3680043.2.1125.31", "ct")
    smooth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.Cast(truth, sitk.sitkFloat32), 3.0))
    label = sitk.GetImageFromArray((smooth > np.percentile(smooth, 60)).astype(np.uint8))
    label.CopyInformation(truth)  # drawn on the scanner's grid, as a segmentation of the series would be
    sitk.WriteImage(label, str(tmp_path / "case01_label.nii.gz"))
    model, out = tmp_path / "model", tmp_path / "seg.nii.gz"
    done = cli_in_process("finetune", "--images", str(tmp_path / "case01"), "--labels", str(tmp_path / "case01_label.nii.gz"),
                          "--out", str(model), "--backbone", "resenc:test", "--patch-size", "16", "16", "16",
                          "--steps", "2", "--device", "cpu", "--progress", "none")
    assert done.returncode == 0, done.stderr
    assert json.loads((model / "metadata.json").read_text())["provenance"]["train_cases"] == ["case01"]
    done = cli_in_process("predict", "--model", str(model), "--input", str(tmp_path / "case01"), "--output", str(out),
                          "--device", "cpu", "--progress", "none")
    assert done.returncode == 0, done.stderr
    seg = sitk.ReadImage(str(out))
    _, spacing, origin, direction = pydicom_volume(tmp_path / "case01", "1.2.826.0.1.3680043.2.1125.31")
    assert seg.GetSize() == truth.GetSize()
    assert_geometry(seg, spacing, origin, direction)  # the output lies on the DICOM grid, found by another reader
