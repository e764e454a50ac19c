"""Put network outputs back on the input grid (the inverse of `preprocess`).

Class scores on the network grid are resampled in physical space onto the input grid one class at a time
(linear), keeping a running arg-max, so memory stays at two input-sized arrays whatever the class count;
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

    Background (class 0) gets score 1 outside the network grid, so voxels there become background.
    """
    values = np.asarray(label_values)
    dtype = np.uint8 if values.max() < 256 else np.uint16
    if record.identity():
        index = np.argmax(scores, axis=0)
        return image_from_ijk(values.astype(dtype)[index], record.input_grid)
    best = _to_input_grid(scores[0], record, default=1.0)
    index = np.zeros(best.shape, dtype=np.uint8 if len(values) < 256 else np.uint16)
    for c in range(1, scores.shape[0]):
        s = _to_input_grid(scores[c], record, default=0.0)
        better = s > best
        index[better] = c
        np.maximum(best, s, out=best)
        del s, better
    return image_from_ijk(values.astype(dtype)[index], record.input_grid)


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

