"""Preprocessed single-channel volumes for self-supervised pretraining, with the box holding their foreground
(what every SSL method samples views from; built by `medssl.planning.cache`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np

Box = Tuple[Tuple[int, int, int], Tuple[int, int, int]]


@dataclass
class VolumeSet:
    """Preprocessed single-channel volumes ``(I, J, K)`` and the box ``(lo, hi)`` holding their foreground."""

    arrays: List[np.ndarray]
    boxes: List[Box] = field(default_factory=list)
    names: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.arrays:
            raise ValueError("a VolumeSet needs at least one volume")
        if not self.boxes:
            self.boxes = [foreground_box(a) for a in self.arrays]
        if not self.names:
            self.names = [f"volume_{i}" for i in range(len(self.arrays))]

    def __len__(self) -> int:
        return len(self.arrays)


def foreground_box(volume: np.ndarray, margin: int = 2) -> Box:
    """Bounding box of voxels above 5 % of the robust intensity range (air and padding excluded).

    ``volume``: (I, J, K). Returns ``((lo_i, lo_j, lo_k), (hi_i, hi_j, hi_k))``, hi exclusive; the whole volume
    when nothing stands out (e.g. a constant image).
    """
    step = max(1, volume.size // 1_000_000)
    lo, hi = np.percentile(np.asarray(volume).ravel()[::step], [0.5, 99.5])
    mask = np.asarray(volume) > lo + 0.05 * (hi - lo)
    if hi <= lo or not mask.any():
        return (0, 0, 0), tuple(int(s) for s in volume.shape)  # type: ignore[return-value]
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    start = tuple(max(0, int(i[0]) - margin) for i in idx)
    stop = tuple(min(s, int(i[-1]) + 1 + margin) for i, s in zip(idx, volume.shape))
    return start, stop  # type: ignore[return-value]
