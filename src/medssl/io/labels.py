"""Label maps and 3D Slicer ``.seg.nrrd`` segmentations (names, colours, label values, terminology).

A ``.seg.nrrd`` is an NRRD with per-segment metadata (``Segment<N>_Name``, ``_Color``, ``_LabelValue``,
``_Layer``, ``_Tags``...) as 3D Slicer's ``vtkMRMLSegmentationStorageNode`` writes it; SimpleITK reads and
writes it without Slicer. Segments of several layers (overlapping segments) are stored as a 4D ``list``
NRRD; reading merges them into one label map (later segments win where they overlap).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..colors import label_color
from ..errors import InputError
from ..plan import LabelSpec
from .atomic import atomic_path
from .volume_io import _check_geometry, _check_written, _read_file

SLICER_ANATOMY = "Segmentation category and type - 3D Slicer General Anatomy list"
TISSUE = ["SCT", "85756007", "Tissue"]  # Slicer's default terminology for a new segment


@dataclass
class LabelMap:
    """An integer label image and, when the file said so, what its values mean."""

    image: sitk.Image
    segments: Optional[List[LabelSpec]] = None

    def values(self) -> List[int]:
        return [int(v) for v in np.unique(sitk.GetArrayViewFromImage(self.image))]


def is_seg_nrrd(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".seg.nrrd")


def read_label_map(path: str | os.PathLike, what: str = "label map") -> LabelMap:
    """Read a label map (any image format) or a Slicer ``.seg.nrrd``; values must be integers >= 0."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} {p} does not exist; check the path")
    image = _read_file(p, what)
    layered = _segments_from_metadata(image) if is_seg_nrrd(p) else []
    segments = [seg for seg, _ in layered] if is_seg_nrrd(p) else None
    if image.GetNumberOfComponentsPerPixel() > 1:
        image, segments = _merge_layers(image, layered)
    if image.GetDimension() != 3:
        raise InputError(f"{what} {p} is {image.GetDimension()}D; label maps must be 3D")
    _check_geometry(image, str(p), what)
    return LabelMap(_as_integer_labels(image, p, what), segments)


def _as_integer_labels(image: sitk.Image, path: Path, what: str) -> sitk.Image:
    arr = sitk.GetArrayViewFromImage(image)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise InputError(f"{what} {path} holds non-integer values; a label map must hold whole numbers")
    if arr.min() < 0 or arr.max() > 65535:
        raise InputError(f"{what} {path} has values outside 0..65535; a label map must hold label numbers")
    if image.GetPixelID() == sitk.sitkUInt8:
        return image
    return sitk.Cast(image, sitk.sitkUInt16)


def _segments_from_metadata(image: sitk.Image) -> List[Tuple[LabelSpec, int]]:
    """(segment, layer) pairs from ``Segment<N>_*`` metadata, in file order."""
    keys = set(image.GetMetaDataKeys())
    out: List[Tuple[LabelSpec, int]] = []
    n = 0
    while f"Segment{n}_Name" in keys:
        get = lambda k, d="": image.GetMetaData(f"Segment{n}_{k}") if f"Segment{n}_{k}" in keys else d  # noqa
        color = tuple(float(c) for c in get("Color", "0.5 0.5 0.5").split()[:3])
        spec = LabelSpec(int(get("LabelValue", str(n + 1))), get("Name"), color, _terminology(get("Tags")))
        out.append((spec, int(get("Layer", "0"))))
        n += 1
    return out


def _terminology(tags: str) -> Optional[Dict[str, List[str]]]:
    """Parse ``TerminologyEntry:<context>~<cat>~<type>~...`` into {"category": [...], "type": [...]}."""
    for tag in tags.split("|"):
        if tag.startswith("TerminologyEntry:"):
            parts = tag.split(":", 1)[1].split("~")
            if len(parts) >= 3 and parts[1].count("^") == 2 and parts[2].count("^") == 2:
                return {"category": parts[1].split("^"), "type": parts[2].split("^")}
    return None


def _merge_layers(image: sitk.Image, layered: List[Tuple[LabelSpec, int]]):
    """Collapse a multi-layer segmentation into one label map with values 1..N in segment order."""
    arr = sitk.GetArrayFromImage(image)  # (k, j, i, layers)
    merged = np.zeros(arr.shape[:3], np.uint16)
    new = []
    for n, (seg, layer) in enumerate(layered, start=1):
        merged[arr[..., layer] == seg.value] = n
        new.append(LabelSpec(n, seg.name, seg.color, seg.terminology))
    out = sitk.GetImageFromArray(merged)
    out.SetSpacing(image.GetSpacing())
    out.SetOrigin(image.GetOrigin())
    out.SetDirection(image.GetDirection())
    return out, new


def terminology_tag(label: LabelSpec) -> str:
    """Slicer ``TerminologyEntry`` tag for a label (its own codes, else Slicer's default 'Tissue')."""
    term = label.terminology or {}
    cat = term.get("category") or TISSUE
    typ = term.get("type") or TISSUE
    return f"TerminologyEntry:{SLICER_ANATOMY}~{'^'.join(cat)}~{'^'.join(typ)}~^^~Anatomic codes - DICOM master list~^^~^^|"


def segmentation_image(labels: sitk.Image, segments: Sequence[LabelSpec]) -> sitk.Image:
    """Attach Slicer segmentation metadata to an integer label image (background not listed)."""
    out = sitk.Cast(labels, sitk.sitkUInt8 if max(s.value for s in segments) < 256 else sitk.sitkUInt16)
    size = out.GetSize()
    extent = f"0 {size[0] - 1} 0 {size[1] - 1} 0 {size[2] - 1}"
    for n, seg in enumerate(s for s in segments if s.value != 0):
        color = seg.color if seg.color is not None else label_color(seg.value)
        meta = {"ID": f"Segment_{seg.value}", "Name": seg.name, "NameAutoGenerated": "0",
                "Color": " ".join(f"{c:.6g}" for c in color), "ColorAutoGenerated": "0",
                "LabelValue": str(seg.value), "Layer": "0", "Extent": extent, "Tags": terminology_tag(seg)}
        for key, value in meta.items():
            out.SetMetaData(f"Segment{n}_{key}", value)
    out.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    out.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    out.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    return out


def write_label_map(labels: sitk.Image, segments: Sequence[LabelSpec], path: str | os.PathLike) -> Path:
    """Write a label map atomically; ``.seg.nrrd`` gets names, colours, values and terminology."""
    path = Path(path)
    image = segmentation_image(labels, segments) if is_seg_nrrd(path) else labels
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), True)
        _check_written(tmp)
    return path
