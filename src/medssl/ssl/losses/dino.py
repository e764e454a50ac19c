"""DINO class-token loss and teacher centring (Caron et al., ICCV 2021; Oquab et al., DINOv2, TMLR 2024).

Ported from DINOv2 (facebookresearch/dinov2 ``dinov2/loss/dino_clstoken_loss.py``, Apache-2.0, Copyright Meta
Platforms, Inc.): the cross-entropy between the teacher's centred, sharpened distribution and the student's
softmax at temperature 0.1, summed over the (student view, teacher view) pairs; the teacher is centred either
by Sinkhorn-Knopp (SwAV-style equipartition, 3 iterations, what DINOv2 and 3DINO train with) or by an EMA
centre (the original DINO). Under ``torch.distributed`` the Sinkhorn sums are all-reduced over the ranks, as
in DINOv2. The centre is a buffer, so it is saved and resumed with the model.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, temp: float, n_iterations: int = 3,
                   n_samples: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Teacher targets ``(N, K)`` from scores ``logits: (N, K)``: rows are distributions, columns equipartitioned.

    ``n_samples``: number of rows over all ranks (iBOT passes the masked-token count); default ``N * world``.
    """
    shift = logits.detach().float().max() if logits.numel() else logits.new_zeros((), dtype=torch.float32)
    if _distributed():
        dist.all_reduce(shift, op=dist.ReduceOp.MAX)
    q = torch.exp((logits.float() - shift) / temp).t()  # (K, N); one shift for all ranks cancels out
    k = q.shape[0]
    if n_samples is None:
        b = torch.tensor(float(q.shape[1] * (dist.get_world_size() if _distributed() else 1)), device=q.device)
    else:
        b = n_samples.to(q.device, torch.float32).clone()
        if _distributed():
            dist.all_reduce(b)
    total = q.sum()
    if _distributed():
        dist.all_reduce(total)
    q /= total
    for _ in range(n_iterations):
        rows = q.sum(dim=1, keepdim=True)
        if _distributed():
            dist.all_reduce(rows)
        q /= rows * k
        q /= q.sum(dim=0, keepdim=True) * b
    return (q * b).t()


def cross_entropy(teacher: torch.Tensor, student: torch.Tensor, student_temp: float) -> torch.Tensor:
    """Per-row ``-sum(t * log_softmax(s / temp))``: ``(N, K), (N, K) -> (N,)``."""
    return -(teacher * F.log_softmax(student.float() / student_temp, dim=-1)).sum(dim=-1)


class DINOLoss(nn.Module):
    """Cross-entropy over all (student view, teacher view) pairs; see the module docstring."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def softmax_center_teacher(self, teacher: torch.Tensor, temp: float) -> torch.Tensor:
        """Centred, sharpened teacher distribution; then the centre moves towards this batch's mean."""
        probs = F.softmax((teacher.float() - self.center) / temp, dim=-1)
        batch = teacher.float().sum(dim=0, keepdim=True)
        count = torch.tensor(float(len(teacher)), device=teacher.device)
        if _distributed():
            dist.all_reduce(batch)
            dist.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(batch / count, alpha=1 - self.center_momentum)
        return probs

    def forward(self, student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
        """Sum over pairs of the batch-mean cross-entropy; ``student``/``teacher``: lists of ``(B, K)``."""
        total = student[0].new_zeros((), dtype=torch.float32)
        for s in student:
            log_p = F.log_softmax(s.float() / self.student_temp, dim=-1)
            for t in teacher:
                total = total - (t * log_p).sum(dim=-1).mean()
        return total
