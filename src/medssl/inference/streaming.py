"""Low-memory sliding window: MONAI's windows and Gaussian weights, stitched in a rolling buffer.

MONAI's ``sliding_window_inference`` keeps the whole ``(K, I, J, K')`` class map until the end. Here the same
windows (``monai.data.utils.dense_patch_slices``, MONAI's padding and scan interval) with the same importance
map (``compute_importance_map``) are visited in order of their start along one *stream axis* (the one with
the smallest cross-section). Once every window starting at or before ``s`` has been added, all slices before
the next start are final: they are divided by the blending weight and handed out, and the buffer moves on.
The buffer spans one ROI along the stream axis, so memory is ``classes x cross-section x roi`` instead of
``classes x voxels``, and the result equals MONAI's up to float rounding (no extra windows, no halo). Finished
slices are handed out in chunks of about `CHUNK_BYTES`, so the normalised copy stays small too.
Padding and scan interval follow monai/inferers/utils.py (Apache-2.0).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map, dense_patch_slices

from .sliding_window import WindowCallback, WindowSettings, window_predictor

Region = Tuple[slice, slice, slice]
CHUNK_BYTES = 64 * 2**20  # finished slices are handed out in pieces of about this size


def monai_padding(shape: Sequence[int], roi: Sequence[int]) -> List[Tuple[int, int]]:
    """(before, after) constant padding per spatial dim so each is at least the ROI (MONAI's split)."""
    return [((max(r - s, 0)) // 2, max(r - s, 0) - max(r - s, 0) // 2) for s, r in zip(shape, roi)]


def scan_interval(shape: Sequence[int], roi: Sequence[int], overlap: float) -> Tuple[int, ...]:
    """MONAI's ``_get_scan_interval``: ``int(roi * (1 - overlap))``, at least 1; the ROI where it fills the dim."""
    return tuple(r if r == s else max(int(r * (1 - overlap)), 1) for s, r in zip(shape, roi))


def stream_axis(shape: Sequence[int]) -> int:
    """The spatial axis whose cross-section (product of the other two sizes) is smallest; ties -> lowest."""
    return min(range(3), key=lambda a: (shape[(a + 1) % 3] * shape[(a + 2) % 3], a))


@dataclass
class StreamingStitcher:
    """See the module docstring. ``run`` yields (region of the unpadded image, probabilities ``(K, *region)``)."""

    settings: WindowSettings

    def run(self, net: torch.nn.Module, image: torch.Tensor, device: torch.device, num_classes: int,
            on_windows: Optional[WindowCallback] = None, amp_dtype: Optional[torch.dtype] = None
            ) -> Iterator[Tuple[Region, torch.Tensor]]:
        """``image: (1, C, I, J, K)`` on the CPU; probabilities are float32 on the CPU."""
        roi, shape = tuple(self.settings.roi), tuple(image.shape[2:])
        pads = monai_padding(shape, roi)
        padded = _pad(image.float(), pads)
        size = tuple(padded.shape[2:])
        axis = stream_axis(size)
        windows = dense_patch_slices(size, roi, scan_interval(size, roi, self.settings.overlap))
        weight = compute_importance_map(roi, self.settings.mode, self.settings.sigma_scale,
                                        device=torch.device("cpu"), dtype=torch.float32)
        predict = window_predictor(net, device, self.settings.mirror_axes, torch.float32, on_windows, amp_dtype)
        buffer = _RollingBuffer(num_classes, size, axis, roi[axis])
        groups = groupby(sorted(windows, key=lambda w: w[axis].start), key=lambda w: w[axis].start)
        with torch.inference_mode():
            for start, group in groups:
                for done in buffer.advance_to(start):
                    yield from self._finished(done, pads, shape, axis)
                for batch in _batches(list(group), self.settings.sw_batch_size):
                    windows_in = torch.cat([padded[(slice(None), slice(None), *w)] for w in batch])
                    probs = predict(windows_in).cpu()  # stitched on the CPU, as MONAI does with device=cpu
                    for window, p in zip(batch, probs):
                        buffer.add(window, p * weight, weight)
            for done in buffer.flush():
                yield from self._finished(done, pads, shape, axis)

    @staticmethod
    def _finished(done: Tuple[int, torch.Tensor], pads, shape, axis: int
                  ) -> Iterator[Tuple[Region, torch.Tensor]]:
        """Crop a finished block (padded start along ``axis``, ``(K, ...)``) back to unpadded coordinates."""
        start, block = done
        lo, hi = start - pads[axis][0], start - pads[axis][0] + block.shape[1 + axis]
        keep = [slice(p[0], p[0] + s) for p, s in zip(pads, shape)]
        keep[axis] = slice(max(0, -lo), block.shape[1 + axis] - max(0, hi - shape[axis]))
        region = [slice(0, s) for s in shape]
        region[axis] = slice(max(lo, 0), min(hi, shape[axis]))
        if region[axis].stop > region[axis].start:
            yield tuple(region), block[(slice(None), *keep)]  # type: ignore[misc]


class _RollingBuffer:
    """Weighted class sums and weights for one ROI along ``axis``; ``base`` is its first padded index."""

    def __init__(self, num_classes: int, size: Sequence[int], axis: int, depth: int) -> None:
        dims = list(size)
        dims[axis] = depth
        self.axis, self.depth, self.base = axis, depth, 0
        self.sums = torch.zeros(num_classes, *dims)
        self.weights = torch.zeros(1, *dims)

    def add(self, window: Region, weighted_probs: torch.Tensor, weight: torch.Tensor) -> None:
        """``weighted_probs: (K, *roi)``; ``window``: slices of the padded image."""
        local = list(window)
        w = window[self.axis]
        local[self.axis] = slice(w.start - self.base, w.stop - self.base)
        self.sums[(slice(None), *local)] += weighted_probs
        self.weights[(slice(None), *local)] += weight

    def advance_to(self, start: int) -> Iterator[Tuple[int, torch.Tensor]]:
        """Hand out the final slices ``[base, start)`` as probabilities, in chunks of `chunk_slices` (so the
        normalised copy stays small), then move the buffer to ``start``. Consume it whole before adding."""
        n = start - self.base
        if n <= 0:
            return
        yield from self._normalised_chunks(n)
        self.sums, self.weights = self._shifted(self.sums, n), self._shifted(self.weights, n)
        self.base = start

    def flush(self) -> Iterator[Tuple[int, torch.Tensor]]:
        yield from self._normalised_chunks(self.depth)

    @property
    def chunk_slices(self) -> int:
        """Slices per handed-out chunk: about CHUNK_BYTES of float32 probabilities, at least one slice."""
        per_slice = 4 * self.sums.numel() // self.depth
        return max(1, CHUNK_BYTES // per_slice)

    def _normalised_chunks(self, n: int) -> Iterator[Tuple[int, torch.Tensor]]:
        """(padded start, probabilities ``(K, ...)``) of the first ``n`` slices, chunk by chunk."""
        d, step = 1 + self.axis, self.chunk_slices
        for i in range(0, n, step):
            m = min(step, n - i)
            yield self.base + i, self.sums.narrow(d, i, m) / self.weights.narrow(d, i, m)

    def _shifted(self, t: torch.Tensor, n: int) -> torch.Tensor:
        """Move ``t`` by ``n`` slices towards the start, in place, in chunks of ``n`` (source and target never
        overlap, so no second buffer is allocated); the freed end is zeroed."""
        d = 1 + self.axis
        for i in range(0, self.depth - n, n):
            m = min(n, self.depth - n - i)
            t.narrow(d, i, m).copy_(t.narrow(d, i + n, m))
        t.narrow(d, max(self.depth - n, 0), min(n, self.depth)).zero_()
        return t


def _pad(image: torch.Tensor, pads: List[Tuple[int, int]]) -> torch.Tensor:
    """``image: (1, C, I, J, K)`` padded with zeros as MONAI does (``F.pad`` lists the last dim first)."""
    flat = [p for pair in reversed(pads) for p in pair]
    return F.pad(image, flat) if any(flat) else image


def _batches(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), max(n, 1)):
        yield items[i:i + max(n, 1)]


def stream_probabilities(net: torch.nn.Module, image: torch.Tensor, settings: WindowSettings, device: torch.device,
                         num_classes: int) -> torch.Tensor:
    """Assemble the streamed blocks into one ``(1, K, I, J, K')`` map (for tests and small images)."""
    out = torch.zeros(1, num_classes, *image.shape[2:])
    for region, probs in StreamingStitcher(settings).run(net, image, device, num_classes):
        out[(0, slice(None), *region)] = probs
    return out
