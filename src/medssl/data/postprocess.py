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
from .label_resample import class_argmax, slab_label_index
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
        index = class_argmax(scores)
        return image_from_ijk(values.astype(dtype)[index], record.input_grid)
    writer = SlabLabels(record, label_values, axis=0)
    writer.add(0, np.asarray(scores))
    return writer.result()


class SlabLabels:
    """Labels on the input grid from class scores on the network grid that arrive block by block along the
    network axis ``axis`` (in increasing order, as `StreamingStitcher` hands them out). Each input slab (about
    `SLAB_VOXELS` voxels along the input's last axis) is filled as soon as the network block it reads is complete,
    and network slices no later slab reads are dropped: with an axis-aligned plan only a band of float16 scores is
    held, never the whole network grid (an oblique one may need all of it, and then holds it)."""

    def __init__(self, record: PreprocessRecord, label_values: Sequence[int], axis: int) -> None:
        values = np.asarray(label_values)
        self.record, self.axis, self.n = record, axis, len(values)
        self.lut = values.astype(np.uint8 if values.max() < 256 else np.uint16)
        g = record.input_grid
        self.out = np.empty(g.size[::-1], self.lut.dtype)  # SimpleITK's (k, j, i) order: slabs along k contiguous
        depth = max(1, SLAB_VOXELS // (g.size[0] * g.size[1]))
        self.slabs = [(k0, _slab(g, k0, min(depth, g.size[2] - k0))) for k0 in range(0, g.size[2], depth)]
        self.boxes = [_source_box(record.network_grid, slab) for _, slab in self.slabs]
        self.chunks: list = []  # (start along axis, scores (K, ...)); the streamed path passes float16
        self.done, self.next = 0, 0  # network slices received; next slab to fill

    def add(self, start: int, scores: np.ndarray) -> None:
        """Scores ``(K, ...)`` of network slices ``start .. start + n`` along ``axis`` (after all before them)."""
        self.chunks.append((start, np.asarray(scores)))
        self.done = start + scores.shape[1 + self.axis]
        while self.next < len(self.slabs) and self.boxes[self.next][0][self.axis].stop <= self.done:
            self._fill(self.next)
            self.next += 1
        keep = min((b[0][self.axis].start for b in self.boxes[self.next:]), default=self.done)
        self.chunks = [(s, c) for s, c in self.chunks if s + c.shape[1 + self.axis] > keep]

    def result(self) -> sitk.Image:
        if self.next != len(self.slabs):
            raise ValueError("SlabLabels.result: not every network slice was added")
        image = sitk.GetImageFromArray(self.out)
        self.out = np.empty(0, self.lut.dtype)
        return self.record.input_grid.apply_to(image)

    def _block(self, box) -> np.ndarray:
        """Scores (K, *box) cut from the held chunks."""
        a, lo, hi = self.axis, box[self.axis].start, box[self.axis].stop
        parts = []
        for s, c in self.chunks:
            o0, o1 = max(lo, s), min(hi, s + c.shape[1 + a])
            if o1 > o0:
                cut = [slice(None)] + list(box)
                cut[1 + a] = slice(o0 - s, o1 - s)
                parts.append(c[tuple(cut)])
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1 + a)

    def _fill(self, i: int) -> None:
        k0, slab = self.slabs[i]
        box, sub = self.boxes[i]
        index = slab_label_index(self._block(box), sub, slab)  # = per-class linear resampling + arg-max
        self.out[k0:k0 + slab.size[2]] = self.lut[index]


SLAB_VOXELS = 2 * 2**20  # voxels of the input grid per slab (8 MB per float32 array; issue 19: 32 MB slabs
# made the last fills, with the buffer and the runtime still held, the peak of a 512x512x300 CT)


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

