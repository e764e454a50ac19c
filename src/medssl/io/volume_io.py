"""Reading and writing images through SimpleITK: NIfTI, NRRD, MetaImage and DICOM series folders.

Every reader returns a 3D scalar `sitk.Image` with its geometry untouched (spacing, origin, direction,
oblique and left-handed included) or raises `InputError` with one line that says what to do (NaN/Inf
voxels in a NIfTI file included, which ITK would silently read as 0). Writers are
atomic: they write a temporary file beside the target and rename it, so a failed run never leaves a
half-written or overwritten output.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .atomic import atomic_path
from .nifti_check import inspect_nifti, nifti_problem

sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK warnings go to stderr and mean nothing to users

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd")
TIMEPOINT = re.compile(r"^(?P<path>.+)::t=(?P<t>\d+)$")


def split_timepoint(spec: str) -> Tuple[str, Optional[int]]:
    """``"scan.nii.gz::t=3"`` -> (``"scan.nii.gz"``, 3); a plain path -> (path, None)."""
    m = TIMEPOINT.match(str(spec))
    return (m["path"], int(m["t"])) if m else (str(spec), None)


def read_image(spec: str | os.PathLike, what: str = "image") -> sitk.Image:
    """Read a 3D scalar image from a file or a DICOM series folder.

    ``spec`` may end in ``::t=N`` to pick time point N of a 4D image (counted from 0).
    """
    path, timepoint = split_timepoint(str(spec))
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} {path} does not exist; check the path")
    image = _read_dicom_folder(p) if p.is_dir() else _read_file(p, what)
    image = _pick_timepoint(image, path, timepoint, what)
    _check_3d_scalar(image, path, what)
    _check_geometry(image, path, what)
    return image


def _read_file(p: Path, what: str) -> sitk.Image:
    if not os.access(p, os.R_OK):
        raise InputError(f"{what} {p} cannot be read (permission denied); fix its permissions")
    report = inspect_nifti(p)
    if report.bad_spacing:
        raise InputError(f"{what} {p} has zero or negative {report.problem}; fix its header")
    if report.problem:
        raise InputError(f"{what} {p} cannot be read: {report.problem}; copy or export it again")
    if report.nonfinite:  # ITK's NIfTI reader silently turns them into 0, so check_finite cannot see them
        raise InputError(nonfinite_message(f"{what} {p}", report.nonfinite))
    try:
        return sitk.ReadImage(str(p))
    except RuntimeError as exc:
        reason = _itk_reason(str(exc))
        if "spacing" in reason.lower():
            raise InputError(f"{what} {p} has zero or negative voxel spacing ({reason}); fix its header") from None
        raise InputError(
            f"{what} {p} cannot be read ({reason}); check that it is a complete NIfTI, NRRD, MetaImage "
            f"or DICOM file"
        ) from None


def _itk_reason(message: str) -> str:
    """The informative part of an ITK exception text, on one line."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for ln in lines:
        if "Description:" in ln:
            return ln.split("Description:", 1)[1].strip()[:200]
    return (lines[-1] if lines else "unknown reader error")[:200]


def _read_dicom_folder(folder: Path) -> sitk.Image:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"folder {folder} holds no DICOM series; give an image file or a DICOM folder")
    files = [sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid) for uid in series]
    best = max(range(len(series)), key=lambda i: (len(files[i]), series[i]))  # ties: the same series every time
    if len(series) > 1:
        print(f"note: {folder} holds {len(series)} DICOM series; reading {series[best]} ({len(files[best])} files, "
              f"the most); put the series you want in a folder of its own to choose another", file=sys.stderr)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files[best])
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"DICOM series in {folder} cannot be read ({_itk_reason(str(exc))})") from None


def _pick_timepoint(image: sitk.Image, path: str, t: Optional[int], what: str) -> sitk.Image:
    dim = image.GetDimension()
    if dim == 4:
        n = image.GetSize()[3]
        if t is None:
            raise InputError(
                f"{what} {path} is 4D with {n} time points; pick one by writing {path}::t=0 (0..{n - 1})"
            )
        if not 0 <= t < n:
            raise InputError(f"{what} {path} has time points 0..{n - 1}; ::t={t} is out of range")
        size = list(image.GetSize())
        size[3] = 0
        return sitk.Extract(image, size, [0, 0, 0, t])
    if t is not None and t != 0:
        raise InputError(f"{what} {path} is {dim}D and has no time point {t}; remove '::t={t}'")
    return image


THREE_D_ADVICE = "give the 3D volume (for DICOM, the series folder, not one slice file)"


def _check_3d_scalar(image: sitk.Image, path: str, what: str) -> None:
    if image.GetDimension() != 3:
        raise InputError(f"{what} {path} is {image.GetDimension()}D; medssl needs 3D volumes: {THREE_D_ADVICE}")
    if min(image.GetSize()) < 2:
        raise InputError(f"{what} {path} has size {image.GetSize()}, a single slice; medssl needs 3D volumes: "
                         f"{THREE_D_ADVICE}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{what} {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel (colour or "
            f"vector); give one scalar image per channel"
        )


def _check_geometry(image: sitk.Image, path: str, what: str) -> None:
    spacing = np.array(image.GetSpacing())
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(
            f"{what} {path} has spacing {tuple(spacing)}; every spacing must be positive: fix the header"
        )
    d = np.array(image.GetDirection()).reshape(3, 3)
    if not np.all(np.isfinite(d)) or abs(abs(np.linalg.det(d)) - 1) > 1e-3:
        raise InputError(f"{what} {path} has a degenerate direction matrix; fix the header")


def check_finite(image: sitk.Image, name: str) -> None:
    """Raise `InputError` if a floating-point image holds NaN or infinite voxels."""
    if image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        return
    arr = sitk.GetArrayViewFromImage(image)
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise InputError(nonfinite_message(f"image {name}", bad))


def nonfinite_message(subject: str, bad: int) -> str:
    """The one-line error for ``bad`` NaN/Inf voxels in ``subject`` (e.g. ``"input image ct.nii.gz"``)."""
    return (f"{subject} has {bad} NaN or infinite voxels; replace them (for example with the background value) "
            f"before running medssl")


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``image`` atomically (temporary file beside ``path``, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
        _check_written(tmp)
    return path


def _check_written(tmp: Path) -> None:
    """ITK's NIfTI writer does not report a failed write (full disk): check the file it left."""
    problem = nifti_problem(tmp)
    if problem:
        raise OSError(28, f"No space left on device ({problem})")


def find_images(folder: str | os.PathLike) -> List[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))


def strip_suffix(name: str) -> str:
    """File name without its image suffix (``case_01.nii.gz`` -> ``case_01``)."""
    low = name.lower()
    for suf in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if low.endswith(suf):
            return name[: -len(suf)]
    return name
