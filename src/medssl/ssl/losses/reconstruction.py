"""Masked reconstruction losses (MAE, He et al., CVPR 2022; 3-D CNN variant: Wald et al., "Revisiting MAE
pre-training for 3D medical image segmentation", CVPR 2025): mean squared error on masked voxels only,
optionally against a target normalised per block/patch (MAE ``norm_pix_loss``)."""
from __future__ import annotations

from typing import Sequence

import torch


def to_blocks(x: torch.Tensor, block: Sequence[int]) -> torch.Tensor:
    """``(B, C, I, J, K)`` -> ``(B, N, C * bi * bj * bk)``: one row per block, blocks in (i, j, k) raster order."""
    b, c = x.shape[:2]
    bi, bj, bk = (int(s) for s in block)
    gi, gj, gk = x.shape[2] // bi, x.shape[3] // bj, x.shape[4] // bk
    x = x.reshape(b, c, gi, bi, gj, bj, gk, bk).permute(0, 2, 4, 6, 1, 3, 5, 7)
    return x.reshape(b, gi * gj * gk, c * bi * bj * bk)


def from_blocks(x: torch.Tensor, block: Sequence[int], grid: Sequence[int], channels: int = 1) -> torch.Tensor:
    """Inverse of `to_blocks`: ``(B, N, C * bi * bj * bk)`` -> ``(B, C, I, J, K)``."""
    b = x.shape[0]
    bi, bj, bk = (int(s) for s in block)
    gi, gj, gk = (int(g) for g in grid)
    x = x.reshape(b, gi, gj, gk, channels, bi, bj, bk).permute(0, 4, 1, 5, 2, 6, 3, 7)
    return x.reshape(b, channels, gi * bi, gj * bj, gk * bk)


def normalize_blocks(target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-row z-score of ``(B, N, V)`` block rows (MAE's per-patch normalised target)."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True, unbiased=False)
    return (target - mean) / (var + eps).sqrt()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the positions where ``mask`` is True (broadcast to ``pred``'s shape)."""
    mask = mask.expand_as(pred).to(pred.dtype)
    err = (pred.float() - target.float()) ** 2
    return (err * mask).sum() / mask.sum().clamp_min(1.0)
