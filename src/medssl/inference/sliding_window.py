"""Sliding-window class probabilities with MONAI's ``sliding_window_inference``.

Windows are blended with a Gaussian importance map (nnU-Net / MONAI ``mode="gaussian"``); each window's
softmax is averaged over mirrored copies when TTA is on (nnU-Net's mirroring over all subsets of the plan's
mirror axes). Stitching happens on the CPU. For large volumes `SlabStitcher` runs the same inference on
overlapping slabs along the last axis and reduces each slab to labels (and entropy) at once, so memory
no longer grows with ``classes x voxels``.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch
from monai.inferers import sliding_window_inference

WindowCallback = Callable[[int], None]


@dataclass
class WindowSettings:
    roi: Tuple[int, int, int]
    overlap: float = 0.5
    mode: str = "gaussian"
    sigma_scale: float = 0.125
    sw_batch_size: int = 2
    mirror_axes: Tuple[int, ...] = ()


def mirror_combinations(axes: Sequence[int]) -> List[Tuple[int, ...]]:
    """All subsets of ``axes`` (the identity first), as tensor dims of a (B, C, I, J, K) batch."""
    dims = [a + 2 for a in axes]
    return [c for r in range(len(dims) + 1) for c in itertools.combinations(dims, r)]


def count_windows(shape: Sequence[int], settings: WindowSettings) -> int:
    """Number of windows MONAI visits on an image of spatial ``shape`` (after padding to the ROI)."""
    n = 1
    for size, roi in zip(shape, settings.roi):
        size = max(size, roi)
        step = max(int(roi * (1 - settings.overlap)), 1)
        n *= math.ceil((size - roi) / step) + 1 if size > roi else 1
    return n


def window_predictor(net: torch.nn.Module, device: torch.device, mirror_axes: Sequence[int],
                     out_dtype: torch.dtype, on_windows: Optional[WindowCallback] = None,
                     amp_dtype: Optional[torch.dtype] = None):
    """Callable for MONAI: windows ``(N, C, *roi)`` -> softmax probabilities ``(N, K, *roi)`` (TTA-averaged)."""
    flips = mirror_combinations(mirror_axes)

    def predict(windows: torch.Tensor) -> torch.Tensor:
        x = windows.to(device=device, dtype=torch.float32)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            probs = sum(_flipped_softmax(net, x, dims) for dims in flips) / len(flips)
        if on_windows is not None:
            on_windows(windows.shape[0])
        return probs.to(dtype=out_dtype)

    return predict


def _flipped_softmax(net: torch.nn.Module, x: torch.Tensor, dims: Tuple[int, ...]) -> torch.Tensor:
    if not dims:
        return torch.softmax(net(x).float(), dim=1)
    return torch.flip(torch.softmax(net(torch.flip(x, dims)).float(), dim=1), dims)


def probabilities(net: torch.nn.Module, image: torch.Tensor, settings: WindowSettings, device: torch.device,
                  stitch_dtype: torch.dtype = torch.float32, on_windows: Optional[WindowCallback] = None,
                  amp_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``image: (1, C, I, J, K)`` on the CPU -> probabilities ``(1, K, I, J, K)`` in ``stitch_dtype`` on the CPU."""
    predict = window_predictor(net, device, settings.mirror_axes, stitch_dtype, on_windows, amp_dtype)
    with torch.inference_mode():
        return sliding_window_inference(
            image.to(stitch_dtype), settings.roi, settings.sw_batch_size, predict, overlap=settings.overlap,
            mode=settings.mode, sigma_scale=settings.sigma_scale, sw_device=device, device=torch.device("cpu"),
        )


@dataclass
class SlabStitcher:
    """Runs `probabilities` on overlapping slabs along the last axis; yields each slab's core region.

    A slab is ``core`` slices plus a halo of half a window on each side, so every kept voxel is blended
    from windows that see full context. Peak memory ~ ``classes x I x J x (core + roi)`` in float16.
    """

    settings: WindowSettings
    core: int = 0

    def slabs(self, depth: int) -> Iterator[Tuple[int, int, int, int]]:
        """(read_start, read_stop, keep_start, keep_stop) along the last axis."""
        roi = self.settings.roi[2]
        core = self.core or roi
        halo = roi // 2
        for start in range(0, depth, core):
            stop = min(depth, start + core)
            yield max(0, start - halo), min(depth, stop + halo), start, stop

    def run(self, net: torch.nn.Module, image: torch.Tensor, device: torch.device,
            on_windows: Optional[WindowCallback] = None, amp_dtype: Optional[torch.dtype] = None
            ) -> Iterator[Tuple[int, int, torch.Tensor]]:
        """Yield (keep_start, keep_stop, probabilities (K, I, J, stop - start)) in float16."""
        for r0, r1, k0, k1 in self.slabs(image.shape[-1]):
            probs = probabilities(net, image[..., r0:r1], self.settings, device, torch.float16, on_windows, amp_dtype)
            yield k0, k1, probs[0, ..., k0 - r0:k1 - r0]

    def count_windows(self, shape: Sequence[int]) -> int:
        return sum(count_windows((shape[0], shape[1], r1 - r0), self.settings) for r0, r1, _, _ in self.slabs(shape[2]))
