"""Voxel-space affine maps shared by fine-tuning patches (`.augment`) and SSL views (`medssl.ssl.views`).

A patch or view maps output voxel ``p`` (0 <= p < P per axis) to volume voxel ``centre + M (p - (P - 1) / 2)``
in (i, j, k) order; `voxel_affine_theta` turns that into the ``(3, 4)`` matrix ``F.affine_grid`` wants
(normalised coordinates, ``align_corners=False``, grid_sample's reversed (x=k, y=j, z=i) order). The random
parts are signed permutations (flips and quarter turns, MONAI RandFlip / RandRotate90 semantics) and rotations
by independent angles about each axis (batchgenerators ``SpatialTransform``).
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np
import torch

PAIRS = ((0, 1), (0, 2), (1, 2))


def voxel_affine_theta(centre: Sequence[float], matrix: np.ndarray, out: Sequence[float],
                       shape: Sequence[float]) -> torch.Tensor:
    """``(3, 4)`` float32 ``theta`` for ``F.affine_grid`` over a volume of ``shape`` voxels: output voxel ``p`` of
    an ``out``-sized grid samples volume voxel ``centre + matrix (p - (out - 1) / 2)``."""
    size, out_a = np.asarray(shape, float), np.asarray(out, float)
    scale = np.diag(1.0 / size) @ np.asarray(matrix, float) @ np.diag(out_a)
    shift = (2.0 * np.asarray(centre, float) + 1.0) / size - 1.0
    theta = np.concatenate([scale[::-1, ::-1], shift[::-1, None]], axis=1)
    return torch.as_tensor(theta.copy(), dtype=torch.float32)


def signed_permutation(rng: np.random.Generator, p_flip: float, p_rot90: float,
                       rot90_pairs: Sequence[Tuple[int, int]] = PAIRS) -> np.ndarray:
    """Random flips (each axis with ``p_flip``) and quarter turns (each axis pair of ``rot90_pairs`` with
    ``p_rot90``, 1-3 turns): a 3x3 signed permutation matrix (MONAI RandFlip / RandRotate90 semantics; 3DINO
    turns in all three pairs, VoCo in-plane only, MONAI's default ``spatial_axes=(0, 1)``)."""
    q = np.eye(3)
    for axis in range(3):
        if rng.random() < p_flip:
            q[:, axis] = -q[:, axis]
    for a, b in rot90_pairs:
        if rng.random() < p_rot90:
            r = np.eye(3)
            for _ in range(int(rng.integers(1, 4))):
                step = np.eye(3)
                step[[a, b], [a, b]] = 0.0
                step[a, b], step[b, a] = -1.0, 1.0
                r = step @ r
            q = q @ r
    return q


def random_rotation(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """Rotation by independent angles in ``[-max, max]`` about each axis (batchgenerators SpatialTransform)."""
    r = np.eye(3)
    for a, b in PAIRS:
        t = math.radians(rng.uniform(-max_degrees, max_degrees))
        m = np.eye(3)
        m[a, a], m[a, b], m[b, a], m[b, b] = math.cos(t), -math.sin(t), math.sin(t), math.cos(t)
        r = m @ r
    return r
