"""Geometric view sampling for SSL methods: one affine ``grid_sample`` per view, reading only the voxels needed.

A view maps output voxel ``p`` (0 <= p < P per axis) to volume voxel ``centre + M (p - (P - 1) / 2)``, with
``M = diag(box / P) @ Q``: ``box`` the extent of the view in volume voxels (random-resized crops,
RandomResizedCrop3d of 3DINO), ``Q`` a signed permutation of the output axes (flips and 90-degree rotations)
or a rotation (MAE/nnssl spatial augmentation). `sample_view` cuts the bounding block of the view out of the
(memory-mapped) volume first, so a view of a large volume costs what the view costs. Outside the volume the
border voxel is repeated. Axis order is (i, j, k) throughout; tensors are ``(1, *P)``.

All randomness comes from the numpy ``Generator`` passed in, so a step's batch is a pure function of
``(seed, step)`` (see `..ssl.batches`).
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..data.affine import PAIRS, random_rotation, signed_permutation, voxel_affine_theta  # noqa: F401 (re-exported)


def sample_view(volume: np.ndarray, centre: Sequence[float], matrix: np.ndarray, out: Sequence[int]) -> torch.Tensor:
    """Trilinear view of ``volume`` (I, J, K) -> ``(1, *out)`` float32 (see the module docstring)."""
    out_a = np.asarray(out, float)
    corners = np.array(np.meshgrid(*[[-(o - 1) / 2, (o - 1) / 2] for o in out_a], indexing="ij")).reshape(3, -1)
    reach = np.asarray(centre, float)[:, None] + matrix @ corners
    shape = np.asarray(volume.shape)
    lo = np.clip(np.floor(reach.min(1)).astype(int) - 1, 0, shape - 1)
    hi = np.clip(np.ceil(reach.max(1)).astype(int) + 2, lo + 1, shape)
    block = np.array(volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], dtype=np.float32)
    size = (hi - lo).astype(float)
    theta = voxel_affine_theta(np.asarray(centre, float) - lo, matrix, out_a, size)
    grid = F.affine_grid(theta[None], [1, 1, *[int(o) for o in out]], align_corners=False)
    view = F.grid_sample(torch.from_numpy(block)[None, None], grid, mode="bilinear", padding_mode="border",
                         align_corners=False)
    return view[0]


def random_centre(rng: np.random.Generator, extent: Sequence[float], box: Tuple[Sequence[int], Sequence[int]]
                  ) -> np.ndarray:
    """A voxel centre for a view of ``extent`` voxels lying inside the foreground ``box`` where it fits; where
    it does not, the view is centred on the box along that axis (plus up to a quarter of the excess)."""
    lo, hi = np.asarray(box[0], float), np.asarray(box[1], float)
    half = np.asarray(extent, float) / 2.0
    low, high = lo + half - 0.5, hi - half - 0.5
    mid = (lo + hi - 1.0) / 2.0
    spread = np.abs(low - high) / 4.0
    fits = low <= high
    return np.where(fits, rng.uniform(np.minimum(low, high), np.maximum(low, high)),
                    mid + rng.uniform(-1.0, 1.0, 3) * spread)


def resized_crop_extent(rng: np.random.Generator, fg_size: Sequence[int], inplane_scale: Sequence[float],
                        slice_scale: Sequence[float], aspect: Sequence[float], slice_axis: int = 2) -> np.ndarray:
    """Extent (voxels) of a 3-D random-resized crop with separate in-plane and cross-slice scales (3DINO):
    the in-plane area fraction is drawn from ``inplane_scale`` with the in-plane aspect ratio from ``aspect``
    (log-uniform), the fraction of the slice axis from ``slice_scale``; fractions are of the foreground size."""
    size = np.asarray(fg_size, float)
    plane = [a for a in range(3) if a != slice_axis]
    area = rng.uniform(*inplane_scale)
    ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
    extent = np.empty(3)
    extent[plane[0]] = size[plane[0]] * math.sqrt(area * ratio)
    extent[plane[1]] = size[plane[1]] * math.sqrt(area / ratio)
    extent[slice_axis] = size[slice_axis] * rng.uniform(*slice_scale)
    return np.clip(extent, 1.0, None)


def box_size(box: Tuple[Sequence[int], Sequence[int]]) -> np.ndarray:
    return np.asarray(box[1], float) - np.asarray(box[0], float)


def crop_matrix(extent: Sequence[float], out: Sequence[int], q: np.ndarray | None = None) -> np.ndarray:
    """``M = diag(extent / out) @ Q``: a view of ``extent`` voxels resampled to ``out`` voxels."""
    m = np.diag(np.asarray(extent, float) / np.asarray(out, float))
    return m if q is None else m @ q
