"""DICOM Segmentation output (``medssl predict --input DICOM_FOLDER --output result.dcm``).

A label map on the grid of a DICOM series is written as one DICOM Segmentation instance (Segmentation IOD,
PS3.3 A.51) with highdicom (Herrmann et al., J. Digit. Imaging 2022; MIT licence): binary segments, one per
model label, each with the label's terminology codes (category and type, as Slicer and the model's
``plan.json`` carry them; Slicer's default "Tissue" (SCT 85756007) when a label has none), its colour as the
recommended display CIELab value, and the algorithm ("MedSSL", AI family, CID 7162). Every frame references its
source image (the SOP instance of the series slice it was segmented on), so a PACS or Slicer's DICOM module
shows it on the original series. MONAI Label writes DICOM SEG through highdicom the same way.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..plan import LabelSpec

TISSUE = ("85756007", "SCT", "Tissue")  # (value, scheme, meaning)


def is_dicom_output(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".dcm")


def require_highdicom():
    try:
        import highdicom
    except ImportError:
        raise InputError("writing DICOM SEG (--output *.dcm) needs highdicom: pip install highdicom "
                         "(make install-dev installs it)") from None
    return highdicom


def source_series_files(inputs: Sequence[str]) -> List[str]:
    """The files of the DICOM series read from the first input folder, in the reader's slice order."""
    first = Path(str(inputs[0]))
    if not first.is_dir():
        raise InputError(f"--output *.dcm writes a DICOM SEG that references the input series, so the first "
                         f"--input must be a DICOM series folder ({first} is not a folder); write .seg.nrrd instead")
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(first))
    if not series:
        raise InputError(f"folder {first} holds no DICOM series; give a DICOM folder or write .seg.nrrd")
    files = [sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(first), uid) for uid in series]
    return list(max(files, key=len))  # the series `read_image` picks


def check_seg_references(files: Sequence[str]) -> None:
    """`InputError` before any work when the series lacks what a SEG must reference (the Frame of Reference UID,
    0020,0052; highdicom refuses such sources only after the prediction, with a ValueError)."""
    import pydicom

    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    missing = [name for name in ("FrameOfReferenceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
               if not getattr(header, name, None)]
    if missing:
        raise InputError(f"the DICOM series of {Path(files[0]).parent} has no {missing[0]}, which a DICOM SEG must "
                         f"reference; write the result as .seg.nrrd or .nii.gz instead")


def _code(hd, triplet, default=TISSUE):
    """A highdicom code from a Slicer/plan ``[scheme, value, meaning]`` triplet."""
    if triplet and len(triplet) == 3 and all(triplet):
        scheme, value, meaning = (str(t) for t in triplet)
        return hd.sr.CodedConcept(value, scheme, meaning)
    return hd.sr.CodedConcept(*default)


def _segment_descriptions(hd, labels: Sequence[LabelSpec]):
    from .. import __version__

    algorithm = hd.AlgorithmIdentificationSequence(
        name="MedSSL", version=__version__, family=hd.sr.CodedConcept("123109", "DCM", "Artificial Intelligence"))
    out = []
    for number, label in enumerate(labels, start=1):
        term = label.terminology or {}
        rgb = tuple(int(round(255 * float(c))) for c in (label.color or (0.5, 0.5, 0.5)))
        out.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=label.name[:64],
            segmented_property_category=_code(hd, term.get("category")),
            segmented_property_type=_code(hd, term.get("type")),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*rgb)))
    return out


def segment_array(labels: sitk.Image, specs: Sequence[LabelSpec]) -> np.ndarray:
    """(frames, rows, columns, segments) binary array: segment n (1-based) is label ``specs[n-1]``."""
    arr = sitk.GetArrayViewFromImage(labels)  # (k, j, i) = (frames, rows, columns)
    return np.stack([arr == spec.value for spec in specs], axis=-1).astype(np.uint8)


def label_writer(output: str, inputs: Sequence[str], labels: sitk.Image, specs: Sequence[LabelSpec]):
    """``tmp -> None`` writing ``labels`` to a temporary path for ``output``: DICOM SEG for ``.dcm`` (the first
    input must then be a DICOM series folder), else `write_label_map` (.seg.nrrd keeps names and colours)."""
    from .labels import write_label_map

    if is_dicom_output(output):
        files = source_series_files(inputs)
        return lambda tmp: write_dicom_seg(labels, specs, files, tmp)
    return lambda tmp: write_label_map(labels, specs, tmp)


def write_dicom_seg(labels: sitk.Image, specs: Sequence[LabelSpec], source_files: Sequence[str],
                    path: str | os.PathLike) -> Path:
    """Write ``labels`` (on the grid of ``source_files``) as a DICOM SEG referencing them."""
    hd = require_highdicom()
    import pydicom

    sources = [pydicom.dcmread(f) for f in source_files]
    foreground = [s for s in specs if s.value != 0]
    if len(sources) != labels.GetSize()[2]:
        raise InputError(f"the label map has {labels.GetSize()[2]} slices but the DICOM series {len(sources)}; "
                         f"the segmentation must lie on the input series' grid")
    for src in sources:  # optional (type 2) in some series, but highdicom's pixel measures need it
        if "SliceThickness" not in src or not src.SliceThickness:
            src.SliceThickness = f"{labels.GetSpacing()[2]:.6g}"
    try:
        seg = _segmentation(hd, sources, labels, foreground)
    except ValueError as exc:  # highdicom's checks of the source series, in one line
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputError(f"DICOM SEG cannot reference this series ({first}); write .seg.nrrd or .nii.gz instead") from None
    seg.save_as(str(path))
    return Path(path)


def _segmentation(hd, sources, labels: sitk.Image, foreground: Sequence[LabelSpec]):
    from .. import __version__

    return hd.seg.Segmentation(
        source_images=sources, pixel_array=segment_array(labels, foreground),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(hd, foreground), series_instance_uid=hd.UID(),
        series_number=max(1, int(getattr(sources[0], "SeriesNumber", 0) or 0) + 1000), sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="MedSSL", manufacturer_model_name="medssl", software_versions=__version__,
        device_serial_number="0", content_label="MEDSSL", content_description="MedSSL automatic segmentation",
        series_description="MedSSL segmentation", omit_empty_frames=False)
