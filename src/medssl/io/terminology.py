"""3D Slicer terminology entries (the ``TerminologyEntry`` segment tag) <-> a label's terminology dict.

Follows 3D Slicer's ``vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry`` and
``DeserializeTerminologyEntry`` (Slicer v5.6.2 ``Modules/Loadable/Terminologies/Logic/
vtkSlicerTerminologiesModuleLogic.cxx:1933-2100``, unchanged in v5.10.0 ``:1989-2160`` and main): seven
``~``-separated fields ``contextName~category~type~typeModifier~regionContextName~region~regionModifier``,
each code written ``codingScheme^codeValue^codeMeaning`` (``^^`` when empty). A label stores the same seven
fields as a dict (`FIELDS`; codes as ``[scheme, value, meaning]`` or None). Dicts of older packages hold only
``category`` and ``type``; they read with the contexts the older writer used, so their strings do not change.
The same rule is written once more, without medssl, in the Slicer extension (``MedSSLLib/nodeio.py``); a
test keeps both identical.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

FIELDS = ("context", "category", "type", "typeModifier", "regionContext", "region", "regionModifier")
CONTEXT_FIELDS = ("context", "regionContext")
SLICER_ANATOMY = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
TISSUE = ["SCT", "85756007", "Tissue"]  # Slicer's default terminology for a new segment
TAG = "TerminologyEntry"  # vtkSegment::GetTerminologyEntryTagName()

Terminology = Dict[str, Any]


def _code(text: str) -> Optional[List[str]]:
    parts = text.split("^")
    return parts if len(parts) == 3 and any(parts) else None


def parse_entry(entry: str) -> Optional[Terminology]:
    """The seven fields of a Slicer terminology string, or None when it has no category and type.

    Slicer requires exactly seven fields; shorter strings written by other tools are padded with empty ones."""
    parts = entry.split("~")
    if len(parts) < 3 or len(parts) > len(FIELDS):
        return None
    parts += [""] * (len(FIELDS) - len(parts))
    category, typ = _code(parts[1]), _code(parts[2])
    if category is None or typ is None:
        return None
    region = _code(parts[5])
    return {"context": parts[0], "category": category, "type": typ, "typeModifier": _code(parts[3]),
            "regionContext": parts[4], "region": region,
            "regionModifier": _code(parts[6]) if region else None}  # Slicer reads the modifier only with a region


def normalised(terminology: Optional[Terminology]) -> Terminology:
    """All seven fields; missing ones as the older two-field writer had them (Slicer's default Tissue)."""
    term = dict(terminology or {})
    out: Terminology = {"context": term.get("context") or SLICER_ANATOMY,
                        "regionContext": term.get("regionContext") or ANATOMIC_CONTEXT}
    for name in ("category", "type"):
        out[name] = list(term.get(name) or TISSUE)
    for name in ("typeModifier", "region", "regionModifier"):
        out[name] = list(term[name]) if term.get(name) else None
    if out["region"] is None:
        out["regionModifier"] = None  # Slicer reads a region modifier only together with a region
    return out


def _codeText(code: Optional[Sequence[str]]) -> str:
    return "^".join(code) if code else "^^"


def format_entry(terminology: Optional[Terminology]) -> str:
    """The Slicer terminology string of a label's terminology (Slicer's default Tissue when there is none)."""
    term = normalised(terminology)
    return "~".join(term[name] if name in CONTEXT_FIELDS else _codeText(term[name]) for name in FIELDS)


def tag_value(terminology: Optional[Terminology]) -> str:
    """The ``Segment<N>_Tags`` value of a ``.seg.nrrd`` (``name:value|`` pairs, as Slicer's storage node writes)."""
    return f"{TAG}:{format_entry(terminology)}|"


def from_tags(tags: str) -> Optional[Terminology]:
    """The terminology in a ``Segment<N>_Tags`` value (split like ``SetSegmentTagsFromString``: ``|``, first ``:``)."""
    for tag in tags.split("|"):
        name, _, value = tag.partition(":")
        if name == TAG:
            return parse_entry(value)
    return None
