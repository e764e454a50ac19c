"""Helpers shared by the pytest suite (Testing/slicer_extension) and the modules' self-tests inside Slicer.

`makeTinyPackage` writes a real, verified medssl model package with a very small random network (it needs
medssl and torch, imported here only); `volumeFromArray` builds a volume node with any IJK->RAS matrix
(oblique and left-handed included) without ``slicer.util``'s scene helpers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

TINY_ARCHITECTURE = {"backbone": "resenc", "decoder": "unet", "backbone_kwargs": {"preset": "test"}, "decoder_kwargs": {}}


def tinyPlan(labels: Sequence[dict], channels: Sequence[str] = ("image",), patch: int = 16,
             spacing: Optional[Sequence[float]] = None) -> dict:
    """A plan dictionary for a tiny ResEnc U-Net (``labels`` without background)."""
    from medssl.models.segmentation import resolve_arch

    arch = resolve_arch(TINY_ARCHITECTURE["backbone"], TINY_ARCHITECTURE["decoder"], TINY_ARCHITECTURE["backbone_kwargs"])
    background = {"value": 0, "name": "background", "color": [0.0, 0.0, 0.0], "terminology": None}
    return {
        "plan_version": 1, "channels": [{"name": name, "modality": "MR"} for name in channels],
        "normalization": [{"scheme": "zscore", "params": {"per_image": True}} for _ in channels],
        "patch_size": [patch] * 3, "labels": [background, *labels], "orientation": "RAS",
        "spacing": None if spacing is None else list(spacing),
        "architecture": {"backbone": arch.backbone, "decoder": arch.decoder,
                         "backbone_kwargs": arch.backbone_kwargs, "decoder_kwargs": arch.decoder_kwargs},
        "sliding_window": {"overlap": 0.25, "mode": "gaussian", "sw_batch_size": 2, "mirror_axes": [0, 1, 2]},
        "provenance": {"created_by": "MedSSLLib.testing", "fields": {"spacing": "user"}},
    }


def makeTinyPackage(folder: Path, labels: Sequence[dict], channels: Sequence[str] = ("image",),
                    spacing: Optional[Sequence[float]] = None, name: str = "tiny test model") -> Path:
    """Write a verified medssl package with random weights (seeded) into ``folder``."""
    import torch
    from medssl.hub.package import save_package
    from medssl.models import build_from_plan
    from medssl.plan import Plan

    plan = Plan.from_dict(tinyPlan(labels, channels, spacing=spacing))
    torch.manual_seed(0)
    net = build_from_plan(plan)
    metadata = {"name": name, "licence": "Apache-2.0 (test model)",
                "provenance": {"backbone": "resenc:test", "steps": 0, "train_cases": []}}
    return save_package(folder, plan, net.state_dict(), metadata)


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """A 3x3 rotation matrix (radians about x, then y, then z)."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def ijkToRasMatrix(directions: np.ndarray, spacing: Sequence[float], origin: Sequence[float]) -> np.ndarray:
    """4x4 IJK->RAS from direction columns, spacing and origin (RAS)."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(directions) @ np.diag(spacing)
    matrix[:3, 3] = origin
    return matrix


def volumeFromArray(scene, array: np.ndarray, ijkToRas: np.ndarray, name: str = "volume",
                    className: str = "vtkMRMLScalarVolumeNode"):
    """A volume node holding ``array`` (k, j, i order, like ``slicer.util.arrayFromVolume``)."""
    import vtk
    from vtkmodules.util import numpy_support

    array = np.ascontiguousarray(array)
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(array.ravel(), deep=True))
    node = scene.AddNewNodeByClass(className, name)
    node.SetAndObserveImageData(image)
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(ijkToRas[r, c]))
    node.SetIJKToRASMatrix(matrix)
    node.CreateDefaultDisplayNodes()
    return node


def segmentationFromThreshold(volume, segmentName: str = "bright"):
    """A one-segment segmentation of the voxels above the volume's mean, on the volume's grid."""
    import slicer
    import vtk
    from vtkmodules.util import numpy_support

    scene = volume.GetScene()
    image = volume.GetImageData()
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    dims = image.GetDimensions()
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    ijkToRas = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    mask = (values > values.mean()).astype(np.uint8).reshape(dims[2], dims[1], dims[0])
    labelmap = volumeFromArray(scene, mask, ijkToRas, f"{volume.GetName()} mask", "vtkMRMLLabelMapVolumeNode")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{volume.GetName()} segmentation")
    slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    scene.RemoveNode(labelmap)
    segmentation.GetSegmentation().GetNthSegment(0).SetName(segmentName)
    return segmentation
