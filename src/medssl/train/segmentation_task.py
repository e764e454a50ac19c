"""The fine-tuning task for `TrainLoop` and its validation.

`SegmentationTask(net)(batch)` returns the masked Dice + CE losses of one batch; `validate_cases` segments
each validation case by sliding window on the preprocessed grid and reports per-class Dice.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np
import torch

from ..data.sampling import Case
from ..inference.sliding_window import WindowSettings, probabilities
from ..plan import Plan
from .losses import dice_per_class, masked_dice_ce, mean_ignoring_nan


class SegmentationTask(torch.nn.Module):
    """``batch = {"image": (B, C, *P), "label": (B, *P)}`` -> {"loss", "dice_loss", "ce"}."""

    def __init__(self, net: torch.nn.Module, ignore_index: int = 255, frozen_encoder: bool = False) -> None:
        super().__init__()
        self.net, self.ignore_index, self.frozen_encoder = net, ignore_index, frozen_encoder

    def train(self, mode: bool = True) -> "SegmentationTask":
        """A frozen backbone stays in eval mode: its BatchNorm statistics must not drift either."""
        super().train(mode)
        if self.frozen_encoder:
            self.net.encoder.eval()
        return self

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return masked_dice_ce(self.net(batch["image"]), batch["label"], self.ignore_index)


def segment_case(net: torch.nn.Module, case: Case, plan: Plan, overlap: float, device: torch.device) -> np.ndarray:
    """Class-index map (I, J, K) of a preprocessed case (no TTA)."""
    settings = WindowSettings.from_plan(plan, overlap)
    image = torch.from_numpy(case.image).unsqueeze(0)
    return probabilities(net, image, settings, device)[0].argmax(0).numpy()


def validate_cases(net: torch.nn.Module, cases: Sequence[Case], plan: Plan, overlap: float,
                   device: torch.device) -> Dict[str, Any]:
    """{"dice": {label name: mean Dice over cases}, "mean_dice": ..., "metric": mean_dice}."""
    per_case = [dice_per_class(segment_case(net, c, plan, overlap, device), c.label, plan.num_classes,
                               plan.ignore_label) for c in cases]
    with np.errstate(all="ignore"):
        per_class = np.nanmean(np.stack(per_case), axis=0) if per_case else np.array([])
    dice = {lab.name: float(v) for lab, v in zip(plan.labels[1:], per_class)}
    mean = mean_ignoring_nan(per_class)
    return {"dice": dice, "mean_dice": mean, "metric": mean}
