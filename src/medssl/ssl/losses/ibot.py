"""iBOT masked-patch loss (Zhou et al., ICLR 2022), as DINOv2 computes it with a separate head.

Ported from DINOv2 (facebookresearch/dinov2 ``dinov2/loss/ibot_patch_loss.py``, Apache-2.0, Copyright Meta
Platforms, Inc.): the teacher's distribution over the prototypes of each *masked* patch token
(Sinkhorn-Knopp centred over all masked tokens of all ranks, `.dino.sinkhorn_knopp`) supervises the student's
prediction for the same token of the masked view; each image's tokens are weighted by one over its number of
masked tokens, then averaged over the images of the batch (images without masked tokens count in the
denominator, as in DINOv2).
"""
from __future__ import annotations

import torch
from torch import nn

from .dino import cross_entropy


class iBOTPatchLoss(nn.Module):  # noqa: N801 - the paper's name
    """``forward(student (M, K), teacher targets (M, K), masks (B, N))`` for the M masked tokens in row order."""

    def __init__(self, student_temp: float = 0.1) -> None:
        super().__init__()
        self.student_temp = student_temp

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        loss = cross_entropy(teacher, student, self.student_temp)  # (M,)
        per_image = masks.sum(dim=-1, keepdim=True).clamp(min=1).float()
        weight = (1.0 / per_image).expand_as(masks)[masks]
        return (loss * weight).sum() / masks.shape[0]
