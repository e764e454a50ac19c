"""Labelled cases from the command line: files, comma-joined channels, or folders; and their label set.

``--images`` entries are one per case; several channels of a case are joined with commas
(``t1.nii.gz,t2.nii.gz``). A folder holds one file per case, or nnU-Net style ``<case>_0000.nii.gz``,
``<case>_0001.nii.gz`` channel files; labels in a folder are matched to cases by name.

Label semantics come from ``.seg.nrrd`` segment names (mapped by name, so values may differ between files),
from an explicit ``{value: name}`` mapping, or from the values present. Value 255 (the plan's
``ignore_label``) marks voxels without supervision.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..io.labels import LabelMap
from ..io.volume_io import find_images, strip_suffix
from ..plan import LabelSpec, default_labels

CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


@dataclass
class CaseFiles:
    name: str
    channels: List[str]
    label: Optional[str] = None


def as_entries(entries: Any, what: str) -> List[str]:
    """A list of path strings from what a Python caller may pass: one path (str or ``os.PathLike``) or a sequence
    of them. A lone string had been iterated character by character (each ``"."`` then pulled in the working
    folder's images); an in-memory image is refused, as training reads files."""
    if entries is None:
        return []
    if isinstance(entries, (str, os.PathLike)):
        entries = [entries]
    out = []
    for entry in entries:
        if isinstance(entry, sitk.Image):
            raise InputError(f"{what}: fine-tuning reads files; write the image first (SimpleITK.WriteImage) and "
                             f"give its path")
        if not isinstance(entry, (str, os.PathLike)):
            raise InputError(f"{what}: expected file or folder paths, got {type(entry).__name__}")
        out.append(os.fspath(entry))
    return out


def _expand_images(entries: Sequence[str]) -> List[CaseFiles]:
    cases: List[CaseFiles] = []
    for entry in entries:
        p = Path(entry)
        if "," not in entry and p.is_dir() and find_images(p):
            cases.extend(_cases_in_folder(p))
        else:
            channels = [c for c in entry.split(",") if c]
            cases.append(CaseFiles(strip_suffix(Path(channels[0]).name), channels))
    return cases


def _cases_in_folder(folder: Path) -> List[CaseFiles]:
    grouped: Dict[str, List[Path]] = {}
    for f in find_images(folder):
        stem = strip_suffix(f.name)
        m = CHANNEL_SUFFIX.match(stem)
        grouped.setdefault(m["case"] if m else stem, []).append(f)
    return [CaseFiles(name, [str(f) for f in sorted(files)]) for name, files in sorted(grouped.items())]


def _expand_labels(entries: Sequence[str]) -> List[str]:
    out: List[str] = []
    for entry in entries:
        p = Path(entry)
        out.extend(str(f) for f in find_images(p)) if p.is_dir() else out.append(entry)
    return out


def collect_cases(images: Sequence[str], labels: Sequence[str]) -> List[CaseFiles]:
    """Pair image cases with label files (by position, or by name when folders are given); one path may be given
    instead of a list (`as_entries`)."""
    images, labels = as_entries(images, "images"), as_entries(labels, "labels")
    cases = _expand_images(images)
    label_files = _expand_labels(labels)
    if not cases:
        raise InputError("no training images were given; pass --images FILE [FILE ...] or a folder")
    if len(label_files) != len(cases):
        raise InputError(f"{len(cases)} image case(s) but {len(label_files)} label map(s); give one label map per "
                         f"case (several channels of one case are joined with commas: a.nii.gz,b.nii.gz)")
    by_name = {strip_suffix(Path(f).name): f for f in label_files}
    if any(Path(e).is_dir() for e in list(images) + list(labels)) and all(c.name in by_name for c in cases):
        for c in cases:
            c.label = by_name[c.name]
    else:
        for c, f in zip(cases, label_files):
            c.label = f
    for c in cases:  # an intensity image given as its own labels would train a model of one class per grey value
        if any(Path(str(ch).split("::")[0]).resolve() == Path(str(c.label)).resolve() for ch in c.channels):
            raise InputError(f"case {c.name}: the label map {c.label} is the image itself; give the segmentation "
                             f"(label map or .seg.nrrd) drawn on it")
    counts = {len(c.channels) for c in cases}
    if len(counts) > 1:
        raise InputError(f"cases have different numbers of channels ({sorted(counts)}); every case needs the same channels")
    return cases


def label_set(maps: Sequence[LabelMap], names: Optional[Dict[int, str]] = None,
              base: Optional[Sequence[LabelSpec]] = None, ignore: int = 255) -> List[LabelSpec]:
    """The plan's labels: ``base`` if given, else segment names of .seg.nrrd files, else values present."""
    if base is not None:
        return list(base)
    if maps and all(m.segments for m in maps):
        return _labels_from_segments(maps)
    values = sorted({v for m in maps for v in m.values()} - {0, ignore})
    if not values:
        raise InputError("every label map is empty (only background); label at least one structure")
    names = label_names_by_value(names, values)
    specs = default_labels([names.get(v, f"label_{v}") for v in values])
    return [LabelSpec(v, s.name, s.color) if i else s for i, (v, s) in enumerate(zip([0] + values, specs))]


def label_names_by_value(names: Any, values: Sequence[int]) -> Dict[int, str]:
    """``{value: name}`` from a caller's mapping (keys may be text, as ``json.load`` gives them); a list, a key
    that is no number, or a value no label map holds is an `InputError` (each had been ignored or an
    AttributeError)."""
    if not names:
        return {}
    if not isinstance(names, dict):
        raise InputError(f"label names map label values to names, e.g. {{1: 'liver'}}; got a "
                         f"{type(names).__name__}")
    out = {}
    for key, name in names.items():
        try:
            out[int(key)] = str(name)
        except (TypeError, ValueError):
            raise InputError(f"label names: {key!r} is no label value; use the numbers in the label maps, e.g. "
                             f"{{1: 'liver'}}") from None
    absent = sorted(set(out) - set(values))
    if absent:
        raise InputError(f"label names name value(s) {absent} that no label map holds (they hold "
                         f"{', '.join(map(str, values))})")
    return out


def _labels_from_segments(maps: Sequence[LabelMap]) -> List[LabelSpec]:
    seen: Dict[str, LabelSpec] = {}
    for m in maps:
        for seg in m.segments or []:
            seen.setdefault(seg.name.lower(), seg)
    out = [LabelSpec(0, "background", (0.0, 0.0, 0.0))]
    out += [LabelSpec(i, s.name, s.color, s.terminology) for i, s in enumerate(seen.values(), start=1)]
    return out


def value_lookup(m: LabelMap, labels: Sequence[LabelSpec], source: str, ignore: int = 255) -> np.ndarray:
    """Table file value -> class index (position in ``labels``); ``ignore`` stays ``ignore``.

    Segments of a .seg.nrrd are matched to the labels by name; plain label maps by value.
    """
    table = np.full(65536, -1, dtype=np.int32)
    table[0], table[ignore] = 0, ignore
    index_of_value = {lab.value: i for i, lab in enumerate(labels)}
    index_of_name = {lab.name.lower(): i for i, lab in enumerate(labels)}
    if m.segments:
        for seg in m.segments:
            if seg.name.lower() not in index_of_name:
                raise InputError(f"label map {source} has a segment {seg.name!r} that the model does not know "
                                 f"({', '.join(l.name for l in labels[1:])}); rename or remove it")
            table[seg.value] = index_of_name[seg.name.lower()]
    else:
        for v, i in index_of_value.items():
            table[v] = i
    bad = [v for v in m.values() if table[v] < 0]
    if bad and m.segments:  # the file's own header does not say what these voxel values are
        raise InputError(f"label map {source} holds voxel values {bad[:8]} that none of its segments names (its "
                         f"segments have the values {sorted({s.value for s in m.segments})}); the .seg.nrrd header and "
                         f"its voxels disagree: save the segmentation again from 3D Slicer")
    if bad:
        known = ", ".join(str(lab.value) for lab in labels)
        raise InputError(f"label map {source} holds values {bad[:8]} that are not labels of the model ({known}); "
                         f"fix the label map or train a new model")
    return table


def to_class_indices(m: LabelMap, table: np.ndarray) -> sitk.Image:
    """Label image whose voxels are class indices (uint8), ``ignore`` kept."""
    arr = sitk.GetArrayViewFromImage(m.image)
    out = sitk.GetImageFromArray(table[arr].astype(np.uint8))
    out.CopyInformation(m.image)
    return out
