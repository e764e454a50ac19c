"""Volume Fusion loss (Wang et al., "MIS-FM", arXiv 2306.16925 / IEEE TIP 2025): predicting the fusion
coefficient of every voxel is a segmentation into K+1 classes, trained with Dice + cross-entropy (0.5/0.5 in
the PyMIC configuration). Dice is the soft Dice averaged over all classes, class 0 included (every coefficient
is a real class here, unlike background in segmentation)."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F


def fusion_dice_ce(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 0.5, ce_weight: float = 0.5,
                   smooth: float = 1e-5) -> Dict[str, torch.Tensor]:
    """``logits: (B, K, I, J, K)``, ``target: (B, I, J, K)`` int64 -> {"loss", "dice_loss", "ce"}."""
    logits = logits.float()
    ce = F.cross_entropy(logits, target)
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).float()
    dims = (0, 2, 3, 4)
    dice = (2 * (probs * onehot).sum(dims) + smooth) / (probs.sum(dims) + onehot.sum(dims) + smooth)
    dice_loss = 1.0 - dice.mean()
    return {"loss": dice_weight * dice_loss + ce_weight * ce, "dice_loss": dice_loss.detach(), "ce": ce.detach()}
