"""Demo data: Colin27 T1 and the AAL atlas (Debian ``mricron-data``), grouped into eight coarse regions.

AAL (Tzourio-Mazoyer et al., NeuroImage 2002) has 116 labels named in ``aal.nii.txt`` (``<value> <name>
<code>`` per line). They are grouped by name into lobes and structures; the hemisphere split uses the
world (LPS) x coordinate, so the demo can train on one hemisphere and test on the other.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..io.geometry import Grid, world_lps_coordinates
from ..plan import LabelSpec

SEARCH = [os.environ.get("MEDSSL_DEMO_DATA", ""), "/usr/share/mricron/templates", "/usr/share/mricron"]

# (region name, RGB, AAL name prefixes, SNOMED CT type code or None)
REGIONS: List[Tuple[str, Tuple[float, float, float], Tuple[str, ...], Tuple[str, str] | None]] = [
    ("Frontal lobe", (0.90, 0.35, 0.30), ("Precentral", "Frontal", "Rolandic", "Supp_Motor", "Olfactory", "Rectus"),
     ("83251001", "Frontal lobe")),
    ("Parietal lobe", (0.35, 0.60, 0.90), ("Postcentral", "Parietal", "SupraMarginal", "Angular", "Precuneus",
                                           "Paracentral"), ("16630005", "Parietal lobe")),
    ("Temporal lobe", (0.45, 0.80, 0.40), ("Temporal", "Heschl", "Fusiform"), ("78277001", "Temporal lobe")),
    ("Occipital lobe", (0.95, 0.80, 0.25), ("Occipital", "Calcarine", "Cuneus", "Lingual"), ("31065004", "Occipital lobe")),
    ("Insula and cingulate", (0.75, 0.45, 0.85), ("Insula", "Cingulum"), None),
    ("Medial temporal", (0.30, 0.85, 0.85), ("Hippocampus", "ParaHippocampal", "Amygdala"), None),
    ("Deep grey matter", (0.95, 0.55, 0.75), ("Caudate", "Putamen", "Pallidum", "Thalamus"), None),
    ("Cerebellum", (0.60, 0.45, 0.30), ("Cerebelum", "Vermis"), ("113305005", "Cerebellum")),
]


def find_demo_data() -> Dict[str, Path]:
    """Paths of ``ch2.nii.gz``, ``aal.nii.gz`` and ``aal.nii.txt``; `InputError` says how to install them."""
    for folder in SEARCH:
        if folder and (Path(folder) / "aal.nii.gz").exists():
            d = Path(folder)
            return {"t1": d / "ch2.nii.gz", "aal": d / "aal.nii.gz", "names": d / "aal.nii.txt"}
    raise InputError("the demo data (Colin27 + AAL) is not installed; run 'sudo apt-get install mricron-data' "
                     "(or 'make demo', which installs it), or set MEDSSL_DEMO_DATA to a folder holding aal.nii.gz")


def read_aal_names(path: Path) -> Dict[int, str]:
    names = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1]
    return names


def region_labels() -> List[LabelSpec]:
    out = [LabelSpec(0, "background", (0.0, 0.0, 0.0))]
    for value, (name, color, _, code) in enumerate(REGIONS, start=1):
        term = {"category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", code[0], code[1]]} if code else None
        out.append(LabelSpec(value, name, color, term))
    return out


def coarse_lookup(aal_names: Dict[int, str]) -> np.ndarray:
    """Table AAL value -> region value (1..8), 0 for background."""
    table = np.zeros(256, np.uint8)
    for aal_value, name in aal_names.items():
        for region, (_, _, prefixes, _) in enumerate(REGIONS, start=1):
            if name.startswith(prefixes):
                table[aal_value] = region
    missing = [n for v, n in aal_names.items() if table[v] == 0]
    if missing:
        raise ValueError(f"AAL labels without a region: {missing}")
    return table


def coarse_regions(aal: sitk.Image, aal_names: Dict[int, str]) -> sitk.Image:
    out = sitk.GetImageFromArray(coarse_lookup(aal_names)[sitk.GetArrayViewFromImage(aal)])
    out.CopyInformation(aal)
    return out


def hemisphere_only(labels: sitk.Image, keep: str, ignore: int = 255) -> sitk.Image:
    """``labels`` with voxels of the other hemisphere (and the midline) set to ``ignore``.

    LPS world x > 0 is the subject's left, x < 0 the right.
    """
    x = world_lps_coordinates(Grid.of(labels), 0).transpose(2, 1, 0)  # (k, j, i) like the array
    other = x <= 0 if keep == "left" else x >= 0
    arr = sitk.GetArrayFromImage(labels)
    arr[other] = ignore
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(labels)
    return out
