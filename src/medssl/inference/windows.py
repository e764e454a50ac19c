"""MONAI's sliding-window geometry without importing MONAI: window slices and the importance map.

Ported from monai/data/utils.py (``dense_patch_slices``, ``compute_importance_map``; MONAI 1.x, Apache-2.0,
Copyright MONAI Consortium), with the same operations in the same order so the windows and the float32 map are
identical (tests compare them with MONAI's); also MONAI's padding and scan interval (monai/inferers/utils.py).
Both sliding-window paths use these, so that ``import monai`` (about 75 MB resident and 1.4 s) is not paid at
prediction.
"""
from __future__ import annotations

import math
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F


def dense_patch_slices(image_size: Sequence[int], patch_size: Sequence[int],
                       scan_interval: Sequence[int]) -> List[Tuple[slice, ...]]:
    """Every window of ``patch_size`` (each at most the image size) at ``scan_interval``, in MONAI's order
    (last axis fastest); the last window of each axis is moved back to end at the image border."""
    patch = [min(p, s) if p > 0 else s for p, s in zip(patch_size, image_size)]
    starts = []
    for size, p, step in zip(image_size, patch, scan_interval):
        if step == 0:
            n = 1
        else:
            num = int(math.ceil(float(size) / step))
            n = next((d for d in range(num) if d * step + p >= size), None)
            n = 1 if n is None else n + 1
        starts.append([i * step - max(i * step + p - size, 0) for i in range(n)])
    grid = np.asarray([x.flatten() for x in np.meshgrid(*starts, indexing="ij")]).T
    return [tuple(slice(int(s), int(s) + patch[d]) for d, s in enumerate(x)) for x in grid]


def compute_importance_map(patch_size: Sequence[int], mode: str = "constant", sigma_scale: float = 0.125,
                           device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32
                           ) -> torch.Tensor:
    """``"constant"``: ones; ``"gaussian"``: outer product of 1-D Gaussians with sigma ``sigma_scale x size``,
    clamped below at its minimum (at least 1e-3), as MONAI computes it."""
    mode = str(getattr(mode, "value", mode)).lower()
    if mode == "constant":
        importance = torch.ones(tuple(patch_size), device=device, dtype=torch.float)
    elif mode == "gaussian":
        scales = sigma_scale if isinstance(sigma_scale, (tuple, list)) else [sigma_scale] * len(patch_size)
        sigmas = [i * s for i, s in zip(patch_size, scales)]
        for i, size in enumerate(patch_size):
            x = torch.arange(start=-(size - 1) / 2.0, end=(size - 1) / 2.0 + 1, dtype=torch.float, device=device)
            x = torch.exp(x**2 / (-2 * sigmas[i] ** 2))
            importance = importance.unsqueeze(-1) * x[(None,) * i] if i > 0 else x
    else:
        raise ValueError(f"unsupported blending mode {mode!r}; use 'constant' or 'gaussian'")
    floor = max(torch.min(importance).item(), 1e-3)
    return torch.clamp_(importance.to(torch.float), min=floor).to(dtype)


def monai_padding(shape: Sequence[int], roi: Sequence[int]) -> List[Tuple[int, int]]:
    """(before, after) constant padding per spatial dim so each is at least the ROI (MONAI's split)."""
    return [((max(r - s, 0)) // 2, max(r - s, 0) - max(r - s, 0) // 2) for s, r in zip(shape, roi)]


def scan_interval(shape: Sequence[int], roi: Sequence[int], overlap: float) -> Tuple[int, ...]:
    """MONAI's ``_get_scan_interval``: ``int(roi * (1 - overlap))``, at least 1; the ROI where it fills the dim."""
    return tuple(r if r == s else max(int(r * (1 - overlap)), 1) for s, r in zip(shape, roi))


def pad_like_monai(image: torch.Tensor, pads: List[Tuple[int, int]]) -> torch.Tensor:
    """``image: (1, C, I, J, K)`` padded with zeros as MONAI does (``F.pad`` lists the last dim first)."""
    flat = [p for pair in reversed(pads) for p in pair]
    return F.pad(image, flat) if any(flat) else image


def monai_windows(shape: Sequence[int], roi: Sequence[int], overlap: float
                  ) -> Tuple[List[Tuple[int, int]], Tuple[int, ...], List[Tuple[slice, ...]]]:
    """(padding, padded size, windows in MONAI's order) for an image of spatial ``shape``: the layout both the
    full path (`sliding_window.probabilities`) and the streamed one share with ``sliding_window_inference``."""
    pads = monai_padding(shape, roi)
    size = tuple(s + a + b for s, (a, b) in zip(shape, pads))
    return pads, size, dense_patch_slices(size, roi, scan_interval(size, roi, overlap))


def batches(items: list, n: int) -> Iterator[list]:
    """``items`` in consecutive batches of ``n`` (at least 1), the last one shorter."""
    for i in range(0, len(items), max(n, 1)):
        yield items[i:i + max(n, 1)]
