"""Checks on the files a command is about to write, made before any work starts (`check_outputs`).

A prediction had written over its own input scan (``--output`` the same file as ``--input``, or a folder run whose
``--output-dir`` is the input folder with ``--output-suffix .nii.gz``), replaced an existing file without a word,
lost one of two outputs named by two spellings of one path (``out/a.nii.gz`` and ``./out/a.nii.gz``), and
stopped with a traceback after the whole sliding window for an ending no writer knows (``seg.txt``). Here:

- an output that is one of the inputs (the same path once resolved, or the same file through a link) is refused,
  whatever ``--overwrite`` says: a segmentation never replaces the scan it was computed from;
- two outputs that are one file, an output that is a folder, and an ending no writer takes (`check_suffix`) are
  refused;
- an existing output is refused unless ``overwrite`` (``--overwrite``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from ..errors import InputError
from .volume_io import IMAGE_SUFFIXES, split_timepoint

LABEL_SUFFIXES = IMAGE_SUFFIXES + (".dcm",)  # .dcm: a DICOM SEG (`io.dicom_seg`)


def input_paths(specs: Iterable[str]) -> List[Path]:
    """The files (or DICOM folders) named by input specs, without a ``::t=N`` time point, resolved."""
    return [Path(split_timepoint(spec)[0]).resolve() for spec in specs]


def _same_file(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_suffix(path: Path, option: str, suffixes: Sequence[str], shown: Optional[str] = None) -> None:
    """`InputError` unless ``path``'s name ends in one of ``suffixes`` (case-insensitive) and it is no folder;
    ``shown``: what the message quotes (default ``path``)."""
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name inside it, e.g. "
                         f"{path / ('result' + suffixes[0])}")
    if not path.name.lower().endswith(tuple(suffixes)):
        raise InputError(f"{option} {shown or path}: medssl writes {', '.join(suffixes)} files; give a name with "
                         f"one of these endings")


def check_outputs(outputs: Dict[str, Path], inputs: Sequence[Path], overwrite: bool) -> None:
    """``outputs``: {option (e.g. ``--output``): path}; ``inputs``: resolved input files (`input_paths`).
    `InputError` in one line for the cases of the module docstring."""
    seen: Dict[Path, str] = {}
    for option, path in outputs.items():
        target = Path(path).resolve()
        if target in seen:
            raise InputError(f"{seen[target]} and {option} name the same file {path}; give different files")
        seen[target] = option
        if any(_same_file(target, source) for source in inputs):
            raise InputError(f"{option} {path} is one of the input images; write the result to another file "
                             f"(the input is never replaced)")
        if target.exists() and not overwrite:
            raise InputError(f"{option} {path} already exists; pass --overwrite to replace it, or choose another name")


def check_folder_outputs(targets: Sequence[Path], inputs: Sequence[Path], overwrite: bool, out_dir: Path) -> None:
    """The per-case files of a folder run (``--output-dir``): none may be an input; existing ones need
    ``overwrite``. The message names the first few."""
    sources = [p.resolve() for p in inputs]
    clash = [t for t in targets if any(_same_file(t.resolve(), s) for s in sources)]
    if clash:
        raise InputError(f"--output-dir {out_dir}: the output {clash[0].name} would replace an input image; choose "
                         f"another --output-dir or --output-suffix (the inputs are never replaced)")
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        names = ", ".join(t.name for t in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise InputError(f"--output-dir {out_dir}: {len(existing)} of the {len(targets)} output(s) already exist "
                         f"({names}); pass --overwrite to replace them, or choose another --output-dir")
