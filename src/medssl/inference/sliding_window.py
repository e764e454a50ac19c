"""Sliding-window class probabilities: MONAI's ``sliding_window_inference``, ported (`probabilities`).

Windows are blended with a Gaussian importance map (nnU-Net / MONAI ``mode="gaussian"``); each window's
softmax is averaged over mirrored copies when TTA is on (nnU-Net's mirroring over all subsets of the plan's
mirror axes). Stitching happens on the CPU. Large volumes go through `streaming.StreamingStitcher` (same
windows and weights, rolling buffer), so memory no longer grows with ``classes x voxels``.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from ..plan import Plan

WindowCallback = Callable[[int], None]


@dataclass
class WindowSettings:
    roi: Tuple[int, int, int]
    overlap: float = 0.5
    mode: str = "gaussian"
    sigma_scale: float = 0.125
    sw_batch_size: int = 2
    mirror_axes: Tuple[int, ...] = ()

    @classmethod
    def from_plan(cls, plan: Plan, overlap: Optional[float] = None, tta: bool = False,
                  sw_batch_size: Optional[int] = None) -> "WindowSettings":
        """The plan's window (its patch) and `SlidingWindowSpec`; ``overlap``/``sw_batch_size`` override it,
        mirroring only with ``tta``."""
        sw = plan.sliding_window
        return cls(tuple(plan.patch_size), sw.overlap if overlap is None else float(overlap),  # type: ignore[arg-type]
                   sw.mode, sw.sigma_scale, int(sw_batch_size or sw.sw_batch_size),
                   tuple(sw.mirror_axes) if tta else ())


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
            probs = _flipped_softmax(net, x, flips[0])
            if len(flips) > 1:
                probs = probs.clone()  # may be the runtime's output buffer, which the next window overwrites
            for dims in flips[1:]:  # summed in place, in the order sum() would: no second window-sized tensor
                probs += _flipped_softmax(net, x, dims)
            if len(flips) > 1:
                probs /= len(flips)
        if on_windows is not None:
            on_windows(windows.shape[0])
        return probs.to(dtype=out_dtype)

    return predict


def fix_window_batch(net, batch: int) -> None:
    """Tell a runtime whose outputs depend on the batch size it runs at (`OpenVinoWindowNet.run_at_batch`) the
    window batch of this sliding window, so a short last batch is computed like the others; torch modules need
    nothing (their batches are the case's own)."""
    run_at_batch = getattr(net, "run_at_batch", None)
    if run_at_batch is not None:
        run_at_batch(batch)


def _flipped_softmax(net: torch.nn.Module, x: torch.Tensor, dims: Tuple[int, ...]) -> torch.Tensor:
    inp = torch.flip(x, dims) if dims else x
    logits = net(inp).float()
    if logits.data_ptr() == inp.data_ptr():
        logits = logits.clone()  # a network that hands back its input: the softmax must not overwrite the window
    probs = softmax_in_place(logits)
    return torch.flip(probs, dims) if dims else probs


SOFTMAX_SLICES = 8  # slices of a window per softmax call in `softmax_in_place`


def softmax_in_place(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes of ``(N, K, D, ...)`` logits, written over them a few slices along D at a time: the
    only temporary is a few slices, not a second ``K x window`` tensor. Equals ``torch.softmax(logits, 1)`` (bit
    for bit where the slices' size is a multiple of the vector width, e.g. ROI 128; else to one ulp)."""
    for i in range(0, logits.shape[2], SOFTMAX_SLICES):
        part = logits[:, :, i:i + SOFTMAX_SLICES]
        part.copy_(torch.softmax(part, dim=1))
    return logits


def probabilities(net: torch.nn.Module, image: torch.Tensor, settings: WindowSettings, device: torch.device,
                  stitch_dtype: torch.dtype = torch.float32, on_windows: Optional[WindowCallback] = None,
                  amp_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``image: (1, C, I, J, K)`` on the CPU -> probabilities ``(1, K, I, J, K)`` in ``stitch_dtype`` on the CPU.

    MONAI's ``sliding_window_inference`` (monai/inferers/utils.py, Apache-2.0) with ``device=cpu`` and no buffering,
    ported op for op: the same padding and windows (`windows.monai_windows`) and importance map, each window's
    ``importance * probabilities`` and ``importance`` added in window order, one division, the padding cropped
    (`Testing/test_streaming.py` compares it with MONAI's). Not importing MONAI saves every prediction about 1.4 s
    (``monai/__init__`` loads matplotlib and most of MONAI; 1.37 of 4.0 s of a ``medssl predict`` of the demo)."""
    from .windows import batches, compute_importance_map, monai_windows, pad_like_monai

    roi, shape = tuple(settings.roi), tuple(image.shape[2:])
    pads, size, windows = monai_windows(shape, roi, settings.overlap)
    padded = pad_like_monai(image.to(stitch_dtype), pads)
    weight = compute_importance_map(roi, settings.mode, settings.sigma_scale, dtype=stitch_dtype)
    fix_window_batch(net, settings.sw_batch_size)
    predict = window_predictor(net, device, settings.mirror_axes, stitch_dtype, on_windows, amp_dtype)
    out = counts = None
    with torch.inference_mode():
        for batch in batches(windows, settings.sw_batch_size):
            probs = predict(torch.cat([padded[(slice(None), slice(None), *w)] for w in batch])).to("cpu")
            if out is None:  # the class count comes from the network
                out = torch.zeros((1, probs.shape[1], *size), dtype=stitch_dtype)
                counts = torch.zeros((1, 1, *size), dtype=stitch_dtype)
            for w, p in zip(batch, probs):
                out[(0, slice(None), *w)] += p.mul_(weight)  # MONAI's weight * p, bit for bit, without a temporary
                counts[(0, slice(None), *w)] += weight
        out /= counts
    crop = tuple(slice(a, a + n) for (a, _), n in zip(pads, shape))
    return out[(slice(None), slice(None), *crop)]
