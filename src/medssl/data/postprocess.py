"""Put network outputs back on the input grid (the inverse of `preprocess`).

Class scores on the network grid are resampled in physical space onto the input grid one class at a time
(linear), keeping a running arg-max, slab by slab of the input grid, so the label array is the only one of
the input grid's size whatever the class count;
the label map is exact on the input grid: same size, spacing, origin and direction.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..io.geometry import array_ijk, image_from_ijk
from .preprocess import PreprocessRecord


def _to_input_grid(channel: np.ndarray, record: PreprocessRecord, default: float) -> np.ndarray:
    """Resample one (I, J, K) float array from the network grid to the input grid, returned (I, J, K)."""
    src = image_from_ijk(np.asarray(channel, np.float32), record.network_grid)
    g = record.input_grid
    out = sitk.Resample(src, list(g.size), sitk.Transform(), sitk.sitkLinear, list(g.origin), list(g.spacing),
                        list(g.direction), float(default), sitk.sitkFloat32)
    return array_ijk(out)


def scores_to_labels(scores: np.ndarray, record: PreprocessRecord, label_values: Sequence[int]) -> sitk.Image:
    """``scores`` (K, I, J, K) on the network grid -> label image on the input grid with the plan's values.

    Background (class 0) gets score 1 outside the network grid, so voxels there become background. Off the
    identity, the input grid is filled in slabs of about `SLAB_VOXELS` along its last axis, so only the
    uint8/uint16 label array has the input grid's size: no float array per class or per voxel of it.
    """
    values = np.asarray(label_values)
    dtype = np.uint8 if values.max() < 256 else np.uint16
    if record.identity():
        index = np.argmax(scores, axis=0)
        return image_from_ijk(values.astype(dtype)[index], record.input_grid)
    g = record.input_grid
    lut = values.astype(dtype)
    out = np.empty(g.size[::-1], dtype)  # SimpleITK's (k, j, i) order: slabs along k are contiguous
    depth = max(1, SLAB_VOXELS // (g.size[0] * g.size[1]))
    for k0 in range(0, g.size[2], depth):
        slab = _slab(g, k0, min(depth, g.size[2] - k0))
        box, sub = _source_box(record.network_grid, slab)
        best = _resampled(image_from_ijk(np.asarray(scores[(0, *box)], np.float32), sub), slab, 1.0)
        index = np.zeros(best.shape, np.uint8 if len(values) < 256 else np.uint16)
        for c in range(1, scores.shape[0]):
            s = _resampled(image_from_ijk(np.asarray(scores[(c, *box)], np.float32), sub), slab, 0.0)
            index[s > best] = c
            np.maximum(best, s, out=best)
        out[k0:k0 + slab.size[2]] = lut[index]
    image = sitk.GetImageFromArray(out)
    del out
    return g.apply_to(image)


SLAB_VOXELS = 8 * 2**20  # voxels of the input grid per slab (32 MB per float32 array)


def _slab(grid, k0: int, depth: int):
    """The part ``k0 .. k0 + depth`` of ``grid`` along its last axis, as a grid of its own."""
    d = np.asarray(grid.direction, float).reshape(3, 3)
    origin = np.asarray(grid.origin, float) + d[:, 2] * grid.spacing[2] * k0
    return type(grid)((grid.size[0], grid.size[1], depth), grid.spacing, tuple(origin), grid.direction)


def _source_box(net, slab):
    """The block of the network grid that linear interpolation onto ``slab`` reads (one voxel of margin):
    (index slices, that block's own grid)."""
    probe = _point_image(net)
    corners = [probe.TransformPhysicalPointToContinuousIndex(_corner(slab, c)) for c in np.ndindex(2, 2, 2)]
    lo = np.clip(np.floor(np.min(corners, 0)).astype(int) - 1, 0, np.asarray(net.size) - 1)
    hi = np.clip(np.ceil(np.max(corners, 0)).astype(int) + 2, lo + 1, np.asarray(net.size))
    d = np.asarray(net.direction, float).reshape(3, 3)
    origin = np.asarray(net.origin, float) + d @ (np.asarray(net.spacing) * lo)
    sub = type(net)(tuple(int(h - l) for l, h in zip(lo, hi)), net.spacing, tuple(origin), net.direction)
    return tuple(slice(int(l), int(h)) for l, h in zip(lo, hi)), sub


def _point_image(grid) -> sitk.Image:
    """A one-voxel image with ``grid``'s geometry: its index <-> physical point maps are ``grid``'s."""
    image = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(grid.direction)
    return image


def _corner(grid, corner) -> tuple:
    """Physical point of a corner voxel of ``grid`` (``corner``: 0 = first, 1 = last index per axis)."""
    d = np.asarray(grid.direction, float).reshape(3, 3)
    index = np.asarray(corner) * (np.asarray(grid.size) - 1)
    return tuple(float(v) for v in np.asarray(grid.origin, float) + d @ (np.asarray(grid.spacing) * index))


def _resampled(src: sitk.Image, g, default: float) -> np.ndarray:
    """``src`` linearly resampled onto grid ``g``, as a float32 array in SimpleITK's (k, j, i) order."""
    out = sitk.Resample(src, list(g.size), sitk.Transform(), sitk.sitkLinear, list(g.origin), list(g.spacing),
                        list(g.direction), float(default), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def scores_to_input_grid(scores: np.ndarray, record: PreprocessRecord) -> sitk.Image:
    """All class scores on the input grid as one vector image (components = classes), float32."""
    if record.identity():
        channels = [image_from_ijk(np.asarray(s, np.float32), record.input_grid) for s in scores]
    else:
        channels = [image_from_ijk(_to_input_grid(s, record, 1.0 if c == 0 else 0.0), record.input_grid)
                    for c, s in enumerate(scores)]
    return sitk.Compose(channels)


def scalar_to_input_grid(values: np.ndarray, record: PreprocessRecord, default: float = 0.0) -> sitk.Image:
    """One float map (I, J, K) on the network grid (e.g. entropy) -> float32 image on the input grid."""
    if record.identity():
        return image_from_ijk(np.asarray(values, np.float32), record.input_grid)
    return image_from_ijk(_to_input_grid(values, record, default), record.input_grid)


def entropy(probabilities: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Normalised Shannon entropy of class probabilities (K, ...) -> (...) in [0, 1]."""
    p = np.clip(np.asarray(probabilities, np.float32), eps, 1.0)
    h = -(p * np.log(p)).sum(axis=0)
    return h / np.log(p.shape[0])

