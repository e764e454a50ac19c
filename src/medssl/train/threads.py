"""How many CPU threads a training run uses (``loop: {threads: N}``; 0: chosen here).

Measured on the reference machine (2 shared cores, `benchmarks/train_step_bf16.py --threads 1 2`, the demo's
fine-tuning step): with other jobs running, two OpenMP threads were 2-4x *slower* than one, because every
parallel region waits at its barrier for the thread the scheduler has just taken away; one thread never waits.
So ``auto`` gives the run only the cores the 1-minute load average leaves free, at least one, and never more
than torch's current count (a caller's ``torch.set_num_threads`` stays a ceiling): an idle machine gets all of
them, a busy one a single thread. ``OMP_NUM_THREADS`` (or an explicit ``threads``) is obeyed as is. The count
is saved in the checkpoint and a resumed run takes it again, so ``--resume`` stays bit-exact under any load.

The load average lags: a minute after a run ends it still counts that run (the demo's fine-tuning, started
right after its 38 s of pretraining on two threads, saw a load of 1.3 on an idle machine and took one thread of
two). So each run that ends records its average CPU use (``$MEDSSL_HOME/recent_cpu_runs.json``, this host only),
and what ended runs still add to the 1-minute average, an exponential average with a 60 s time constant, is
subtracted (`own_load`): pretraining and fine-tuning in one process, or as two `medssl` commands, both count.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import time
from typing import Callable, Dict, Iterator, List, Optional

import torch

from ..home import medssl_home
from ..inference.devices import usable_cores

RECENT_RUNS = "recent_cpu_runs.json"
LOAD_TAU_S = 60.0  # Linux's 1-minute load average: exponential decay with this time constant
KEEP_RUNS_S = 300.0  # older runs add less than 1 % of their level and are dropped


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows): assume an idle machine
        return 0.0


def own_load(now: float, runs: List[Dict]) -> float:
    """What the ended ``runs`` ({"start", "end", "level": average runnable threads}) still add to the 1-minute
    load average at ``now``: a run of ``d`` s raised it by ``level * (1 - exp(-d/60))``, which decays since."""
    total = 0.0
    for run in runs:
        if run["end"] <= now:
            rise = run["level"] * (1 - math.exp(-(run["end"] - run["start"]) / LOAD_TAU_S))
            total += rise * math.exp(-(now - run["end"]) / LOAD_TAU_S)
    return total


def _cpu_seconds() -> float:
    """CPU seconds of this process and its ended children (DataLoader workers)."""
    t = os.times()  # children: zero on Windows
    return t.user + t.system + t.children_user + t.children_system


def recent_runs(now: Optional[float] = None) -> List[Dict]:
    """This host's runs that ended in the last `KEEP_RUNS_S` (none if the record cannot be read)."""
    now = time.time() if now is None else now
    try:
        runs = json.loads((medssl_home() / RECENT_RUNS).read_text())
        return [r for r in runs if r.get("host") == socket.gethostname() and now - float(r["end"]) < KEEP_RUNS_S]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return []


def record_run(start: float, end: float, cpu_seconds: float) -> None:
    """Add an ended run to the record (best effort: a read-only home only loses the correction)."""
    if end <= start:
        return
    run = {"host": socket.gethostname(), "start": start, "end": end, "level": cpu_seconds / (end - start)}
    path = medssl_home() / RECENT_RUNS
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(recent_runs(end) + [run]))
        os.replace(tmp, path)
    except OSError:
        pass


def load_of_others() -> float:
    """The 1-minute load average less what this host's ended medssl runs still add to it."""
    return max(0.0, _load_average() - own_load(time.time(), recent_runs()))


def free_cores(cores: int, load: float) -> int:
    """Cores left by ``load`` runnable jobs (a load of 0.75 or more takes a core), at least 1, at most ``cores``.
    The reference machine idles at a load of 0.4-0.6 (its own services); there the demo's pretraining took 38 s on
    two threads and 60 s on the one that a threshold of 0.5 left it."""
    busy = math.floor(max(load, 0.0) + 0.25)
    return max(1, min(cores, cores - busy))


def training_threads(requested: int = 0, load: Optional[Callable[[], float]] = None) -> int:
    """``requested`` > 0 as is; with ``OMP_NUM_THREADS`` set, torch's own count; else `free_cores` of
    ``load()`` (default `load_of_others`), at most torch's current count."""
    if requested > 0:
        return int(requested)
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    return min(torch.get_num_threads(), free_cores(usable_cores(), (load or load_of_others)()))


@contextlib.contextmanager
def cpu_threads(device: torch.device, requested: int = 0) -> Iterator[int]:
    """Run the block with `training_threads` torch threads on a CPU (restored afterwards); GPUs unchanged."""
    before = torch.get_num_threads()
    if device.type != "cpu":
        yield before
        return
    n = training_threads(requested)
    torch.set_num_threads(n)
    start, cpu = time.time(), _cpu_seconds()
    try:
        yield n
    finally:
        torch.set_num_threads(before)
        record_run(start, time.time(), _cpu_seconds() - cpu)
