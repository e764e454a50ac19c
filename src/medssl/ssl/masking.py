"""Masks for masked-image modelling: tokens (iBOT, MAE-ViT) and dense cubes (MAE for CNNs).

- `stratified_token_masks`: the iBOT/DINOv2 collate rule: a fraction ``probability`` of the images is
  masked, their ratios stratified over ``ratio`` (image ``i`` of ``n`` draws from the ``i``-th of ``n``
  equal sub-intervals), tokens chosen uniformly at random (3DINO: no block-wise masking), order shuffled.
- `exact_mask`: exactly ``round(ratio * n)`` of ``n`` positions, uniformly (MAE token dropping; nnssl's
  ``create_blocky_mask`` on the grid of 16^3 blocks).
- `expand_blocks`: a block-grid mask to voxels; `keep_indices`: the visible token indices per row.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def exact_mask(rng: np.random.Generator, n: int, ratio: float) -> np.ndarray:
    """Boolean ``(n,)`` with exactly ``round(ratio * n)`` True (masked) entries, clipped to ``[0, n - 1]``."""
    count = int(min(max(round(ratio * n), 0), n - 1))
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[:count]] = True
    return mask


def stratified_token_masks(rng: np.random.Generator, n_images: int, n_tokens: int, ratio: Sequence[float],
                           probability: float) -> torch.Tensor:
    """``(n_images, n_tokens)`` bool, True = masked (see the module docstring)."""
    n_masked = int(n_images * probability)
    edges = np.linspace(ratio[0], ratio[1], n_masked + 1)
    masks = [np.zeros(n_tokens, dtype=bool) for _ in range(n_images)]
    for i in range(n_masked):
        count = int(n_tokens * rng.uniform(edges[i], edges[i + 1]))
        masks[i][rng.permutation(n_tokens)[:count]] = True
    order = rng.permutation(n_images)
    return torch.from_numpy(np.stack([masks[i] for i in order]))


def expand_blocks(mask: torch.Tensor, block: Sequence[int]) -> torch.Tensor:
    """``(B, gi, gj, gk)`` block mask -> ``(B, 1, gi*bi, gj*bj, gk*bk)`` voxel mask."""
    out = mask
    for axis, b in enumerate(block):
        out = out.repeat_interleave(int(b), dim=1 + axis)
    return out.unsqueeze(1)


def keep_indices(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the unmasked tokens of each row of ``mask: (B, N)`` (same count per row) -> ``(B, M)``."""
    b = mask.shape[0]
    order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)  # visible (0) first, in token order
    visible = int((~mask[0]).sum())
    return order[:, :visible].reshape(b, visible)
