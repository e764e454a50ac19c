"""Wall and CPU seconds of the demo's phases, and the load they ran under.

On a shared machine wall time says how busy the other jobs kept the cores; the process's CPU time (user +
system, its reaped child processes such as DataLoader workers included, `os.times`) is the load-independent
figure, what the phase costs on cores it has to itself. Both are written to ``summary.json``.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Dict, Iterator


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return float("nan")


class PhaseClock:
    """``with clock.phase("finetune"): ...`` records {"wall_s", "cpu_s", "load_start", "load_end"}."""

    def __init__(self) -> None:
        self.phases: Dict[str, Dict[str, float]] = {}
        self._wall0, self._cpu0 = time.monotonic(), cpu_seconds()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        wall, cpu, load = time.monotonic(), cpu_seconds(), load_average()
        try:
            yield
        finally:
            self.phases[name] = {"wall_s": round(time.monotonic() - wall, 1), "cpu_s": round(cpu_seconds() - cpu, 1),
                                 "load_start": load, "load_end": load_average()}

    def total(self) -> Dict[str, float]:
        return {"wall_s": round(time.monotonic() - self._wall0, 1), "cpu_s": round(cpu_seconds() - self._cpu0, 1)}
