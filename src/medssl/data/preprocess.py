"""THE deterministic preprocessing, shared by pretraining, fine-tuning and inference, and its inverse.

``preprocess(channels, plan, label=None)`` reorients to ``plan.orientation``, resamples to ``plan.spacing``
(images linear, labels nearest), normalises each channel with its frozen statistics and returns
``(C, I, J, K)`` float32 arrays plus a `PreprocessRecord`. ``invert_*`` uses the record to put a prediction
back on the input grid: the output grid *is* the input grid (size, spacing, origin, direction, oblique and
left-handed included), because the prediction is resampled in physical space onto it (nnU-Net
``properties`` / MONAI ``Invertd`` idea, implemented with SimpleITK).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..io.geometry import Grid, array_ijk, same_grid
from ..io.volume_io import check_finite
from ..plan import Plan, check_channel_count
from .normalization import normalize


@dataclass
class PreprocessRecord:
    """Where the network grid sits relative to the input grid."""

    input_grid: Grid
    network_grid: Grid

    def identity(self) -> bool:
        """True when the network grid equals the input grid (no resampling needed to invert)."""
        return same_grid(self.input_grid, self.network_grid, rtol=1e-6, atol_mm=1e-6)

    def to_dict(self) -> dict:
        return {"input_grid": self.input_grid.to_dict(), "network_grid": self.network_grid.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessRecord":
        return cls(Grid.from_dict(d["input_grid"]), Grid.from_dict(d["network_grid"]))


@dataclass
class Preprocessed:
    image: np.ndarray  # (C, I, J, K) float32
    label: Optional[np.ndarray]  # (I, J, K) uint8/uint16, or None
    record: PreprocessRecord


def target_grid(image: sitk.Image, orientation: str, spacing: Optional[Sequence[float]]) -> Grid:
    """Grid of the network input: ``image`` reoriented, at ``spacing`` (None: native), same physical extent."""
    oriented = _reorient_info(image, orientation)
    if spacing is None:
        return oriented
    spacing = np.array(spacing, dtype=np.float64)
    extent = np.array(oriented.size) * np.array(oriented.spacing)
    size = np.maximum(1, np.round(extent / spacing)).astype(int)
    d = np.array(oriented.direction).reshape(3, 3)
    # keep the outer corner of voxel (0,0,0) in place: centre moves by half the spacing change
    origin = np.array(oriented.origin) + d @ ((spacing - np.array(oriented.spacing)) / 2.0)
    return Grid(tuple(int(s) for s in size), tuple(spacing.tolist()), tuple(origin.tolist()), oriented.direction)


def _reorient_info(image: sitk.Image, orientation: str) -> Grid:
    """Grid of ``image`` after `sitk.DICOMOrient` (a permutation/flip of axes; geometry only)."""
    if orientation == "native":
        return Grid.of(image)
    probe = sitk.Image([2, 2, 2], sitk.sitkUInt8)
    probe.SetSpacing(image.GetSpacing())
    probe.SetDirection(image.GetDirection())
    oriented_probe = sitk.DICOMOrient(probe, orientation)
    # map the full-size grid through the same permutation
    perm, flip = _axis_permutation(image.GetDirection(), oriented_probe.GetDirection())
    size = [image.GetSize()[p] for p in perm]
    spacing = [image.GetSpacing()[p] for p in perm]
    m = Grid.of(image).matrix()
    corner_index = np.array([(image.GetSize()[perm[a]] - 1) if flip[a] else 0 for a in range(3)], float)
    index_in_input = np.zeros(3)
    for a in range(3):
        index_in_input[perm[a]] = corner_index[a]
    origin = (m @ np.append(index_in_input, 1.0))[:3]
    return Grid(tuple(size), tuple(spacing), tuple(origin.tolist()), tuple(oriented_probe.GetDirection()))


def _axis_permutation(src_dir: Sequence[float], dst_dir: Sequence[float]) -> Tuple[list, list]:
    """For each new axis a: the input axis perm[a] it comes from and whether it is flipped."""
    s = np.array(src_dir).reshape(3, 3)
    d = np.array(dst_dir).reshape(3, 3)
    dots = d.T @ s  # dots[a, b] = new axis a . old axis b
    perm = [int(np.argmax(np.abs(dots[a]))) for a in range(3)]
    flip = [bool(dots[a, perm[a]] < 0) for a in range(3)]
    return perm, flip


def _resample(image: sitk.Image, grid: Grid, interpolator: int, default: float = 0.0) -> sitk.Image:
    if same_grid(Grid.of(image), grid, rtol=1e-7, atol_mm=1e-7):
        return image
    return sitk.Resample(image, list(grid.size), sitk.Transform(), interpolator, list(grid.origin),
                         list(grid.spacing), list(grid.direction), default, image.GetPixelID())


def _check_same_grid(reference: sitk.Image, other: sitk.Image, what: str) -> None:
    if not same_grid(Grid.of(reference), Grid.of(other)):
        raise InputError(
            f"{what} is on a different grid than the first image (size {other.GetSize()} vs "
            f"{reference.GetSize()}, or spacing/origin/direction differ); resample it onto the image first"
        )


def preprocess(channels: Sequence[sitk.Image], plan: Plan, label: Optional[sitk.Image] = None,
               names: Optional[Sequence[str]] = None) -> Preprocessed:
    """Images (one per plan channel, same grid) and optional label map -> network arrays + record.

    Returns image ``(C, I, J, K)`` float32 normalised, label ``(I, J, K)`` integer or None.
    """
    check_channel_count(plan, len(channels))
    names = list(names) if names is not None else [f"channel {i + 1}" for i in range(len(channels))]
    for i, img in enumerate(channels[1:], start=1):
        _check_same_grid(channels[0], img, f"image {names[i]}")
    if label is not None:
        _check_same_grid(channels[0], label, "the label map")
    grid = target_grid(channels[0], plan.orientation, plan.spacing)
    arrays = [_channel_array(img, grid, spec.scheme, spec.params, name)
              for img, spec, name in zip(channels, plan.normalization, names)]
    lab = None
    if label is not None:
        lab = array_ijk(_resample(label, grid, sitk.sitkNearestNeighbor), dtype=_label_dtype(label))
    image = arrays[0][None] if len(arrays) == 1 else np.stack(arrays)  # no copy for one channel
    return Preprocessed(image, lab, PreprocessRecord(Grid.of(channels[0]), grid))


def _check_not_constant(image: sitk.Image, name: str) -> None:
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    if stats.GetMinimum() == stats.GetMaximum():
        raise InputError(f"image {name} has the same value ({stats.GetMinimum():g}) in every voxel, so it holds no "
                         f"picture; check that the right file was exported")


def _channel_array(image: sitk.Image, grid: Grid, scheme: str, params: dict, name: str) -> np.ndarray:
    check_finite(image, name)
    _check_not_constant(image, name)
    if same_grid(Grid.of(image), grid, rtol=1e-7, atol_mm=1e-7):
        x = array_ijk(image)  # straight to float32: no float32 image beside the array (issue 19: 315 MB at 512^2x300)
    else:
        x = array_ijk(_resample(sitk.Cast(image, sitk.sitkFloat32), grid, sitk.sitkLinear))
    return normalize(x, scheme, params)


def _label_dtype(label: sitk.Image) -> type:
    return np.uint8 if label.GetPixelID() == sitk.sitkUInt8 else np.uint16
