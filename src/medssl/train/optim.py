"""Optimisers and learning-rate schedules.

Parameter groups come from the task (`medssl.ssl.param_groups.split_decay` by default). Schedules: linear warm-up, then poly (nnU-Net, exponent 0.9), cosine or
constant.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List

import torch

from ..errors import InputError


def build_optimizer(groups: List[Dict[str, Any]], cfg) -> torch.optim.Optimizer:
    if not any(g["params"] for g in groups):
        raise InputError("nothing to train: every parameter is frozen; unfreeze the backbone or the decoder")
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=_amsgrad(cfg))
    if cfg.optimizer == "adam":  # L2 penalty in the gradient, as PyMIC's Adam (MIS-FM's fine-tuning)
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=_amsgrad(cfg))
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,  # torch refuses
                               weight_decay=cfg.weight_decay)  # Nesterov without momentum
    raise InputError(f"unknown optimizer {cfg.optimizer!r}; use adamw, adam or sgd")


def _amsgrad(cfg) -> bool:
    return bool(getattr(cfg, "amsgrad", False))


def lr_factor(step: int, total: int, warmup: int, schedule: str, power: float = 0.9) -> float:
    """Multiplier of the base LR at ``step`` (0-based); ``power``: the poly exponent.

    Warm-up takes at most a fifth of the run, so a short run (``--steps 40``) still reaches the base LR.
    """
    warmup = min(warmup, total // 5)
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    t = min(max(t, 0.0), 1.0)
    if schedule == "poly":
        return (1.0 - t) ** power
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "constant":
        return 1.0
    raise InputError(f"unknown schedule {schedule!r}; use poly, cosine or constant")


def warmup_steps(cfg) -> int:
    """``cfg.warmup_steps``, or ``cfg.warmup_fraction`` of ``cfg.steps`` when a recipe gives a fraction."""
    fraction = getattr(cfg, "warmup_fraction", None)
    return cfg.warmup_steps if fraction is None else int(round(fraction * cfg.steps))


def build_scheduler(opt: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.LambdaLR:
    warmup, power = warmup_steps(cfg), getattr(cfg, "poly_power", 0.9)
    lr_factor(0, cfg.steps, warmup, cfg.schedule, power)  # validates the name early
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps, warmup, cfg.schedule, power))
