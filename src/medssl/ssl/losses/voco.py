"""VoCo volume-contrast losses (Wu et al., "VoCo: A Simple-yet-Effective Volume Contrastive Learning
Framework for 3D Medical Image Analysis", CVPR 2024; TPAMI 2026 extension with the EMA teacher head).

Follows the released code (Luffy03/Large-Scale-Medical ``Self-supervised/models/voco_head.py``, Apache-2.0):
similarities are ReLU'd cosines between a crop's projection and the projections of base crops; the
position loss pulls them to the crops' overlap ratios with ``-log(1 - |label - logit|)`` on overlapping bases
(normalised by the label mass) and pushes non-overlapping bases towards 0 with ``-log(1 - logit)``; the
inter-volume loss asks the student's similarities to another volume's bases to match the teacher's; the
regulariser drives the squared (ReLU'd) cosine between different bases of one volume to 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def similarities(crops: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """``relu(cos)`` of every crop with every base: ``(n, C), (k, C) -> (n, k)``."""
    return F.relu(F.cosine_similarity(crops.float()[:, None], bases.float()[None], dim=-1))


def position_loss(labels: torch.Tensor, logits: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """VoCo's ``ce_loss``: ``labels, logits: (n, k)`` in [0, 1] -> scalar."""
    pos = -(labels * torch.log(1 - (labels - logits).abs() + eps)).sum() / (labels.sum() + eps)
    neg_mask = (labels == 0).to(logits.dtype)
    neg = -(neg_mask * torch.log(1 - logits + eps)).sum() / (neg_mask.sum() + eps)
    return pos + neg


def orthogonality_loss(bases: torch.Tensor) -> torch.Tensor:
    """Mean over pairs i < j of ``relu(cos(b_i, sg(b_j)))^2``: ``bases: (k, C)``."""
    k = bases.shape[0]
    sim = F.relu(F.cosine_similarity(bases.float()[:, None], bases.float().detach()[None], dim=-1)) ** 2
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=bases.device), diagonal=1)
    return sim[upper].mean()
