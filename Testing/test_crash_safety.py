"""Crash safety: SIGKILL at random moments of a fine-tune and of a pretraining run never leaves a checkpoint
that does not load; ``--resume`` continues from the checkpointed step and finishes the run.

Each kill lands a random 0-1 s after the run's first checkpoint event (so every kill is a real one, whatever
the machine's speed). benchmarks/kill_resume.py runs the same loop with 24 kills at random times from start.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from kill_resume import finetune_args, kill_loop, pretrain_args  # noqa: E402

from medssl.hub.package import verify_package  # noqa: E402
from medssl.hub.ssl_export import verify_export  # noqa: E402

STEPS = 16  # checkpoints every 2 steps: a kill 0-1 s after the first one lands long before the end


def _check_killed_and_resumed(stats: dict, kills: int) -> None:
    assert stats["kills"] == kills and stats["finished_early"] == 0, stats
    assert stats["checkpoints_loaded"] >= kills, stats
    assert len(stats["resumed_from"]) == kills and all(step >= 2 for step in stats["resumed_from"]), stats
    assert stats["final_event"]["event"] == "done" and stats["final_event"]["steps"] == STEPS, stats


def _no_hidden_leftovers(out: Path) -> None:
    assert not [p for p in out.rglob(".*")], list(out.rglob(".*"))  # no temporary file or folder left


@pytest.mark.slow
def test_random_kills_during_finetune_resume_from_the_checkpoint(tmp_path, kmeans_t1):
    out = tmp_path / "ft"
    stats = kill_loop(finetune_args(out, STEPS), out / "training", kills=2, rng=random.Random(7), lo=0.0, hi=1.0,
                      after_checkpoint=True)
    _check_killed_and_resumed(stats, 2)
    verify_package(out)
    _no_hidden_leftovers(out)


@pytest.mark.slow
def test_random_kills_during_pretrain_resume_from_the_checkpoint(tmp_path, kmeans_t1):
    out = tmp_path / "pt"
    stats = kill_loop(pretrain_args(out, STEPS, "mae3d"), out / "training", kills=1, rng=random.Random(3), lo=0.0,
                      hi=1.0, after_checkpoint=True)
    _check_killed_and_resumed(stats, 1)
    verify_export(out / "export")
    _no_hidden_leftovers(out)
