"""Low-memory sliding window: MONAI's windows and Gaussian weights, stitched in a rolling buffer.

MONAI's ``sliding_window_inference`` keeps the whole ``(K, I, J, K')`` class map until the end. Here the same
windows (MONAI's ``dense_patch_slices``, padding and scan interval) with the same importance map
(``compute_importance_map``; both ported in `windows`) are visited in order of their start along one *stream axis* (the one with
the smallest cross-section). Once every window starting at or before ``s`` has been added, all slices before
the next start are final: they are divided by the blending weight and handed out, and the buffer moves on.
The buffer spans one ROI along the stream axis, so memory is ``classes x cross-section x roi`` instead of
``classes x voxels``, and the result equals MONAI's up to float rounding (no extra windows, no halo). Finished
slices are handed out in chunks of about `CHUNK_BYTES`, so the normalised copy stays small too. Where the
consumer takes blocks of part of the cross-section, the volume is also split into tiles along a second axis
(`plan_tiles`): the buffer then spans ``roi x tile x rest``, for some windows run twice (issue 19, part 4).
A window reaching across a tile border adds only its part inside the tile, so the buffer is as wide as the
voxels the tile hands out, not as the windows reaching into them (for a 512x512x300 CT at ROI 128: 150 instead
of 225 MiB, and 280 windows instead of 336, as wider tiles fit the same budget).
Padding and scan interval follow monai/inferers/utils.py (Apache-2.0; ported in `windows`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import torch

from .sliding_window import WindowCallback, WindowSettings, fix_window_batch, window_predictor
from .windows import batches, compute_importance_map, monai_padding, monai_windows, pad_like_monai

Region = Tuple[slice, slice, slice]
CHUNK_BYTES = 16 * 2**20  # finished slices are handed out in pieces of about this size
ADD_SLICES = 8  # slices of a window added to the buffer at a time


def stream_axis(shape: Sequence[int]) -> int:
    """The spatial axis whose cross-section (product of the other two sizes) is smallest; ties -> lowest."""
    return min(range(3), key=lambda a: (shape[(a + 1) % 3] * shape[(a + 2) % 3], a))


@dataclass(frozen=True)
class Tile:
    """The padded index range ``[lo, hi)`` along the tile axis of the voxels a tile hands out (and buffers)."""

    lo: int
    hi: int


def plan_tiles(size: Sequence[int], roi: Sequence[int], windows: Sequence[Region], axis: int, num_classes: int,
               max_bytes: Optional[int], itemsize: int = 4) -> Tuple[int, List[Tuple[Tile, List[Region]]]]:
    """(tile axis, tiles with their windows). The tile axis is the larger of the two axes other than ``axis``; tiles
    are as wide as a buffer of ``max_bytes`` allows (``classes x roi x width x other``, plus float32 weights; None:
    one tile), at least one window start. A tile hands out the voxels from one window start to the next tile's first
    start and runs every window that reaches into them, so each of its voxels gets exactly the windows (and order)
    the untiled stream gives it; windows across a tile border are run once per tile (the price of the smaller
    buffer)."""
    t = max((a for a in range(3) if a != axis), key=lambda a: (size[a], -a))
    starts = sorted({w[t].start for w in windows})
    bounds = starts + [size[t]]  # a tile ends where the next one's first start is, the last one at the end
    per_slice = roi[axis] * size[3 - axis - t] * (num_classes * itemsize + 4)
    widest = None if max_bytes is None else max_bytes // per_slice
    tiles, i = [], 0
    while i < len(starts):  # greedy: each tile takes as many window starts as its width allows (at least one)
        j = i + 1
        while j < len(starts) and (widest is None or bounds[j + 1] - starts[i] <= widest):
            j += 1
        lo, hi = starts[i], bounds[j]
        tiles.append((Tile(lo, hi), [w for w in windows if w[t].start < hi and w[t].stop > lo]))
        i = j
    return t, tiles


@dataclass
class StreamingStitcher:
    """See the module docstring. ``run`` yields (region of the unpadded image, probabilities ``(K, *region)``).

    ``max_buffer_bytes`` splits the volume into tiles along a second axis (`plan_tiles`), streamed one after the
    other, so the consumer gets blocks of part of the cross-section; None keeps whole cross-sections, in stream
    order (what `SlabLabels` needs). ``buffer_dtype`` holds the class sums (float16 halves the buffer; the weights
    and the handed-out probabilities stay float32)."""

    settings: WindowSettings
    max_buffer_bytes: Optional[int] = None
    buffer_dtype: torch.dtype = torch.float32

    def run(self, net: torch.nn.Module, image: torch.Tensor, device: torch.device, num_classes: int,
            on_windows: Optional[WindowCallback] = None, amp_dtype: Optional[torch.dtype] = None
            ) -> Iterator[Tuple[Region, torch.Tensor]]:
        """``image: (1, C, I, J, K)`` on the CPU; probabilities are float32 on the CPU."""
        roi, shape = tuple(self.settings.roi), tuple(image.shape[2:])
        pads, size, axis, t, tiles = self._layout(shape, num_classes)
        padded = pad_like_monai(image if image.dtype in (torch.float32, torch.bfloat16) else image.float(), pads)
        weight = compute_importance_map(roi, self.settings.mode, self.settings.sigma_scale,
                                        device=torch.device("cpu"), dtype=torch.float32)
        fix_window_batch(net, self.settings.sw_batch_size)
        predict = window_predictor(net, device, self.settings.mirror_axes, torch.float32, on_windows, amp_dtype)
        with torch.inference_mode():
            for tile, mine in tiles:
                buffer = _RollingBuffer(num_classes, size, axis, roi[axis], t, tile, self.buffer_dtype)
                # batches run across window starts (a start often has one window): torch's float32 CPU convolution
                # takes a slow non-oneDNN path for a batch of one small input (N*C*D*H <= 20480, aten Convolution.cpp)
                for batch in batches(sorted(mine, key=lambda w: w[axis].start), self.settings.sw_batch_size):
                    windows_in = torch.cat([padded[(slice(None), slice(None), *w)] for w in batch]).float()
                    probs = predict(windows_in).cpu()  # stitched on the CPU, as MONAI does with device=cpu
                    del windows_in
                    for window, p in zip(batch, probs):
                        for done in buffer.advance_to(window[axis].start):  # earlier starts are all added
                            yield from _finished(done, pads, shape, axis, t, tile)
                        buffer.add(window, p.mul_(weight), weight)  # in place: no window-sized temporary
                    del probs
                for done in buffer.flush():
                    yield from _finished(done, pads, shape, axis, t, tile)
                del buffer

    def window_count(self, shape: Sequence[int], num_classes: int) -> int:
        """Windows `run` passes to the network for an image of spatial ``shape`` (tiles run border windows twice)."""
        return sum(len(mine) for _, mine in self._layout(tuple(shape), num_classes)[4])

    def _layout(self, shape: Tuple[int, ...], num_classes: int):
        """(padding, padded size, stream axis, tile axis, tiles with their windows) for spatial ``shape``."""
        roi = tuple(self.settings.roi)
        pads, size, windows = monai_windows(shape, roi, self.settings.overlap)
        axis = stream_axis(size)
        itemsize = torch.tensor([], dtype=self.buffer_dtype).element_size()
        t, tiles = plan_tiles(size, roi, windows, axis, num_classes, self.max_buffer_bytes, itemsize)
        return pads, size, axis, t, tiles


def _finished(done: Tuple[int, torch.Tensor], pads, shape, axis: int, t: int, tile: Tile
              ) -> Iterator[Tuple[Region, torch.Tensor]]:
    """Crop a finished block (padded start along ``axis``, ``(K, ...)`` spanning ``tile.lo .. hi`` along ``t``)
    to the unpadded image, back in unpadded coordinates."""
    start, block = done
    origin = [0, 0, 0]
    origin[axis], origin[t] = start, tile.lo
    want = [(p[0], p[0] + s) for p, s in zip(pads, shape)]  # the unpadded image, in padded coordinates
    want[axis] = (max(want[axis][0], start), min(want[axis][1], start + block.shape[1 + axis]))
    want[t] = (max(want[t][0], tile.lo), min(want[t][1], tile.hi))
    if any(hi <= lo for lo, hi in want):
        return
    keep = tuple(slice(lo - o, hi - o) for (lo, hi), o in zip(want, origin))
    region = tuple(slice(lo - p[0], hi - p[0]) for (lo, hi), p in zip(want, pads))
    yield region, block[(slice(None), *keep)]  # type: ignore[misc]


class _RollingBuffer:
    """Weighted class sums and weights for one ROI along ``axis`` and the tile's own voxels ``[lo, hi)`` along ``t``;
    ``base`` is its first padded index along ``axis``."""

    def __init__(self, num_classes: int, size: Sequence[int], axis: int, depth: int, t: int, tile: Tile,
                 dtype: torch.dtype = torch.float32) -> None:
        dims = list(size)
        dims[axis], dims[t] = depth, tile.hi - tile.lo
        self.axis, self.depth, self.base, self.t, self.lo, self.hi = axis, depth, 0, t, tile.lo, tile.hi
        self.sums = torch.zeros(num_classes, *dims, dtype=dtype)
        self.weights = torch.zeros(1, *dims)  # float32: float16 weight sums cost 2e-3 in the probabilities

    def add(self, window: Region, weighted_probs: torch.Tensor, weight: torch.Tensor) -> None:
        """``weighted_probs: (K, *roi)``; ``window``: slices of the padded image. Only its part inside the tile is
        added."""
        local = list(window)
        w, c = window[self.axis], window[self.t]
        lo, hi = max(c.start, self.lo), min(c.stop, self.hi)
        local[self.axis] = slice(w.start - self.base, w.stop - self.base)
        local[self.t] = slice(lo - self.lo, hi - self.lo)
        sums, weights = self.sums[(slice(None), *local)], self.weights[(slice(None), *local)]
        if (lo, hi) != (c.start, c.stop):
            weighted_probs = weighted_probs.narrow(1 + self.t, lo - c.start, hi - lo)
            weight = weight.narrow(self.t, lo - c.start, hi - lo)
        d = 1 + self.axis
        for i in range(0, sums.shape[d], ADD_SLICES):  # a float16 buffer adds through a float32 temporary: keep it thin
            m = min(ADD_SLICES, sums.shape[d] - i)
            sums.narrow(d, i, m).add_(weighted_probs.narrow(d, i, m))
        weights += weight

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
        per_slice = 4 * self.sums.numel() // self.depth  # float32 probabilities
        return max(1, CHUNK_BYTES // per_slice)

    def _normalised_chunks(self, n: int) -> Iterator[Tuple[int, torch.Tensor]]:
        """(padded start, probabilities ``(K, ...)``) of the first ``n`` slices, chunk by chunk."""
        d, step = 1 + self.axis, self.chunk_slices
        for i in range(0, n, step):
            m = min(step, n - i)
            yield self.base + i, self.sums.narrow(d, i, m).float() / self.weights.narrow(d, i, m).float()

    def _shifted(self, t: torch.Tensor, n: int) -> torch.Tensor:
        """Move ``t`` by ``n`` slices towards the start, in place, in chunks of ``n`` (source and target never
        overlap, so no second buffer is allocated); the freed end is zeroed."""
        d = 1 + self.axis
        for i in range(0, self.depth - n, n):
            m = min(n, self.depth - n - i)
            t.narrow(d, i, m).copy_(t.narrow(d, i + n, m))
        t.narrow(d, max(self.depth - n, 0), min(n, self.depth)).zero_()
        return t


def first_window(image: torch.Tensor, roi: Sequence[int]) -> torch.Tensor:
    """A float32 copy of the window at the image's corner, padded to the ROI as MONAI pads (the probe of
    `bf16_is_lossless`, taken before the volume is rounded)."""
    crop = image[(slice(None), slice(None), *[slice(0, r) for r in roi])].float().clone()
    return pad_like_monai(crop, monai_padding(crop.shape[2:], roi))


def bf16_is_lossless(net, window: torch.Tensor, amp_dtype: Optional[torch.dtype]) -> bool:
    """Whether the network, running in bfloat16, gives the same logits for ``window`` rounded to bfloat16: its
    first operation (a convolution in every architecture here) rounds its input to bfloat16 anyway, and then a
    volume held in bfloat16 (half the memory) gives every window exactly as from float32."""
    with torch.inference_mode(), torch.autocast("cpu", dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        exact = net(window).float().clone()  # clone: an OpenVINO result is its own buffer, reused by the next call
        return torch.equal(exact, net(window.to(torch.bfloat16).float()).float())


def stream_probabilities(net: torch.nn.Module, image: torch.Tensor, settings: WindowSettings, device: torch.device,
                         num_classes: int, max_buffer_bytes: Optional[int] = None,
                         buffer_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Assemble the streamed blocks into one ``(1, K, I, J, K')`` map (for tests and small images)."""
    out = torch.full((1, num_classes, *image.shape[2:]), float("nan"))
    stitcher = StreamingStitcher(settings, max_buffer_bytes, buffer_dtype)
    for region, probs in stitcher.run(net, image, device, num_classes):
        out[(0, slice(None), *region)] = probs
    return out
