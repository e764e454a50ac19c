"""Intensity normalisation schemes, each with frozen statistics stored in the plan.

A scheme is registered in `NORMALIZERS` with two pure functions: ``fit(samples, **options) -> params``
computes the frozen parameters from training voxels (once, at planning time) and
``apply(x, **params) -> x`` normalises a float32 array (any shape). Schemes:

- ``ct_window``: clip to [lower, upper] HU and scale to ``out`` (VoCo: -175..250 -> [0, 1]).
- ``zscore``: (x - mean) / std with dataset statistics, or per image when ``per_image`` (nnssl/OpenMind).
- ``percentile``: clip to the [lower_pct, upper_pct] percentiles and scale to ``out`` (3DINO: 0.05/99.95
  -> [-1, 1]); the percentile values are frozen, or taken per image when ``per_image``.
- ``none``: identity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Sequence

import numpy as np

from ..registry import Registry


@dataclass(frozen=True)
class Normalizer:
    fit: Callable[..., Dict[str, Any]]
    apply: Callable[..., np.ndarray]


NORMALIZERS: Registry[Normalizer] = Registry("normalisation scheme")


def _scale(x: np.ndarray, lo: float, hi: float, out: Sequence[float]) -> np.ndarray:
    """Clip ``x`` to [lo, hi] and map it linearly onto [out[0], out[1]] (in place when possible)."""
    np.clip(x, lo, hi, out=x)
    x -= lo
    x *= (out[1] - out[0]) / max(hi - lo, 1e-8)
    x += out[0]
    return x


def _subsample(samples: Sequence[np.ndarray], max_voxels: int = 2_000_000) -> np.ndarray:
    """Concatenate voxels of several arrays, taking a regular subsample to bound memory."""
    flat = [np.asarray(s, np.float32).ravel() for s in samples]
    total = sum(f.size for f in flat)
    step = max(1, total // max_voxels)
    return np.concatenate([f[::step] for f in flat])


def _fit_ct(samples, lower: float = -175.0, upper: float = 250.0, out=(0.0, 1.0)) -> Dict[str, Any]:
    return {"lower": float(lower), "upper": float(upper), "out": [float(out[0]), float(out[1])]}


def _apply_ct(x: np.ndarray, lower: float, upper: float, out=(0.0, 1.0)) -> np.ndarray:
    return _scale(x, lower, upper, out)


def _mean_std(v: np.ndarray) -> tuple:
    """Mean and standard deviation, in float32 as before (the same statistics, bit for bit), in float64 where
    float32 overflows (intensities above ~1e19: their squares exceed float32's range; a scan scaled by 1e20 had
    been normalised with an infinite std)."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = float(v.mean()), float(v.std())
    if not (np.isfinite(mean) and np.isfinite(std)):
        mean, std = float(v.mean(dtype=np.float64)), float(v.std(dtype=np.float64))
    return mean, std


def _fit_zscore(samples, per_image: bool = False, nonzero: bool = False) -> Dict[str, Any]:
    if per_image:
        return {"per_image": True, "nonzero": bool(nonzero)}
    v = _subsample(samples)
    v = v[v != 0] if nonzero and np.any(v != 0) else v
    mean, std = _mean_std(v)
    return {"per_image": False, "nonzero": bool(nonzero), "mean": mean, "std": std}


def _apply_zscore(x: np.ndarray, per_image: bool = False, nonzero: bool = False, mean: float = 0.0,
                  std: float = 1.0) -> np.ndarray:
    if per_image:
        v = x[x != 0] if nonzero and np.any(x != 0) else x
        mean, std = _mean_std(v)
    x -= mean
    x /= max(std, 1e-8)
    return x


def _fit_percentile(samples, lower_pct: float = 0.5, upper_pct: float = 99.5, out=(-1.0, 1.0),
                    per_image: bool = False) -> Dict[str, Any]:
    params: Dict[str, Any] = {"lower_pct": float(lower_pct), "upper_pct": float(upper_pct),
                              "out": [float(out[0]), float(out[1])], "per_image": bool(per_image)}
    if not per_image:
        lo, hi = np.percentile(_subsample(samples), [lower_pct, upper_pct])
        params.update(lower=float(lo), upper=float(hi))
    return params


def _apply_percentile(x: np.ndarray, lower_pct: float, upper_pct: float, out=(-1.0, 1.0),
                      per_image: bool = False, lower: float = 0.0, upper: float = 1.0) -> np.ndarray:
    if per_image:
        step = max(1, x.size // 2_000_000)
        lower, upper = (float(v) for v in np.percentile(x.ravel()[::step], [lower_pct, upper_pct]))
    return _scale(x, lower, upper, out)


NORMALIZERS.register("ct_window")(Normalizer(_fit_ct, _apply_ct))
NORMALIZERS.register("zscore")(Normalizer(_fit_zscore, _apply_zscore))
NORMALIZERS.register("percentile")(Normalizer(_fit_percentile, _apply_percentile))
NORMALIZERS.register("none")(Normalizer(lambda samples, **kw: {}, lambda x, **kw: x))


def fit_normalization(scheme: str, samples: Sequence[np.ndarray], **options: Any) -> Dict[str, Any]:
    """Frozen parameters of ``scheme`` for the voxels in ``samples``."""
    return NORMALIZERS.get(scheme).fit(samples, **options)


def normalize(x: np.ndarray, scheme: str, params: Dict[str, Any]) -> np.ndarray:
    """Normalise the float32 array ``x`` in place and return it."""
    return NORMALIZERS.get(scheme).apply(x, **params)
