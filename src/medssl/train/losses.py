"""Segmentation losses and metrics with an ignore label (voxels that carry no supervision).

Dice + cross-entropy as in nnU-Net (Isensee et al., Nat. Methods 2021): soft Dice over the batch
(``batch_dice``) on foreground classes plus CE, both restricted to voxels whose label is not ``ignore``.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def masked_dice_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255,
                   smooth: float = 1e-5, dice_weight: float = 1.0, ce_weight: float = 1.0) -> Dict[str, torch.Tensor]:
    """Dice + CE restricted to labelled voxels.

    Args:
        logits: (B, K, I, J, K) raw scores.
        target: (B, I, J, K) int64 class indices, ``ignore_index`` where unlabelled.
    Returns: {"loss", "dice_loss", "ce"}; all zero (with gradient) when nothing is labelled.
    """
    valid = target != ignore_index
    if not bool(valid.any()):
        zero = logits.sum() * 0.0
        return {"loss": zero, "dice_loss": zero.detach(), "ce": zero.detach()}
    ce = F.cross_entropy(logits.float(), torch.where(valid, target, 0), reduction="none")
    ce = (ce * valid).sum() / valid.sum()
    probs = torch.softmax(logits.float(), dim=1) * valid.unsqueeze(1)
    onehot = F.one_hot(torch.where(valid, target, 0), logits.shape[1]).movedim(-1, 1).float() * valid.unsqueeze(1)
    dims = (0, 2, 3, 4)
    intersection = (probs * onehot).sum(dims)[1:]
    denominator = (probs.sum(dims) + onehot.sum(dims))[1:]
    dice = (2 * intersection + smooth) / (denominator + smooth)
    dice_loss = 1.0 - dice.mean()
    loss = dice_weight * dice_loss + ce_weight * ce
    return {"loss": loss, "dice_loss": dice_loss.detach(), "ce": ce.detach()}


def dice_per_class(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Hard Dice of classes 1..K-1 over voxels with a label; NaN where a class is absent in both.

    Args:
        pred, target: integer class-index arrays of the same shape.
    Returns: (K-1,) float array.
    """
    valid = target != ignore_index
    p, t = pred[valid], target[valid]
    out = np.full(num_classes - 1, np.nan)
    for c in range(1, num_classes):
        pc, tc = p == c, t == c
        denom = int(pc.sum()) + int(tc.sum())
        if denom:
            out[c - 1] = 2.0 * int(np.logical_and(pc, tc).sum()) / denom
    return out


def mean_ignoring_nan(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=float)
    return float(np.nanmean(arr)) if np.any(np.isfinite(arr)) else float("nan")
