"""Exponential moving averages and the schedules of teacher momentum and temperature.

`update_momentum` is BYOL/DINO's teacher update ``t <- m t + (1 - m) s`` (lightly ``update_momentum``;
DINOv2 ``SSLMetaArch.update_teacher``). The schedules are pure functions of the step, so a resumed run
continues on the same curve.
"""
from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def update_momentum(teacher: nn.Module, student: nn.Module, m: float) -> None:
    """Teacher parameters become ``m * teacher + (1 - m) * student``; buffers are copied from the student."""
    t_params = [p for p in teacher.parameters()]
    s_params = [p.detach() for p in student.parameters()]
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student must have the same parameters")
    torch._foreach_mul_(t_params, m)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - m)
    for tb, sb in zip(teacher.buffers(), student.buffers()):
        tb.copy_(sb)


def cosine_schedule(step: int, total: int, start: float, end: float) -> float:
    """``start`` at step 0 to ``end`` at ``total`` along a half cosine (DINO momentum 0.992 -> 1)."""
    t = min(max(step / max(1, total), 0.0), 1.0)
    return end - (end - start) * (math.cos(math.pi * t) + 1.0) / 2.0


def linear_warmup(step: int, warmup: int, start: float, end: float) -> float:
    """Linear from ``start`` to ``end`` over ``warmup`` steps, then ``end`` (DINO teacher temperature)."""
    if warmup <= 0 or step >= warmup:
        return end
    return start + (end - start) * step / warmup


def freeze(module: nn.Module) -> nn.Module:
    """No gradients for ``module`` (a teacher); returns it."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module
