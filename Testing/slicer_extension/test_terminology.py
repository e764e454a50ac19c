"""Terminology round trips keep all seven fields of Slicer's terminology string (real MRML storage nodes).

Slicer's format (vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry, v5.6.2 .cxx:1933, same in
v5.10.0 and main): ``context~category~type~typeModifier~regionContext~region~regionModifier``, codes
``scheme^value^meaning``; ``.seg.nrrd`` stores it as the segment tag ``TerminologyEntry`` (storage node
``GetSegmentTagsAsString``).
"""

import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
import vtk  # noqa: E402

from MedSSLLib import nodeio  # noqa: E402
from MedSSLLib.packages import LabelInfo, readPackage  # noqa: E402
from MedSSLLib.testing import makeTinyPackage, volumeFromArray  # noqa: E402

ANATOMY = "Segmentation category and type - 3D Slicer General Anatomy list"
KIDNEY = "SCT^123037004^Anatomical Structure~SCT^64033007^Kidney"
ENTRIES = {  # strings as Slicer's terminology selector writes them
    "left kidney": f"{ANATOMY}~{KIDNEY}~SCT^7771000^Left~Anatomic codes - DICOM master list~^^~^^",
    "right kidney": f"{ANATOMY}~{KIDNEY}~SCT^24028007^Right~Anatomic codes - DICOM master list~^^~^^",
    "liver tumour": ("Segmentation category and type - DICOM master list~SCT^49755003^Morphologically Altered "
                     "Structure~SCT^108369006^Neoplasm~^^~Anatomic codes - DICOM master list~SCT^10200004^Liver"
                     "~SCT^7771000^Left"),
}
OLD_LABEL = {"category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "10200004", "Liver"]}
OLD_ENTRY = f"{ANATOMY}~SCT^123037004^Anatomical Structure~SCT^10200004^Liver~^^~Anatomic codes - DICOM master list~^^~^^"


def slicerSegmentationFile(scene, path, entries):
    """A ``.seg.nrrd`` written by Slicer's storage node, one segment per entry (label values 1, 2, ...)."""
    values = np.zeros((6, 7, 8), np.uint8)
    for value in range(1, len(entries) + 1):
        values[value, 2:5, 2:6] = value
    volume = volumeFromArray(scene, values, np.diag([1.0, 1.0, 1.0, 1.0]), "labels")
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    labelmap.SetAndObserveImageData(volume.GetImageData())
    labelmap.CopyOrientation(volume)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    for index, (name, entry) in enumerate(entries.items()):
        segment = segmentation.GetSegmentation().GetNthSegment(index)
        segment.SetName(name)
        segment.SetTag(segment.GetTerminologyEntryTagName(), entry)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    assert storage.WriteData(segmentation)
    return path


def slicerEntries(path):
    """{segment name: terminology string} as Slicer's storage node reads the file."""
    segmentation = nodeio.readSegmentationFile(path)
    segments = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
    return {segment.GetName(): segment.GetTerminology() for segment in segments}


def test_seg_nrrd_from_slicer_keeps_all_seven_fields_through_medssl(scene, tmp_path):
    """Slicer writes, medssl reads and writes again, Slicer reads: every string is unchanged (left != right)."""
    from medssl.io.labels import read_label_map, write_label_map
    from medssl.io.terminology import parse_entry

    written = slicerSegmentationFile(scene, tmp_path / "slicer.seg.nrrd", ENTRIES)
    labels = read_label_map(written)
    terms = {segment.name: segment.terminology for segment in labels.segments}
    assert terms["left kidney"] != terms["right kidney"]
    assert terms["left kidney"]["typeModifier"] == ["SCT", "7771000", "Left"]
    assert terms["liver tumour"]["context"] == "Segmentation category and type - DICOM master list"
    assert terms["liver tumour"]["region"] == ["SCT", "10200004", "Liver"]
    assert terms["liver tumour"]["regionModifier"] == ["SCT", "7771000", "Left"]
    assert terms == {name: parse_entry(entry) for name, entry in ENTRIES.items()}
    again = write_label_map(labels.image, labels.segments, tmp_path / "medssl.seg.nrrd")
    assert slicerEntries(again) == ENTRIES


def test_package_labels_keep_all_seven_fields_into_the_scene(scene, tmp_path):
    """Labels of a package (plan.json, as fine-tuning stores them) -> segment terminology in the scene."""
    from medssl.io.terminology import parse_entry

    labels = [{"value": v, "name": name, "color": [0.1 * v, 0.5, 0.5], "terminology": parse_entry(entry)}
              for v, (name, entry) in enumerate(ENTRIES.items(), start=1)]
    package = readPackage(makeTinyPackage(tmp_path / "kidneys", labels))
    assert json.loads((package.path / "plan.json").read_text())["labels"][1]["terminology"] == labels[0]["terminology"]
    result = slicerSegmentationFile(scene, tmp_path / "plain.seg.nrrd", {name: "" for name in ENTRIES})
    segmentation = nodeio.readSegmentationFile(result)
    nodeio.applyLabels(segmentation, package.labels)
    assert {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegment(i).GetTerminology()
            for i in range(segmentation.GetNumberOfSegments())} == ENTRIES


def test_old_two_field_labels_read_as_before():
    """Packages written before the seven fields (category and type only) give the same string as then."""
    from medssl.io.terminology import format_entry

    assert nodeio.terminologyEntry(LabelInfo(1, "liver", terminology=OLD_LABEL)) == OLD_ENTRY
    assert format_entry(OLD_LABEL) == OLD_ENTRY
    tissue = f"{ANATOMY}~SCT^85756007^Tissue~SCT^85756007^Tissue~^^~Anatomic codes - DICOM master list~^^~^^"
    assert nodeio.terminologyEntry(LabelInfo(1, "x")) == format_entry(None) == tissue


@pytest.mark.parametrize("entry", [*ENTRIES.values(), OLD_ENTRY])
def test_extension_and_core_write_the_same_string(entry):
    """MedSSLLib (runs without medssl) and medssl format every terminology identically."""
    from medssl.io.terminology import format_entry, parse_entry

    term = parse_entry(entry)
    assert format_entry(term) == entry
    assert nodeio.terminologyEntry(LabelInfo(1, "x", terminology=term)) == entry


class Slicer58Segment:
    """A real vtkSegment seen through the API of Slicer 5.6/5.8 (vtkSegment.h there has no SetTerminology)."""

    API = ("SetTag", "GetTag", "GetTerminologyEntryTagName", "SetName", "GetName", "SetColor", "GetLabelValue")

    def __init__(self, segment):
        self._segment = segment

    def __getattr__(self, name):
        if name not in self.API:
            raise AttributeError(name)
        return getattr(self._segment, name)


class Slicer58Segmentation:
    def __init__(self, segmentation):
        self._segmentation = segmentation

    def GetNumberOfSegments(self):
        return self._segmentation.GetNumberOfSegments()

    def GetNthSegment(self, index):
        return Slicer58Segment(self._segmentation.GetNthSegment(index))


def test_labels_apply_with_the_segment_api_of_slicer_5_8():
    segmentation = slicer.vtkSegmentation()
    segment = slicer.vtkSegment()
    segment.SetLabelValue(1)
    segmentation.AddSegment(segment, "s1")
    label = LabelInfo(1, "left kidney", (0.2, 0.3, 0.4), terminology={"category": KIDNEY.split("~")[0].split("^"),
                                                                       "type": ["SCT", "64033007", "Kidney"]})
    nodeio.applyLabels(Slicer58Segmentation(segmentation), [label])
    assert segment.GetName() == "left kidney"
    assert segment.GetTerminology() == nodeio.terminologyEntry(label)
    value = vtk.reference("")
    assert segment.GetTag("TerminologyEntry", value) and str(value) == nodeio.terminologyEntry(label)
