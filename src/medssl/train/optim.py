"""Optimisers and learning-rate schedules.

Default parameter groups put weights in a decayed group and 1-D parameters (norms, biases) in an undecayed
one (as dinov2 and timm do). Schedules: linear warm-up, then poly (nnU-Net, exponent 0.9), cosine or
constant.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List

import torch

from ..errors import InputError


def split_decay(named_params: Iterable, weight_decay: float) -> List[Dict[str, Any]]:
    """Two groups: weights with ``weight_decay``, 1-D parameters without."""
    decay, no_decay = [], []
    for _, p in named_params:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0})
            if g["params"]]


def build_optimizer(groups: List[Dict[str, Any]], cfg) -> torch.optim.Optimizer:
    if not any(g["params"] for g in groups):
        raise InputError("nothing to train: every parameter is frozen; unfreeze the backbone or the decoder")
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,  # torch refuses
                               weight_decay=cfg.weight_decay)  # Nesterov without momentum
    raise InputError(f"unknown optimizer {cfg.optimizer!r}; use adamw or sgd")


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base LR at ``step`` (0-based).

    Warm-up takes at most a fifth of the run, so a short run (``--steps 40``) still reaches the base LR.
    """
    warmup = min(warmup, total // 5)
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    t = min(max(t, 0.0), 1.0)
    if schedule == "poly":
        return (1.0 - t) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "constant":
        return 1.0
    raise InputError(f"unknown schedule {schedule!r}; use poly, cosine or constant")


def build_scheduler(opt: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.LambdaLR:
    lr_factor(0, cfg.steps, cfg.warmup_steps, cfg.schedule)  # validates the name early
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps, cfg.warmup_steps, cfg.schedule))
