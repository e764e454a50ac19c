"""One line when a run on the CPU is on course to take days: the published pretraining recipes (250 000 steps of
ResEnc-L at 160^3 for MAE) are GPU recipes; on a workstation without one, ``--preset auto`` keeps them within
memory but a bare ``medssl pretrain`` then shows an ETA of months and nothing more. After a few steps have been
timed this hook says how long the run will take and what to run instead (``--preset cpu``, ``--steps``).
"""
from __future__ import annotations

import time
from typing import Callable, Optional

from ..events import EventSink

TIMED_STEPS = 1  # steps timed after the first (which includes start-up: workers, first allocations); one
# is enough against a threshold of a day, and the recipe on a CPU takes minutes a step (177 s for the first here)
LONG_RUN_S = 24 * 3600.0  # the note appears when the steps left would take longer than this


def duration_words(seconds: float) -> str:
    """``93.0`` -> "2 minutes", ``7200`` -> "2 hours", ``9e6`` -> "104 days" (whole units, at least 1)."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= 2 * size or unit == "minute":
            n = max(1, round(seconds / size))
            return f"{n} {unit}{'s' if n != 1 else ''}"
    raise AssertionError("unreachable")


class LongRunNote:
    """`TrainLoop` hook: on the CPU, after step 1 + `TIMED_STEPS`, emit one ``log`` event when the steps left
    would take more than `LONG_RUN_S`; ``advice`` is the rest of that line (what to run instead)."""

    def __init__(self, sink: EventSink, device_type: str, advice: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sink, self.advice, self.clock = sink, advice, clock
        self.active = device_type == "cpu"
        self.first: Optional[tuple] = None  # (step, time) at the end of the first step this process ran

    def on_step_end(self, step: int, total: int) -> None:
        if not self.active:
            return
        now = self.clock()
        if self.first is None:
            self.first = (step, now)
            return
        if step - self.first[0] < TIMED_STEPS:
            return
        self.active = False  # said at most once a run
        per_step = (now - self.first[1]) / (step - self.first[0])
        left = per_step * (total - step)
        if left > LONG_RUN_S:
            self.sink.emit("log", message=f"at {per_step:.1f} s a step on the CPU the {total - step} steps left "
                                          f"take about {duration_words(left)}; {self.advice}")
