"""Arg-max of linearly resampled class scores without resampling every class everywhere.

Exact shortcut: where the 8 network voxels around an output point (its interpolation cell) share one arg-max class ``c``, the
linearly interpolated score of ``c`` is a convex combination of corner scores each at least that of any other
class, so ``c`` is also the arg-max of the interpolated scores (ties resolved to the first class either way).
So each cell gets its corners' common label, or "open" where they differ; one nearest-neighbour lookup on a grid
of cell centres gives every output point its cell's label. Only the open points, near class boundaries, are
interpolated, here, per class, with the arithmetic of ITK's
``LinearInterpolateImageFunction`` (nested lerps along i, j, k in double, the index clamped to the image) and a
float32 result, as ``sitk.Resample(..., sitkLinear, sitkFloat32)`` gives. Points outside the network grid
(ITK's buffer test, continuous index outside [-0.5, size - 0.5)) are background, as before. Where more than
`MAX_OPEN_SHARE` of the points are open (an untrained network's labels are noise), `argmax_by_class` resamples
every class instead (the same result).
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from ..io.geometry import image_from_ijk

MAX_OPEN_SHARE = 0.20  # above this share of open points, resampling each class everywhere is faster (measured:
# the demo model, 10.8 % open: 2.6 s end to end against 3.4 s class by class)
POINTS_PER_CHUNK = 1 << 18  # boundary points interpolated at once (K x 8 x this many float64 values at most)


def class_argmax(scores) -> np.ndarray:
    """``scores`` (K, ...) (numpy or torch, on the CPU) -> the index of the largest score along K, as
    ``np.argmax(scores, axis=0)`` gives it (the first class on ties), in uint8 (int32 from 257 classes).

    One pass per class with a running maximum: ``np.argmax`` and ``torch.argmax`` over the outer class axis read
    it with a stride of a whole class map. Colin27 at 1 mm, 9 float32 classes, 2 threads: 0.17 s against 0.89 s
    (numpy) and 1.24 s (torch), 15 % of the sliding window's time before."""
    t = torch.as_tensor(scores)
    best = t[0].clone()
    index = torch.zeros(t.shape[1:], dtype=torch.uint8 if t.shape[0] <= 256 else torch.int32)
    for k in range(1, t.shape[0]):
        index.masked_fill_(t[k] > best, k)
        torch.maximum(best, t[k], out=best)
    return index.numpy()


def slab_label_index(block: np.ndarray, sub, slab) -> np.ndarray:
    """``block`` (K, I, J, K') class scores on grid ``sub`` -> class index (k, j, i) on grid ``slab``: the arg-max
    of the scores linearly resampled onto ``slab`` (class 0 outside ``sub``)."""
    n = block.shape[0]
    dtype = np.uint8 if n < 255 else np.uint16
    open_value = np.iinfo(dtype).max
    cells = _cell_labels(class_argmax(block).astype(dtype, copy=False), open_value)
    index = _nearest(cells, _cell_grid(sub), slab, default=0)
    index[_nearest(np.ones(block.shape[1:], np.uint8), sub, slab, default=0) == 0] = 0  # outside sub
    open_mask = index == open_value
    if open_mask.mean() > MAX_OPEN_SHARE:  # boundaries everywhere (an untrained network): class by class is faster
        return argmax_by_class(block, sub, slab, dtype)
    flat = np.flatnonzero(open_mask)
    if flat.size:
        index.reshape(-1)[flat] = _interpolated_argmax(block, sub, slab, np.unravel_index(flat, index.shape))
    return index


def _cell_labels(labels: np.ndarray, open_value: int) -> np.ndarray:
    """(I+1, J+1, K'+1) per interpolation cell: its corners' common label, or ``open_value`` where they differ.
    Cell ``c`` spans voxels ``c - 1`` and ``c`` (clamped to the array, as ITK clamps the index)."""
    padded = np.pad(labels, 1, mode="edge")
    low = high = padded[1:, 1:, 1:]
    for corner in np.ndindex(2, 2, 2):
        view = padded[corner[0]:padded.shape[0] - 1 + corner[0], corner[1]:padded.shape[1] - 1 + corner[1],
                      corner[2]:padded.shape[2] - 1 + corner[2]]
        low, high = np.minimum(low, view), np.maximum(high, view)
    return np.where(low == high, low, open_value).astype(labels.dtype)


def _cell_grid(sub):
    """The grid of `_cell_labels`: one more voxel per axis, centred between ``sub``'s voxels, so a point's
    nearest cell centre is the cell that holds it (continuous index x in ``sub`` -> cell floor(x) + 1)."""
    d = np.asarray(sub.direction, float).reshape(3, 3)
    origin = np.asarray(sub.origin, float) - d @ (0.5 * np.asarray(sub.spacing, float))
    return type(sub)(tuple(s + 1 for s in sub.size), sub.spacing, tuple(origin), sub.direction)


