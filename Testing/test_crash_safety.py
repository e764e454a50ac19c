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


def test_sigterm_to_the_process_group_stops_a_run_with_workers_at_a_step_boundary(tmp_path, kmeans_t1):
    """How MedSSL's Slicer modules cancel (SIGTERM to the process group; Ctrl+C likewise signals the terminal's
    group): with DataLoader workers the signal used to kill them too, and torch raised "DataLoader worker ... is
    killed by signal: Terminated" mid-step, a traceback and exit 1 instead of a checkpoint and exit 130. The
    workers now leave the stop to the main process; the run then resumes to its end."""
    import json
    import os
    import signal
    import subprocess

    from medssl_test_utils import run_cli, stdout_lines

    out = tmp_path / "run"
    args = pretrain_args(out, 40, "mae3d")
    cfg = Path(args[args.index("--config") + 1])
    cfg.write_text(cfg.read_text().replace('"num_workers": 0', '"num_workers": 1'))
    proc = subprocess.Popen([sys.executable, "-m", "medssl", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # its own group, as ProcessRunner starts it
    for line in stdout_lines(proc):
        if '"step"' in line and json.loads(line)["step"] >= 1:
            os.killpg(proc.pid, signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "cancelled at step" in err and "--resume" in err, err
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    done = [json.loads(x) for x in resumed.stdout.splitlines() if x.startswith("{")][-1]
    assert done["event"] == "done" and done["steps"] == 40, done
