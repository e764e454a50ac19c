"""Build a network without its random initialisation, for a network whose weights are all loaded next.

`load_package` builds the plan's network and then replaces every parameter and buffer by the package's own
(a strict ``load_state_dict(..., assign=True)``): the random values drawn first are thrown away. Drawing them is
most of the build: on 2 cores SwinUNETR-H (VoCo-H) 6.3 s, ViT-L (3DINO) 4.4 s, ResEnc-L 0.7 s, against 0.03,
0.17 and 0.01 s without; and the tensors the load replaces, never written, never become resident memory.

Within `initialisation_skipped`, ``torch.nn.init``'s filling functions return their tensor as allocated (the
idea of Hugging Face transformers' ``no_init_weights``, Apache-2.0), in the calling thread only: another thread
building a network to train meanwhile gets its random weights as always. Buffers and parameters a constructor
computes by plain tensor operations (position indices, fixed embeddings) are unaffected.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Callable, Collection, Dict, Iterator

import torch

INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                  "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                  "sparse_")

_state = threading.local()
_lock = threading.Lock()
_originals: Dict[str, Callable] = {}
_users = 0


class FillPlan:
    """Targets of the top-level fill calls of one build in call order, and the indices of those skipped."""

    def __init__(self, skip: Collection[int] = ()) -> None:
        self.skip, self.targets, self.depth = set(skip), [], 0


def _skippable(original: Callable) -> Callable:
    @functools.wraps(original)
    def fill(tensor: torch.Tensor, *args, **kwargs):
        if getattr(_state, "skip", 0):
            return tensor
        plan = getattr(_state, "plan", None)
        if plan is None or plan.depth:  # a fill called by another fill is part of that call
            return original(tensor, *args, **kwargs)
        index = len(plan.targets)
        plan.targets.append(tensor)
        if index in plan.skip:
            return tensor
        plan.depth += 1
        try:
            return original(tensor, *args, **kwargs)
        finally:
            plan.depth -= 1
    return fill


@contextlib.contextmanager
def _wrappers_installed() -> Iterator[None]:
    """torch.nn.init's fill functions replaced by `_skippable` wrappers while any thread is inside."""
    global _users
    with _lock:
        if _users == 0:
            for name in INIT_FUNCTIONS:
                if hasattr(torch.nn.init, name):
                    _originals[name] = getattr(torch.nn.init, name)
                    setattr(torch.nn.init, name, _skippable(_originals[name]))
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                for name, original in _originals.items():
                    setattr(torch.nn.init, name, original)
                _originals.clear()


@contextlib.contextmanager
def initialisation_skipped() -> Iterator[None]:
    """``torch.nn.init``'s functions leave tensors unfilled in this thread while inside (see the module)."""
    with _wrappers_installed():
        _state.skip = getattr(_state, "skip", 0) + 1
        try:
            yield
        finally:
            _state.skip -= 1


@contextlib.contextmanager
def fills_planned(skip: Collection[int] = ()) -> Iterator[FillPlan]:
    """In this thread, record the target tensor of every top-level ``torch.nn.init`` fill call and skip the
    calls whose index (in call order) is in ``skip``; the others fill as usual (`models.fresh_init`)."""
    with _wrappers_installed():
        previous, _state.plan = getattr(_state, "plan", None), FillPlan(skip)
        try:
            yield _state.plan
        finally:
            _state.plan = previous
