"""Image IO: formats, geometry kept exactly (oblique, left-handed, coronal), .seg.nrrd metadata, bad files."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from medssl_test_utils import oblique_image, require

from medssl.errors import InputError
from medssl.io.geometry import Grid, array_ijk, image_from_ijk, same_grid
from medssl.io.labels import read_label_map, write_label_map
from medssl.io.volume_io import read_image, write_image
from medssl.plan import LabelSpec


def assert_same_image(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha", ".nii"])
def test_real_coronal_scan_round_trips_exactly(kmeans_t1, tmp_path, suffix):
    img = read_image(kmeans_t1)
    assert img.GetDirection() == (1.0, 0.0, 0.0, 0.0, -0.0, -1.0, 0.0, 1.0, 0.0)  # coronal
    out = write_image(img, tmp_path / f"copy{suffix}")
    assert_same_image(img, read_image(out))


@pytest.mark.parametrize("left_handed", [False, True])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_oblique_and_left_handed_geometry_kept(tmp_path, suffix, left_handed):
    img = oblique_image(left_handed=left_handed)
    assert np.sign(np.linalg.det(np.array(img.GetDirection()).reshape(3, 3))) == (-1 if left_handed else 1)
    back = read_image(write_image(img, tmp_path / f"obl{suffix}"))
    assert_same_image(img, back)


def test_ijk_arrays_transpose_exactly_once(kmeans_t1):
    img = read_image(kmeans_t1)
    arr = array_ijk(img)
    assert arr.shape == img.GetSize()
    i, j, k = 17, 90, 40
    assert arr[i, j, k] == img.GetPixel(i, j, k)
    assert_same_image(sitk.Cast(image_from_ijk(arr, Grid.of(img)), img.GetPixelID()), img)


def test_seg_nrrd_keeps_names_colours_values_terminology(tmp_path, kmeans_labels):
    lab = read_label_map(kmeans_labels)
    specs = [LabelSpec(0, "background", (0, 0, 0))] + [
        LabelSpec(v, f"class {v}", (v / 10, 0.5, 1 - v / 10),
                  {"category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "10200004", "Liver"]})
        for v in range(1, 7)]
    path = write_label_map(lab.image, specs, tmp_path / "seg.seg.nrrd")
    back = read_label_map(path)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back.image), sitk.GetArrayViewFromImage(lab.image))
    assert [s.name for s in back.segments] == [f"class {v}" for v in range(1, 7)]
    assert [s.value for s in back.segments] == list(range(1, 7))
    np.testing.assert_allclose(back.segments[2].color, (0.3, 0.5, 0.7), atol=1e-6)
    assert back.segments[0].terminology["type"] == ["SCT", "10200004", "Liver"]
    assert same_grid(Grid.of(back.image), Grid.of(lab.image))


def test_dicom_series_folder(tmp_path):
    nib = pytest.importorskip("nibabel")
    src = require(Path(nib.__file__).parent / "tests" / "data" / "0.dcm")
    folder = tmp_path / "dicom"
    folder.mkdir()
    shutil.copy(src, folder / "0.dcm")
    shutil.copy(src.with_name("1.dcm"), folder / "1.dcm")
    img = read_image(folder)
    assert img.GetSize() == (256, 256, 2)
    np.testing.assert_allclose(img.GetSpacing(), (1.796875, 1.796875, 3.0))
    with pytest.raises(InputError, match=r"0\.dcm has size \(256, 256, 1\), a single slice; medssl needs 3D volumes: give "
                                         r"the 3D volume \(for DICOM, the series folder, not one slice file\)$"):
        read_image(folder / "0.dcm")
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(tmp_path)


def test_4d_needs_a_time_point(tmp_path):
    arr = np.random.default_rng(0).normal(size=(3, 6, 7, 8)).astype(np.float32)  # t, k, j, i
    img4 = sitk.GetImageFromArray(arr, isVector=False)
    path = tmp_path / "fmri.nii.gz"
    sitk.WriteImage(img4, str(path))
    with pytest.raises(InputError, match=r"4D with 3 time points; pick one by writing .*::t=0"):
        read_image(path)
    img = read_image(f"{path}::t=2")
    np.testing.assert_allclose(sitk.GetArrayFromImage(img), arr[2])
    with pytest.raises(InputError, match="out of range"):
        read_image(f"{path}::t=5")


@pytest.mark.parametrize("case", ["missing", "truncated", "2d", "zero_spacing", "text"])
def test_bad_files_give_one_line_errors(tmp_path, kmeans_t1, case):
    path = tmp_path / "bad.nii.gz"
    if case == "truncated":
        data = Path(kmeans_t1).read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif case == "2d":
        sitk.WriteImage(sitk.Image([10, 12], sitk.sitkFloat32), str(path))
    elif case == "zero_spacing":  # NIfTI readers replace 0 by 1, so use a MetaImage header
        raw = tmp_path / "raw.mha"
        sitk.WriteImage(sitk.Image([10, 12, 5], sitk.sitkFloat32), str(raw))
        text = raw.read_bytes()
        start = text.index(b"ElementSpacing")
        path = tmp_path / "zero.mha"
        path.write_bytes(text[:start] + b"ElementSpacing = 0 1 -2" + text[text.index(b"\n", start):])
    elif case == "text":
        path.write_bytes(gzip.compress(b"not an image"))
    with pytest.raises(InputError) as err:
        read_image(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    if case == "zero_spacing":
        assert "spacing" in str(err.value)


def test_seg_nrrd_terminology_keeps_all_seven_fields(tmp_path, kmeans_labels):
    """Type modifier, contexts and region survive (Slicer's seven-field string); left and right stay apart."""
    from medssl.io.terminology import format_entry, parse_entry

    entry = ("Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
             "~SCT^64033007^Kidney~SCT^{}~Anatomic codes - DICOM master list~^^~^^")
    left, right = parse_entry(entry.format("7771000^Left")), parse_entry(entry.format("24028007^Right"))
    lab = read_label_map(kmeans_labels)
    specs = [LabelSpec(0, "background", (0, 0, 0)), LabelSpec(1, "left", (1, 0, 0), left),
             LabelSpec(2, "right", (0, 1, 0), right)]
    back = read_label_map(write_label_map(lab.image, specs, tmp_path / "kidneys.seg.nrrd"))
    assert [s.terminology for s in back.segments[:2]] == [left, right] and left != right
    assert format_entry(back.segments[0].terminology) == entry.format("7771000^Left")
