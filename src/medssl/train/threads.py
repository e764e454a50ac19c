"""How many CPU threads a training run uses (``loop: {threads: N}``; 0: chosen here).

Measured on the reference machine (2 shared cores, `benchmarks/train_step_bf16.py --threads 1 2`, the demo's
fine-tuning step): with other jobs running, two OpenMP threads were 2-4x *slower* than one, because every
parallel region waits at its barrier for the thread the scheduler has just taken away; one thread never waits.
So ``auto`` gives the run only the cores the 1-minute load average leaves free, at least one, and never more
than torch's current count (a caller's ``torch.set_num_threads`` stays a ceiling): an idle machine gets all of
them, a busy one a single thread. ``OMP_NUM_THREADS`` (or an explicit ``threads``) is obeyed as is. The count
is saved in the checkpoint and a resumed run takes it again, so ``--resume`` stays bit-exact under any load.
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Callable, Iterator, Optional

import torch

from ..inference.devices import usable_cores


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows): assume an idle machine
        return 0.0


def free_cores(cores: int, load: float) -> int:
    """Cores left by ``load`` runnable jobs (a load of 0.5 or more takes a core), at least 1, at most ``cores``."""
    busy = math.floor(max(load, 0.0) + 0.5)
    return max(1, min(cores, cores - busy))


def training_threads(requested: int = 0, load: Optional[Callable[[], float]] = None) -> int:
    """``requested`` > 0 as is; with ``OMP_NUM_THREADS`` set, torch's own count; else `free_cores`, at most
    torch's current count."""
    if requested > 0:
        return int(requested)
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    return min(torch.get_num_threads(), free_cores(usable_cores(), (load or _load_average)()))


@contextlib.contextmanager
def cpu_threads(device: torch.device, requested: int = 0) -> Iterator[int]:
    """Run the block with `training_threads` torch threads on a CPU (restored afterwards); GPUs unchanged."""
    before = torch.get_num_threads()
    if device.type != "cpu":
        yield before
        return
    n = training_threads(requested)
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
