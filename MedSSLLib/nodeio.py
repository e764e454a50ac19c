"""Scene nodes <-> files for medssl, through Slicer's own storage nodes (geometry is never hand-converted).

Volumes are written as NRRD by ``vtkMRMLNRRDStorageNode`` (LPS header written by Slicer, read by SimpleITK
in medssl: the IJK->RAS matrix, oblique and left-handed ones included, crosses unchanged). Results are read
back by ``vtkMRMLSegmentationStorageNode`` / ``vtkMRMLNRRDStorageNode`` into a private scene first, so the
user's scene changes only once a result has been read completely. Training labels are exported on the
grid of the case's first channel as ``.seg.nrrd``, which medssl maps to its labels by segment name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import slicer
import vtk

from .packages import LabelInfo

PathLike = Union[str, os.PathLike]

# Slicer's terminology string (vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry, Slicer v5.6.2
# vtkSlicerTerminologiesModuleLogic.cxx:1933, unchanged to main): seven "~"-separated fields, codes as
# scheme^value^meaning. medssl writes the same string (medssl.io.terminology, kept identical by a test); labels
# of older packages hold only category and type and keep the contexts written then.
TERMINOLOGY_FIELDS = ("context", "category", "type", "typeModifier", "regionContext", "region", "regionModifier")
SLICER_ANATOMY = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
TISSUE = ("SCT", "85756007", "Tissue")  # Slicer's default terminology for a new segment
DEFAULT_TEXT = {"context": SLICER_ANATOMY, "regionContext": ANATOMIC_CONTEXT, "category": TISSUE, "type": TISSUE}


def terminologyEntry(label: LabelInfo) -> str:
    """Slicer terminology entry string (the segment's ``TerminologyEntry`` tag) for a model label."""
    codes = label.terminology or {}

    def text(name: str) -> str:
        value = codes.get(name) or DEFAULT_TEXT.get(name)
        if name in ("context", "regionContext"):
            return str(value)
        if name == "regionModifier" and not codes.get("region"):
            return "^^"  # Slicer reads a region modifier only together with a region
        return "^".join(value) if value else "^^"

    return "~".join(text(name) for name in TERMINOLOGY_FIELDS)


def setTerminology(segment, entry: str) -> None:
    """Set a segment's terminology on every Slicer version: ``vtkSegment.SetTerminology`` exists only since
    Slicer 5.10 (it sets the tag below, vtkSegment.cxx:395); older ones have the tag API it wraps."""
    setter = getattr(segment, "SetTerminology", None)
    if setter is not None:
        setter(entry)
    else:
        segment.SetTag(segment.GetTerminologyEntryTagName(), entry)


def ijkToRas(volumeNode) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def sameGeometry(a, b, tolerance: float = 1e-6) -> bool:
    """Same voxel grid: dimensions and IJK->RAS matrix (within ``tolerance`` mm)."""
    if a.GetImageData() is None or b.GetImageData() is None:
        return False
    if a.GetImageData().GetDimensions() != b.GetImageData().GetDimensions():
        return False
    return bool(np.allclose(ijkToRas(a), ijkToRas(b), atol=tolerance, rtol=0))


def _checkVolume(volumeNode) -> None:
    if volumeNode is None or volumeNode.GetImageData() is None:
        raise ValueError("the input volume is empty; load an image first")
    if volumeNode.GetImageData().GetNumberOfScalarComponents() != 1:
        raise ValueError(f"{volumeNode.GetName()} has several components per voxel (e.g. RGB); "
                         f"medssl needs scalar volumes")


def writeVolume(volumeNode, path: PathLike, compress: bool = False) -> Path:
    """Write a scalar volume as NRRD with Slicer's storage node (the scene is not modified)."""
    _checkVolume(volumeNode)
    path = Path(path)
    storage = slicer.vtkMRMLNRRDStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(compress)
    if not storage.WriteData(volumeNode):
        raise RuntimeError(f"could not write {volumeNode.GetName()} to {path}")
    return path


def writeChannels(volumes: Sequence, folder: PathLike, stem: str, compress: bool = False) -> list[Path]:
    """Write ``<stem>_0000.nrrd``, ``<stem>_0001.nrrd``...; channels on another grid are resampled to the first."""
    if not volumes:
        raise ValueError("select at least one input volume")
    transforms = [v.GetTransformNodeID() if v is not None else None for v in volumes]
    if len(set(transforms)) > 1:  # the voxels are written as stored: a channel's own (unhardened) transform is lost
        names = ", ".join(v.GetName() for v, t in zip(volumes, transforms) if t != transforms[0])
        raise ValueError(f"the channels are under different transforms ({names} not under the first channel's); "
                         f"harden the transforms (Data module: right-click, Harden transform) or place every channel "
                         f"under the same transform")
    reference, paths = volumes[0], []
    for index, volume in enumerate(volumes):
        path = Path(folder) / f"{stem}_{index:04d}.nrrd"
        if index and not sameGeometry(volume, reference):
            paths.append(_writeResampled(volume, reference, path, compress))
        else:
            paths.append(writeVolume(volume, path, compress))
    return paths


def _writeResampled(volume, reference, path: Path, compress: bool) -> Path:
    """Resample ``volume`` onto ``reference`` (Slicer's volumes logic), write it and drop the temporary node."""
    _checkVolume(volume)
    resampled = slicer.vtkSlicerVolumesLogic.ResampleVolumeToReferenceVolume(volume, reference)
    if resampled is None:
        raise RuntimeError(f"could not resample {volume.GetName()} onto {reference.GetName()}")
    try:
        return writeVolume(resampled, path, compress)
    finally:
        if resampled.GetScene() is not None:
            resampled.GetScene().RemoveNode(resampled)


def _segmentWithLabelValue(segmentation, value: int):
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        if segment.GetLabelValue() == value:
            return segment
    return None


def applyLabels(segmentation, labels: Sequence[LabelInfo]) -> None:
    """Name, colour and terminology of each segment from the model label with the same label value."""
    for label in labels:
        segment = _segmentWithLabelValue(segmentation, label.value)
        if segment is None:
            continue
        segment.SetName(label.name)
        segment.SetColor(*label.color)
        setTerminology(segment, terminologyEntry(label))


def readSegmentationFile(path: PathLike):
    """A ``vtkSegmentation`` read from a ``.seg.nrrd`` into a private scene (the user's scene is untouched)."""
    privateScene = slicer.vtkMRMLScene()
    node = privateScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    if not Path(path).is_file() or not storage.ReadData(node):
        raise RuntimeError(f"could not read the segmentation {path}")
    return node.GetSegmentation()


def _subjectHierarchyItem(shNode, node) -> int:
    item = shNode.GetItemByDataNode(node)
    return item or shNode.CreateItem(shNode.GetSceneItemID(), node)


def placeBeside(node, sibling) -> None:
    """Put ``node`` under the same subject-hierarchy parent (study) as ``sibling``."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(sibling.GetScene())
    parent = shNode.GetItemParent(_subjectHierarchyItem(shNode, sibling))
    shNode.SetItemParent(_subjectHierarchyItem(shNode, node), parent)


def _liveNodes(referenceVolume, outputNode, what: str):
    """(scene, output node or None) for importing a result that took a while: the input must still be in a scene
    (else nothing is changed), and an output node removed in the meantime is replaced by a new one (the result had
    been copied into a node of no scene and reported as done)."""
    scene = referenceVolume.GetScene()
    if scene is None:
        raise RuntimeError(f"the input volume {referenceVolume.GetName()} was removed from the scene while it was "
                           f"segmented; the {what} was not imported")
    if outputNode is not None and outputNode.GetScene() is not scene:
        outputNode = None
    return scene, outputNode


def importSegmentation(path: PathLike, labels: Sequence[LabelInfo], referenceVolume, outputNode=None,
                       name: Optional[str] = None):
    """Read a medssl result into ``outputNode`` (or a new node): labels applied, input as reference geometry."""
    scene, outputNode = _liveNodes(referenceVolume, outputNode, "segmentation")
    result = readSegmentationFile(path)
    applyLabels(result, labels)
    if outputNode is None:
        outputNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                             name or f"{referenceVolume.GetName()} segmentation")
        outputNode.CreateDefaultDisplayNodes()
    outputNode.GetSegmentation().DeepCopy(result)
    outputNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolume)
    outputNode.SetNodeReferenceID(outputNode.GetReferenceImageGeometryReferenceRole(), referenceVolume.GetID())
    outputNode.SetAndObserveTransformNodeID(referenceVolume.GetTransformNodeID())
    placeBeside(outputNode, referenceVolume)
    return outputNode


def importVolume(path: PathLike, referenceVolume, name: str, outputNode=None):
    """Read an NRRD volume written by medssl (e.g. the uncertainty map) beside ``referenceVolume``."""
    temporary = slicer.vtkMRMLScalarVolumeNode()
    storage = slicer.vtkMRMLNRRDStorageNode()
    storage.SetFileName(str(path))
    if not Path(path).is_file() or not storage.ReadData(temporary):
        raise RuntimeError(f"could not read the volume {path}")
    scene, outputNode = _liveNodes(referenceVolume, outputNode, "volume")
    if outputNode is None:
        outputNode = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    outputNode.SetAndObserveImageData(temporary.GetImageData())
    outputNode.CopyOrientation(temporary)
    outputNode.SetAndObserveTransformNodeID(referenceVolume.GetTransformNodeID())
    if outputNode.GetDisplayNode() is None:
        outputNode.CreateDefaultDisplayNodes()
    placeBeside(outputNode, referenceVolume)
    return outputNode


def segmentIds(segmentationNode) -> list[str]:
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def _mergedLabelmap(segmentationNode, referenceVolume, ids: Sequence[str]):
    """All segments merged on the reference volume's grid, segment k (in ``ids`` order) as value k."""
    idArray, values = vtk.vtkStringArray(), vtk.vtkIntArray()
    for value, segmentId in enumerate(ids, start=1):
        idArray.InsertNextValue(segmentId)
        values.InsertNextValue(value)
    merged = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GenerateMergedLabelmapInReferenceGeometry(
        segmentationNode, referenceVolume, idArray, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, merged, values)
    return merged


def _checkExportable(segmentationNode, referenceVolume) -> list[str]:
    ids = segmentIds(segmentationNode)
    if not ids:
        raise ValueError(f"{segmentationNode.GetName()} has no segments; label at least one structure")
    if segmentationNode.GetTransformNodeID() != referenceVolume.GetTransformNodeID():
        raise ValueError(f"{segmentationNode.GetName()} and {referenceVolume.GetName()} are under different "
                         f"transforms; harden or remove the transforms first")
    return ids


def exportSegmentation(segmentationNode, referenceVolume, path: PathLike) -> list[str]:
    """Write the segments as ``.seg.nrrd`` exactly on the volume's grid; returns the segment names."""
    ids = _checkExportable(segmentationNode, referenceVolume)
    merged = _mergedLabelmap(segmentationNode, referenceVolume, ids)
    if merged.GetPointData().GetScalars() is None or merged.GetScalarRange()[1] < 1:
        raise ValueError(f"{segmentationNode.GetName()} is empty inside {referenceVolume.GetName()}; "
                         f"paint the structures before adding it to the training set")
    privateScene = slicer.vtkMRMLScene()
    copy = privateScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    copy.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolume)
    newIds = vtk.vtkStringArray()
    for value, segmentId in enumerate(ids, start=1):
        segment = slicer.vtkSegment()
        segment.DeepCopyMetadata(segmentationNode.GetSegmentation().GetSegment(segmentId))
        copy.GetSegmentation().AddSegment(segment, f"Segment_{value}")
        newIds.InsertNextValue(f"Segment_{value}")
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(merged, copy, newIds):
        raise RuntimeError(f"could not convert {segmentationNode.GetName()} to a label map")
    return _writeSegmentation(copy, path)


def _writeSegmentation(segmentationNode, path: PathLike) -> list[str]:
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    storage.SetCropToMinimumExtent(False)
    if not storage.WriteData(segmentationNode):
        raise RuntimeError(f"could not write {path}")
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
