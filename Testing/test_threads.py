"""CPU threads of a training run: the cores the load leaves free, an explicit count as is, kept on resume."""
from __future__ import annotations

import math
import time

import torch

from medssl.events import ListSink
from medssl.train import threads as threads_mod
from medssl.train.loop import LoopConfig, TrainLoop
from medssl.train.threads import free_cores, own_load, record_run, recent_runs, training_threads


class CountsThreads(torch.nn.Module):
    """``batch -> {"loss"}``, recording torch's thread count during each forward."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))
        self.seen = []

    def forward(self, batch):
        self.seen.append(torch.get_num_threads())
        return {"loss": ((self.w * batch["x"]) ** 2).mean()}


class Batches(torch.utils.data.Dataset):
    def __len__(self):
        return 100

    def __getitem__(self, i):
        return {"x": torch.full((3,), float(i))}


def test_free_cores_leaves_the_busy_ones():
    assert free_cores(2, 0.0) == 2 and free_cores(2, 0.6) == 2  # an idle machine's own services
    assert free_cores(2, 0.8) == 1 and free_cores(2, 7.3) == 1  # never below one thread
    assert free_cores(16, 3.2) == 13 and free_cores(4, -1.0) == 4


def test_auto_threads_follow_the_load_but_never_exceed_torch(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads_mod, "usable_cores", lambda: 8)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(8)
        assert training_threads(0, load=lambda: 5.0) == 3
        assert training_threads(0, load=lambda: 0.1) == 8
        torch.set_num_threads(2)  # a caller's limit stays a ceiling
        assert training_threads(0, load=lambda: 0.1) == 2
        assert training_threads(5, load=lambda: 9.0) == 5  # explicit: as is
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert training_threads(0, load=lambda: 9.0) == 2  # OMP_NUM_THREADS obeyed under any load
    finally:
        torch.set_num_threads(before)


def _loop(tmp_path, steps, threads=0):
    cfg = LoopConfig(steps=steps, lr=1e-3, checkpoint_every=2, log_every_s=0, threads=threads)
    model = CountsThreads()
    sink = ListSink()
    return model, sink, TrainLoop(model, Batches(), cfg, tmp_path, torch.device("cpu"), sink=sink)


def test_loop_trains_with_its_threads_and_restores_torchs(tmp_path):
    before = torch.get_num_threads()
    model, sink, loop = _loop(tmp_path, 3, threads=before + 1)
    loop.run()
    assert model.seen == [before + 1] * 3 and torch.get_num_threads() == before
    start = [e for e in sink.events if e["event"] == "start"][0]
    assert start["threads"] == before + 1


def test_resume_keeps_the_checkpoints_thread_count(tmp_path):
    before = torch.get_num_threads()
    _, _, first = _loop(tmp_path, 2, threads=before + 1)
    first.run()
    model, _, again = _loop(tmp_path, 4)  # auto: would pick at most ``before``
    assert again.resume() and again.step == 2
    again.run()
    assert model.seen == [before + 1] * 2 and torch.get_num_threads() == before


def test_own_load_is_what_ended_runs_still_add_to_the_load_average():
    assert own_load(100.0, []) == 0.0
    run = {"start": 0.0, "end": 60.0, "level": 2.0}  # one minute on two threads: 2 * (1 - 1/e)
    assert abs(own_load(60.0, [run]) - 2 * (1 - math.exp(-1))) < 1e-9
    assert abs(own_load(120.0, [run]) - 2 * (1 - math.exp(-1)) * math.exp(-1)) < 1e-9
    assert own_load(30.0, [run]) == 0.0  # not ended yet: a running job is load like any other


def test_a_run_that_just_ended_does_not_take_the_next_ones_threads(tmp_path, monkeypatch):
    """The demo's case: two busy threads for 38 s push an idle machine's load average to ~1.3."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads_mod, "usable_cores", lambda: 2)
    now = time.time()
    record_run(now - 38.0, now, 2 * 38.0)
    (runs,) = recent_runs()
    assert runs["level"] == 2.0
    monkeypatch.setattr(threads_mod, "_load_average", lambda: 0.1 + own_load(time.time(), [runs]))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert training_threads(0, load=threads_mod._load_average) == 1  # the raw load average: one thread
        assert training_threads(0) == 2  # less this host's ended run: both cores
    finally:
        torch.set_num_threads(before)


def test_the_loop_records_its_run_and_a_broken_record_is_ignored(tmp_path):
    from medssl.home import medssl_home

    _, _, loop = _loop(tmp_path, 2)
    loop.run()
    (run,) = recent_runs()
    assert run["end"] > run["start"] and run["level"] >= 0
    (medssl_home() / threads_mod.RECENT_RUNS).write_text("{broken")
    assert recent_runs() == []
    record_run(1.0, 2.0, 1.0)  # rewrites it; old runs (1970) are dropped on reading
    assert recent_runs() == []
