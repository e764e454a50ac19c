"""Crash safety: SIGKILL at random moments never leaves a checkpoint that does not load; --resume finishes.

(benchmarks/kill_resume.py runs the same loop with 24 kills across fine-tuning and pretraining.)
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from kill_resume import finetune_args, kill_loop  # noqa: E402

from medssl.hub.package import verify_package  # noqa: E402


@pytest.mark.slow
def test_random_kills_during_finetune(tmp_path, kmeans_t1):
    out = tmp_path / "ft"
    stats = kill_loop(finetune_args(out, 24), out / "training", kills=4, rng=random.Random(7), lo=5.0, hi=12.0)
    assert stats["kills"] + stats["finished_early"] >= 1
    assert stats["final_event"]["event"] == "done" and stats["final_event"]["steps"] == 24
    verify_package(out)
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no temporary files left behind
