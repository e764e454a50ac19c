"""Intensity augmentations for SSL views, on tensors ``x: (1, I, J, K)`` with numpy-generator randomness.

Re-implemented from the MONAI transforms 3DINO, VoCo and PyMIC/MIS-FM compose (MONAI is Apache-2.0; the
formulas are those of its docs): ``RandAdjustContrast`` (gamma), ``RandGaussianNoise``,
``RandHistogramShift``, ``RandGaussianSmooth``, ``RandGaussianSharpen``, ``RandGibbsNoise`` and
``RandShiftIntensity``; plus intensity inversion (PyMIC ``Crop4VolumeFusion``).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def _seed(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(2**31)))


def gamma(x: torch.Tensor, g: float) -> torch.Tensor:
    """Gamma on the min-max range of ``x`` (RandAdjustContrast): range kept, shape bent."""
    lo, hi = x.min(), x.max()
    span = (hi - lo).clamp_min(1e-8)
    return ((x - lo) / span).clamp(0, 1).pow(g) * span + lo


def adaptive_contrast(x: torch.Tensor, p_low: float, p_high: float) -> torch.Tensor:
    """PyMIC ``adaptive_contrast_adjust`` (HiLab-git/PyMIC ``transform/intensity.py``, Apache-2.0): piecewise
    linear onto [0, 1]: below the ``p_low`` percentile -> [0, 0.1], up to ``p_high`` -> [0.1, 0.9], above ->
    [0.9, 1]. A constant stretch (percentile at the extreme) maps to its end point instead of dividing by 0."""
    flat = x.flatten().double()
    lo, hi = flat.min(), flat.max()
    v0, v1 = torch.quantile(flat, p_low / 100.0), torch.quantile(flat, p_high / 100.0)
    xd = x.double()
    low = (xd - lo) * 0.1 / (v0 - lo) if v0 > lo else torch.zeros_like(xd)
    mid = (xd - v0) / (v1 - v0) * 0.8 + 0.1 if v1 > v0 else torch.full_like(xd, 0.5)
    high = 0.9 + 0.1 * (xd - v1) / (hi - v1) if hi > v1 else torch.ones_like(xd)
    return torch.where(xd < v0, low, torch.where(xd > v1, high, mid)).to(x.dtype)


def gaussian_noise(x: torch.Tensor, rng: np.random.Generator, std: float) -> torch.Tensor:
    return x + torch.randn(x.shape, generator=_seed(rng)) * float(rng.uniform(0, std))


def histogram_shift(x: torch.Tensor, rng: np.random.Generator, n_points: int = 10) -> torch.Tensor:
    """Piecewise-linear monotone intensity remap with randomly displaced inner control points (RandHistogramShift)."""
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return x
    ref = np.linspace(0.0, 1.0, n_points)
    moved = ref.copy()
    for i in range(1, n_points - 1):
        moved[i] = rng.uniform(moved[i - 1], ref[i + 1])
    t = ((x - lo) / (hi - lo)).clamp(0, 1)
    idx = torch.bucketize(t, torch.as_tensor(ref[1:-1], dtype=x.dtype))
    x0, x1 = torch.as_tensor(ref, dtype=x.dtype)[idx], torch.as_tensor(ref, dtype=x.dtype)[idx + 1]
    y0, y1 = torch.as_tensor(moved, dtype=x.dtype)[idx], torch.as_tensor(moved, dtype=x.dtype)[idx + 1]
    return (y0 + (t - x0) / (x1 - x0) * (y1 - y0)) * (hi - lo) + lo


def gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (sigma in voxels, kernel radius 3 sigma, replicate padding)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    k = k / k.sum()
    y = x[None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0] * 6
        pad[2 * (2 - axis)], pad[2 * (2 - axis) + 1] = radius, radius
        y = F.conv3d(F.pad(y, pad, mode="replicate"), k.view(shape))
    return y[0]


def gaussian_sharpen(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Unsharp masking (RandGaussianSharpen defaults: sigma1 0.5-1, sigma2 0.5, alpha 10-30)."""
    blurred = gaussian_smooth(x, float(rng.uniform(0.5, 1.0)))
    return blurred + float(rng.uniform(10.0, 30.0)) * (blurred - gaussian_smooth(blurred, 0.5))


def gibbs_noise(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Gibbs ringing: keep the central ``1 - alpha`` of k-space along every axis (RandGibbsNoise)."""
    k = torch.fft.fftshift(torch.fft.fftn(x, dim=(1, 2, 3)), dim=(1, 2, 3))
    mask = torch.ones(x.shape[1:], dtype=torch.bool)
    for axis, n in enumerate(x.shape[1:]):
        keep = max(1, int(round(n * (1.0 - alpha))))
        start = (n - keep) // 2
        line = torch.zeros(n, dtype=torch.bool)
        line[start:start + keep] = True
        shape = [1, 1, 1]
        shape[axis] = n
        mask &= line.view(shape)
    k = k * mask
    return torch.fft.ifftn(torch.fft.ifftshift(k, dim=(1, 2, 3)), dim=(1, 2, 3)).real.to(x.dtype)


def shift_intensity(x: torch.Tensor, rng: np.random.Generator, offset: float) -> torch.Tensor:
    """``x + U(-offset, offset)`` (RandShiftIntensity)."""
    return x + float(rng.uniform(-offset, offset))


def invert(x: torch.Tensor) -> torch.Tensor:
    """Intensity inversion within the range of ``x``."""
    return x.max() + x.min() - x


def one_of(x: torch.Tensor, rng: np.random.Generator, gamma_range: Sequence[float] = (0.5, 2.0),
           noise_std: float = 0.002) -> torch.Tensor:
    """One of gamma, Gaussian noise or histogram shift, chosen uniformly (3DINO's OneOf block)."""
    choice = int(rng.integers(3))
    if choice == 0:
        return gamma(x, float(math.exp(rng.uniform(math.log(gamma_range[0]), math.log(gamma_range[1])))))
    if choice == 1:
        return gaussian_noise(x, rng, noise_std)
    return histogram_shift(x, rng)
