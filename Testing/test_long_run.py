"""A run on the CPU that is on course to take days says so once, with what to run instead (`train.long_run`)."""
from __future__ import annotations

import json
import signal

import pytest

from medssl.cli.main import main
from medssl.train import long_run


class Recorded:
    def __init__(self) -> None:
        self.lines = []

    def emit(self, event, **fields) -> None:
        self.lines.append((event, fields.get("message")))


def _steps(note: long_run.LongRunNote, seconds_per_step: float, total: int, start: int = 0) -> None:
    now = [1000.0]
    note.clock = lambda: now[0]
    for step in range(start + 1, min(total, start + 20) + 1):
        now[0] += seconds_per_step
        note.on_step_end(step, total)


@pytest.mark.parametrize("seconds,words", [(30, "1 minute"), (93, "2 minutes"), (7200, "2 hours"),
                                           (86400, "24 hours"), (9e6, "104 days")])
def test_duration_words(seconds, words):
    assert long_run.duration_words(seconds) == words


def test_a_months_long_cpu_run_is_named_once_with_the_advice():
    sink = Recorded()
    _steps(long_run.LongRunNote(sink, "cpu", "use --preset cpu"), 41.0, 250000, start=1000)
    assert sink.lines == [("log", "at 41.0 s a step on the CPU the 248998 steps left take about 118 days; "
                                  "use --preset cpu")]


@pytest.mark.parametrize("device,seconds,total", [("cuda", 41.0, 250000), ("cpu", 0.3, 250000), ("cpu", 41.0, 300)])
def test_runs_that_end_within_a_day_or_on_a_gpu_say_nothing(device, seconds, total):
    sink = Recorded()
    _steps(long_run.LongRunNote(sink, device, "advice"), seconds, total)
    assert sink.lines == []


@pytest.fixture
def pretrain_json(capsys, tmp_path, kmeans_t1):
    """``medssl pretrain`` with the mae3d recipe (``--preset auto``) made small by ``--config``: its log lines."""
    previous = signal.getsignal(signal.SIGTERM)
    cfg = tmp_path / "small.yaml"
    cfg.write_text(json.dumps({"backbone": "resenc:test", "patch_size": [32, 32, 32], "spacing": 4.0,
                               "batch_size": 1, "loop": {"num_workers": 0, "checkpoint_every": 100}}))

    def run(out: str):
        code = main(["pretrain", "--method", "mae3d", "--images", str(kmeans_t1), "--out", str(tmp_path / out),
                     "--steps", "6", "--device", "cpu", "--progress", "json", "--config", str(cfg)])
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        assert code == 0, events[-3:]
        return [e["message"] for e in events if e["event"] == "log"]
    yield run
    signal.signal(signal.SIGTERM, previous)


def test_pretrain_with_the_recipe_on_the_cpu_names_the_cpu_preset(pretrain_json, monkeypatch):
    assert not any("steps left take about" in m for m in pretrain_json("within_a_day"))
    monkeypatch.setattr(long_run, "LONG_RUN_S", 0.0)  # every run is "long": the line and its advice appear
    said = [m for m in pretrain_json("long") if "steps left take about" in m]
    assert len(said) == 1 and said[0].endswith("on a machine without a GPU start with --preset cpu (resenc:tiny, "
                                               "48^3 crops, 300 steps), or set a shorter run with --steps N"), said
