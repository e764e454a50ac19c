"""KoLeo regulariser (Sablayrolles et al., "Spreading vectors for similarity search", ICLR 2019).

Ported from DINOv2 (facebookresearch/dinov2 ``dinov2/loss/koleo_loss.py``, Apache-2.0, Copyright Meta
Platforms, Inc.): ``-mean(log(d_i))`` with ``d_i`` the distance of each L2-normalised vector to its nearest
neighbour in the batch, which spreads the class tokens of a batch apart. Computed in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``x: (N, D)`` with N >= 2 -> scalar."""
    x = F.normalize(x.float(), p=2, dim=-1, eps=eps)
    with torch.no_grad():
        dots = x @ x.t()
        dots.fill_diagonal_(-1.0)
        nearest = dots.argmax(dim=1)
    distances = F.pairwise_distance(x, x[nearest], p=2, eps=eps)
    return -torch.log(distances + eps).mean()
