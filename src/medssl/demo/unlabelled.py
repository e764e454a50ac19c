"""The unlabelled real scans found offline, for the demo's pretraining and `benchmarks/label_efficiency.py`.

Colin27 T1 (Debian ``mricron-data``, the demo's own subject), the MNI152 2009a T1 bundled with nilearn, the
ITK KmeansTest T1 (``insighttoolkit5-examples``) and nibabel's anatomical test image. The packages are located
without importing them (nilearn is installed with ``--no-deps``); missing scans are skipped.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import List, Optional

from .brain_regions import find_demo_data

ITK_T1 = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz")


def _package_file(package: str, relative: str) -> Optional[Path]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / relative


def unlabelled_scans(include_demo_subject: bool = True) -> List[str]:
    """Paths of the scans that exist, Colin27 first (left out with ``include_demo_subject=False``)."""
    candidates = [find_demo_data()["t1"]] if include_demo_subject else []
    candidates += [_package_file("nilearn", "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),
                   ITK_T1, _package_file("nibabel", "tests/data/anatomical.nii")]
    return [str(p) for p in candidates if p is not None and p.exists()]
