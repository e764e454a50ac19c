"""A segmentation made and saved by real 3D Slicer code (slicer-core: ``vtkMRMLSegmentationNode`` filled through
``vtkSlicerSegmentationsModuleLogic`` and written by ``vtkMRMLSegmentationStorageNode`` as ``.seg.nrrd``), read by
medssl (README: "Labels: label maps or 3D Slicer .seg.nrrd (segments are matched by name)"): names, colours,
terminology codes, and each segment's voxels at the same physical place on an oblique grid. The expected
values are those given to Slicer here; the geometry oracle is the IJK->RAS matrix built here (RAS -> LPS
by hand), not medssl's geometry code.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medssl.io.labels import read_label_map

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

SHAPE = (14, 12, 9)  # i, j, k
SEGMENTS = [  # (name, colour, value painted, terminology type code)
    ("liver", (0.9, 0.4, 0.3), 1, ("SCT", "10200004", "Liver")),
    ("spleen", (0.2, 0.6, 0.9), 2, ("SCT", "78961009", "Spleen")),
]


def ijk_to_ras() -> np.ndarray:
    a, b = 0.4, -0.3
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) @ \
        np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    m = np.eye(4)
    m[:3, :3] = rot @ np.diag([1.1, 0.8, 2.5])
    m[:3, 3] = (31.5, -12.25, 7.0)
    return m


def painted() -> np.ndarray:
    """(i, j, k) label array: two boxes, one cut by the grid's edge."""
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:7, 3:9, 1:5] = 1
    lab[8:14, 0:4, 4:9] = 2
    return lab


def write_with_slicer(path) -> None:
    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()  # registers the representation converters, as Slicer does
    logic.SetMRMLScene(scene)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, ijk_to_ras()[r, c])
    lab = painted()
    for name, color, value, code in SEGMENTS:
        segment_id = node.GetSegmentation().AddEmptySegment(name, name, list(color))
        image = slicer.vtkOrientedImageData()
        image.SetDimensions(*SHAPE)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        image.SetImageToWorldMatrix(matrix)
        from vtk.util import numpy_support

        flat = (lab == value).astype(np.uint8).transpose(2, 1, 0).ravel()  # VTK: i fastest
        image.GetPointData().GetScalars().DeepCopy(numpy_support.numpy_to_vtk(flat))
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            image, node, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
        node.GetSegmentation().GetSegment(segment_id).SetTerminology(
            "Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure~"
            f"{'^'.join(code)}~^^~Anatomic codes - DICOM master list~^^~^^")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.WriteData(node), "Slicer could not write the segmentation"
    scene.Clear(True)
    del logic


def lps_points(mask: np.ndarray, ijk2ras: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask).astype(float)
    ras = ijk @ ijk2ras[:3, :3].T + ijk2ras[:3, 3]
    return ras * np.array([-1.0, -1.0, 1.0])  # RAS -> LPS (ITK's physical space)


def test_segmentation_written_by_slicer_reads_back_in_medssl(tmp_path):
    path = tmp_path / "by_slicer.seg.nrrd"
    write_with_slicer(path)
    labels = read_label_map(path)
    by_name = {s.name: s for s in labels.segments}
    assert sorted(by_name) == ["liver", "spleen"]
    arr = sitk.GetArrayFromImage(labels.image).transpose(2, 1, 0)
    for name, color, value, code in SEGMENTS:
        seg = by_name[name]
        np.testing.assert_allclose(seg.color, color, atol=1e-6)
        assert seg.terminology["type"] == list(code)
        assert seg.terminology["category"] == ["SCT", "123037004", "Anatomical Structure"]
        mask = arr == seg.value
        got = np.array([labels.image.TransformIndexToPhysicalPoint([int(v) for v in p]) for p in np.argwhere(mask)])
        expected = lps_points(painted() == value, ijk_to_ras())
        assert len(got) == len(expected) == int((painted() == value).sum())
        np.testing.assert_allclose(np.sort(got, axis=0), np.sort(expected, axis=0), atol=1e-4)