def argmax_by_class(block: np.ndarray, sub, slab, dtype=np.uint8) -> np.ndarray:
    """The reference: every class resampled linearly onto ``slab`` (SimpleITK), running arg-max (first max)."""
    best = _resampled(image_from_ijk(block[0].astype(np.float32), sub), slab, 1.0)
    index = np.zeros(best.shape, dtype)
    for c in range(1, block.shape[0]):
        s = _resampled(image_from_ijk(block[c].astype(np.float32), sub), slab, 0.0)
        index[s > best] = c
        np.maximum(best, s, out=best)
    return index


def _resampled(src: sitk.Image, g, default: float) -> np.ndarray:
    """``src`` linearly resampled onto grid ``g``, as a float32 array in SimpleITK's (k, j, i) order."""
    out = sitk.Resample(src, list(g.size), sitk.Transform(), sitk.sitkLinear, list(g.origin), list(g.spacing),
                        list(g.direction), float(default), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def _nearest(values: np.ndarray, sub, slab, default: int) -> np.ndarray:
    """Integer (I, J, K') array on ``sub`` resampled (nearest neighbour) onto ``slab``, returned (k, j, i)."""
    src = image_from_ijk(values, sub)
    out = sitk.Resample(src, list(slab.size), sitk.Transform(), sitk.sitkNearestNeighbor, list(slab.origin),
                        list(slab.spacing), list(slab.direction), default, src.GetPixelID())
    return sitk.GetArrayFromImage(out)


def _continuous_index(sub, slab, points_kji) -> np.ndarray:
    """(3, M) continuous (i, j, k) indices in ``sub`` of the ``slab`` voxels given as (k, j, i) index arrays."""
    def matrix(grid):
        return np.asarray(grid.direction, float).reshape(3, 3) * np.asarray(grid.spacing, float)[None, :]

    to_sub = np.linalg.inv(matrix(sub))
    a = to_sub @ matrix(slab)
    b = to_sub @ (np.asarray(slab.origin, float) - np.asarray(sub.origin, float))
    ijk = np.stack([points_kji[2], points_kji[1], points_kji[0]]).astype(float)
    return a @ ijk + b[:, None]


def _interpolated_argmax(block: np.ndarray, sub, slab, points_kji) -> np.ndarray:
    """Arg-max over classes of ITK-style linear interpolation of ``block`` at the given ``slab`` voxels."""
    rows = np.moveaxis(block, 0, -1).astype(np.float32).reshape(-1, block.shape[0])  # (I*J*K', K), C order
    out = np.empty(points_kji[0].size, np.int64)
    for start in range(0, out.size, POINTS_PER_CHUNK):
        part = tuple(p[start:start + POINTS_PER_CHUNK] for p in points_kji)
        scores = _lerp3(rows, block.shape[1:], _continuous_index(sub, slab, part))
        out[start:start + scores.shape[0]] = np.argmax(scores.astype(np.float32), axis=1)
    return out


def _lerp3(rows: np.ndarray, shape, cindex: np.ndarray) -> np.ndarray:
    """(M, K) float64 scores at continuous indices (3, M) of an (I, J, K') grid whose (I*J*K', K) scores are
    ``rows``: nested lerps along i, then j, then k (ITK's order), the index clamped to the grid."""
    size = np.asarray(shape)[:, None]
    c = np.clip(cindex, 0, size - 1)
    base = np.floor(c).astype(np.int64)
    frac = c - base
    nxt = np.minimum(base + 1, size - 1)
    stride = np.array([shape[1] * shape[2], shape[2], 1])[:, None]
    lo, hi = base * stride, nxt * stride
    di, dj, dk = (f[:, None] for f in frac)

    def value(i, j, k):
        return rows[i + j + k].astype(np.float64)

    def lerp(v0, v1, d):  # v0 + (v1 - v0) * d, in place in v1
        v1 -= v0
        v1 *= d
        v1 += v0
        return v1

    (i0, j0, k0), (i1, j1, k1) = lo, hi
    x00 = lerp(value(i0, j0, k0), value(i1, j0, k0), di)
    x10 = lerp(value(i0, j1, k0), value(i1, j1, k0), di)
    x01 = lerp(value(i0, j0, k1), value(i1, j0, k1), di)
    x11 = lerp(value(i0, j1, k1), value(i1, j1, k1), di)
    return lerp(lerp(x00, x10, dj), lerp(x01, x11, dj), dk)
