"""Sparse-slice annotation: a label map painted on a few slices only.

In sparse mode a slice (along the axis the user painted) that carries no segment is *not labelled*: its voxels
become the ignore label (255), so the loss, the Dice of validation and the patch sampler skip them, while
unpainted voxels *on* a painted slice stay background. This is the "sparse annotation" setting of
Çiçek et al., 3D U-Net (MICCAI 2016), where the weighted loss gives unlabelled voxels weight zero; here the
zero weight is the ignore label that `medssl.train.losses.masked_dice_ce` already masks.

Resampling a one-slice-thick annotation to a coarser network spacing by nearest neighbour would drop most
painted slices (1 mm slices every 10 mm sampled every 3 mm keep one in three). So before resampling, each
unlabelled slice within half a network voxel of a painted slice takes that slice's labels
(`_thicken`): the network grid then has exactly one labelled slice per painted slice.

Axis names: ``i``, ``j``, ``k`` are the file's voxel axes; ``axial``, ``coronal``, ``sagittal`` are the
voxel axes closest to superior-inferior, anterior-posterior and left-right; ``auto`` finds the painted axis
per case (`detect_axis`) and leaves a case whose labels look dense unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..io.geometry import Grid

AXES = ("auto", "axial", "coronal", "sagittal", "i", "j", "k")
WORLD_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}  # LPS: x left-right, y anterior-posterior, z superior
MAX_RUN = 2  # `auto`: painted slices come in runs of at most this many adjacent slices


@dataclass
class SparseInfo:
    """What sparse mode did to one case: the painted voxel axis (0=i, 1=j, 2=k) and slice counts."""

    axis: Optional[int]
    painted: int
    slices: int

    def describe(self, name: str) -> str:
        if self.axis is None:
            return f"{name}: labels look dense (no unlabelled slices between painted ones); used as they are"
        return f"{name}: {self.painted} of {self.slices} slices along axis {'ijk'[self.axis]} painted; the others are not labelled"


def check_axis_name(axis: str) -> str:
    if axis not in AXES:
        raise InputError(f"--sparse-slices {axis!r} is not one of {', '.join(AXES)}")
    return axis


def painted_slices(arr_kji: np.ndarray, axis: int, ignore: int = 255) -> np.ndarray:
    """Indices of the slices along voxel axis ``axis`` that carry a segment (a label other than 0 and ``ignore``)."""
    segment = (arr_kji != 0) & (arr_kji != ignore)
    np_axis = 2 - axis  # numpy arrays from SimpleITK are (k, j, i)
    other = tuple(a for a in range(3) if a != np_axis)
    return np.flatnonzero(segment.any(axis=other))


def _runs(indices: np.ndarray) -> List[int]:
    """Lengths of the runs of consecutive integers in sorted ``indices``."""
    if len(indices) == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) > 1)
    edges = np.concatenate([[-1], breaks, [len(indices) - 1]])
    return [int(n) for n in np.diff(edges)]


def detect_axis(arr_kji: np.ndarray, ignore: int = 255) -> Optional[int]:
    """The painted axis: painted slices along it come in runs of at most `MAX_RUN` slices (the fewest painted
    slices wins if several axes qualify); None when no axis qualifies (dense labels)."""
    candidates = []
    for axis in range(3):
        idx = painted_slices(arr_kji, axis, ignore)
        runs = _runs(idx)
        if runs and float(np.median(runs)) <= MAX_RUN and len(idx) < arr_kji.shape[2 - axis]:
            candidates.append((len(idx), axis))
    return min(candidates)[1] if candidates else None


def named_axis(image: sitk.Image, axis: str) -> int:
    """Voxel axis for ``i``/``j``/``k`` or the one closest to the named anatomical direction."""
    if axis in ("i", "j", "k"):
        return "ijk".index(axis)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return int(np.argmax(np.abs(direction[WORLD_AXIS[axis]])))


def _network_step(image: sitk.Image, axis: int, target: Grid) -> float:
    """Network spacing along voxel axis ``axis`` of ``image``, in that axis's voxels."""
    u = np.array(image.GetDirection()).reshape(3, 3)[:, axis]
    d = np.array(target.direction).reshape(3, 3)
    step_mm = float(np.abs(d.T @ u) @ np.array(target.spacing))
    return step_mm / image.GetSpacing()[axis]


def _thicken(arr_kji: np.ndarray, axis: int, painted: np.ndarray, radius: int, ignore: int) -> np.ndarray:
    """Unpainted slices take the labels of the nearest painted slice within ``radius``, others ``ignore``."""
    moved = np.moveaxis(arr_kji, 2 - axis, 0)
    out = np.full_like(moved, ignore)
    for s in range(moved.shape[0]):
        nearest = painted[np.argmin(np.abs(painted - s))]
        if abs(int(nearest) - s) <= radius:
            out[s] = moved[nearest]
    return np.moveaxis(out, 0, 2 - axis)


def make_sparse(label: sitk.Image, axis: str, target: Grid, ignore: int = 255) -> tuple[sitk.Image, SparseInfo]:
    """Class-index label image -> the same with unpainted slices set to ``ignore`` (see the module docstring).

    ``target``: the network grid the label is resampled to next (decides how far painted slices reach).
    """
    arr = sitk.GetArrayFromImage(label)
    voxel_axis = detect_axis(arr, ignore) if axis == "auto" else named_axis(label, check_axis_name(axis))
    if voxel_axis is None:
        return label, SparseInfo(None, 0, 0)
    painted = painted_slices(arr, voxel_axis, ignore)
    slices = arr.shape[2 - voxel_axis]
    if len(painted) == 0:
        raise InputError(f"--sparse-slices: the label map carries no segment on any slice; paint at least one slice")
    radius = max(0, math.ceil((_network_step(label, voxel_axis, target) - 1.0) / 2.0 - 1e-6))
    out = sitk.GetImageFromArray(_thicken(arr, voxel_axis, painted, radius, ignore))
    out.CopyInformation(label)
    return out, SparseInfo(voxel_axis, len(painted), slices)


def labelled_index(label_ijk: np.ndarray, ignore: int = 255, max_points: int = 20000) -> np.ndarray:
    """A regular subsample of the (i, j, k) voxels that carry a label (not ``ignore``), for the patch sampler."""
    idx = np.argwhere(label_ijk != ignore)
    return idx[:: max(1, len(idx) // max_points)]
