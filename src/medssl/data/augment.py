"""Random 3D augmentations for fine-tuning (after the deterministic `preprocess`).

Spatial: rotation about each axis, isotropic scaling and mirroring, expressed as one affine map for
``grid_sample`` (`random_affine`). Intensity: Gaussian noise, brightness, contrast and gamma with nnU-Net's
default probabilities (Isensee et al. 2021, batchgenerators). All randomness comes from the numpy
``Generator`` passed in, so batches are reproducible per step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
import torch

from .affine import random_rotation, voxel_affine_theta


@dataclass
class AugmentConfig:
    """Probabilities and ranges (angles in degrees)."""

    p_rotation: float = 0.2
    max_rotation: float = 15.0
    p_scale: float = 0.2
    scale: Tuple[float, float] = (0.85, 1.15)
    p_mirror: float = 0.5
    mirror_axes: Tuple[int, ...] = (0, 1, 2)
    p_noise: float = 0.1
    noise_std: float = 0.1
    p_brightness: float = 0.15
    brightness: Tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast: Tuple[float, float] = (0.75, 1.25)
    p_gamma: float = 0.3
    gamma: Tuple[float, float] = (0.7, 1.5)

    def __post_init__(self) -> None:
        from ..io.settings import require

        for name, value in vars(self).items():
            if name.startswith("p_"):
                require(0 <= value <= 1, name, value, "a probability in [0, 1]")
        for name in ("scale", "brightness", "contrast", "gamma"):
            low, high = getattr(self, name)
            require(0 < low <= high, name, list(getattr(self, name)), "[low, high] with 0 < low <= high")

    @classmethod
    def none(cls) -> "AugmentConfig":
        return cls(p_rotation=0, p_scale=0, p_mirror=0, p_noise=0, p_brightness=0, p_contrast=0, p_gamma=0)


def _rotation(rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    return random_rotation(rng, cfg.max_rotation) if rng.random() < cfg.p_rotation else np.eye(3)


def random_affine(rng: np.random.Generator, cfg: AugmentConfig, patch: Sequence[int], shape: Sequence[int],
                  centre: np.ndarray) -> torch.Tensor:
    """``theta`` (3, 4) for ``F.affine_grid``: patch voxel p -> volume voxel ``centre + A (p - P // 2)``.

    ``A`` = rotation x scale x mirror in (i, j, k) voxel units; returned in grid_sample's reversed axis order.
    Without augmentation and with an integer centre the patch is an exact crop (no interpolation).
    """
    a = _rotation(rng, cfg)
    if rng.random() < cfg.p_scale:
        a = a * rng.uniform(*cfg.scale)
    for axis in cfg.mirror_axes:
        if rng.random() < cfg.p_mirror:
            a[:, axis] = -a[:, axis]
    p = np.asarray(patch, float)
    return voxel_affine_theta(np.asarray(centre, float) + a @ ((p - 1) / 2.0 - np.floor(p / 2.0)), a, p, shape)


def augment_intensity(x: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """Noise, brightness, contrast and gamma on a patch ``x: (C, I, J, K)``, per channel."""
    out = x.clone()
    for c in range(out.shape[0]):
        v = out[c]
        if rng.random() < cfg.p_noise:
            gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
            v += torch.randn(v.shape, generator=gen) * float(rng.uniform(0, cfg.noise_std))
        if rng.random() < cfg.p_brightness:
            v *= float(rng.uniform(*cfg.brightness))
        if rng.random() < cfg.p_contrast:
            lo, hi, mean = v.min(), v.max(), v.mean()
            v.sub_(mean).mul_(float(rng.uniform(*cfg.contrast))).add_(mean).clamp_(lo, hi)
        if rng.random() < cfg.p_gamma:
            lo, hi = v.min(), v.max()
            span = float(hi - lo) or 1.0
            v.copy_(((v - lo) / span).clamp_(0, 1).pow_(float(rng.uniform(*cfg.gamma))) * span + lo)
    return out
