"""Crash safety: kill ``medssl finetune`` (and ``medssl pretrain``) with SIGKILL at random moments, many times.

    python benchmarks/kill_resume.py [--kills 24] [--seed 0] [--pretrain-method mae3d]

After every kill, every checkpoint in the run folder must load (``weights_only=True``) and no temporary file may
be taken for a checkpoint; the run is then continued with ``--resume`` until it finishes, and the final package
must verify. Prints the number of kills, how many hit before the first checkpoint, and the steps reached.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

DATA = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")


def finetune_args(out: Path, steps: int) -> List[str]:
    cfg = out.parent / "kill_cfg.yaml"
    cfg.write_text(json.dumps({"spacing": [4, 4, 4], "loop": {"checkpoint_every": 2}}))
    return ["finetune", "--images", str(DATA / "KmeansTest_T1UCharRaw.nii.gz"), "--labels",
            str(DATA / "KmeansTest_T1KmeansPrelimSegmentation.nii.gz"), "--out", str(out), "--backbone",
            "resenc:test", "--patch-size", "32", "32", "32", "--steps", str(steps), "--device", "cpu",
            "--progress", "json", "--config", str(cfg)]


def pretrain_args(out: Path, steps: int, method: str) -> List[str]:
    cfg = out.parent / "kill_pretrain_cfg.yaml"
    cfg.write_text(json.dumps({"backbone": "resenc:test", "patch_size": [32, 32, 32], "spacing": 4.0,
                               "loop": {"checkpoint_every": 2, "num_workers": 0}}))
    return ["pretrain", "--method", method, "--images", str(DATA / "KmeansTest_T1UCharRaw.nii.gz"), "--out", str(out),
            "--steps", str(steps), "--device", "cpu", "--progress", "json", "--preset", "cpu", "--config", str(cfg)]


def check_run_dir(run_dir: Path) -> int:
    """Load every checkpoint in ``run_dir`` (weights_only); return how many there are. Hidden files are the
    temporary files of atomic writes (a kill may leave one half-written; the next write removes it)."""
    from medssl.train.checkpoint import load_checkpoint

    found = sorted(p for p in run_dir.rglob("*.pt") if not p.name.startswith("."))
    for path in found:
        load_checkpoint(path, "checkpoint")
    return len(found)


def checkpoint_step(run_dir: Path) -> Optional[int]:
    """The step stored in ``checkpoint_last.pt`` (None before the first checkpoint)."""
    from medssl.train.checkpoint import load_checkpoint

    path = run_dir / "checkpoint_last.pt"
    return int(load_checkpoint(path, "checkpoint")["step"]) if path.exists() else None


def kill_once(args: List[str], resume: bool, delay: float, after_checkpoint: bool = False) -> Dict[str, Any]:
    """Start the command and SIGKILL it ``delay`` seconds after it starts (or, with ``after_checkpoint``, after
    its first checkpoint event), unless it finishes first. Returns its exit code, whether the kill landed, and
    the step the training loop started from (its ``start`` event)."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "medssl", *args, *(["--resume"] if resume else [])],
                                stdout=subprocess.PIPE, stderr=err, text=True)
        timer = threading.Timer(delay, proc.send_signal, (signal.SIGKILL,))
        if not after_checkpoint:
            timer.start()
        initial, last = None, {}
        for last in _events(proc.stdout):
            if last.get("event") == "start" and "initial" in last:
                initial = int(last["initial"])
            armed = timer.is_alive() or timer.finished.is_set()
            if after_checkpoint and last.get("event") == "checkpoint" and not armed:
                timer.start()
        code = proc.wait()
        timer.cancel()
        err.seek(0)
        return {"code": code, "killed": code == -signal.SIGKILL, "initial": initial, "last": last,
                "stderr": err.read()[-500:]}


def _events(stream) -> Iterator[Dict[str, Any]]:
    for line in stream:
        with contextlib.suppress(ValueError):
            yield json.loads(line)


def kill_loop(args: List[str], run_dir: Path, kills: int, rng: random.Random, lo: float, hi: float,
              after_checkpoint: bool = False) -> dict:
    """``kills`` random kills, then resume to the end. Every state in between must load, and every resumed run
    must start from the step of the checkpoint the kill left."""
    stats = {"kills": 0, "finished_early": 0, "checkpoints_loaded": 0, "resumed_from": []}
    started, saved = False, None
    for _ in range(kills):
        run = kill_once(args, started, rng.uniform(lo, hi), after_checkpoint)
        _check_resumed(run, started, saved, stats)
        started = started or (run_dir / "checkpoint_last.pt").exists() or (run_dir / "plan.json").exists()
        stats["checkpoints_loaded"] += check_run_dir(run_dir) if run_dir.exists() else 0
        saved = checkpoint_step(run_dir)
        if run["code"] == 0:
            stats["finished_early"] += 1
            return _finish(stats, run, started, saved, args)
        if not run["killed"]:
            raise RuntimeError(f"the run failed instead of being killed: {run['stderr']}")
        stats["kills"] += 1
    return _finish(stats, None, started, saved, args)


def _check_resumed(run: Dict[str, Any], resumed: bool, saved: Optional[int], stats: dict) -> None:
    if resumed and run["initial"] is not None:
        if run["initial"] < (saved or 0):
            raise RuntimeError(f"--resume started at step {run['initial']}, before the checkpointed step {saved}")
        stats["resumed_from"].append(run["initial"])


def _finish(stats: dict, run: Optional[Dict[str, Any]], started: bool, saved: Optional[int], args: List[str]) -> dict:
    """Resume to the end (unless ``run`` already finished) and record the final event."""
    if run is None:
        final = subprocess.run([sys.executable, "-m", "medssl", *args, *(["--resume"] if started else [])],
                               capture_output=True, text=True)
        if final.returncode != 0:
            raise RuntimeError(f"the run did not finish after the kills: {final.stderr[-500:]}")
        events = list(_events(final.stdout.splitlines()))
        begun = [e for e in events if e.get("event") == "start" and "initial" in e]
        _check_resumed({"initial": begun[0]["initial"] if begun else None}, started, saved, stats)
        stats["final_event"] = events[-1]
    else:
        stats["final_event"] = run["last"]
    return stats


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=24, help="kills in all (split between finetune and pretrain)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrain-method", default="mae3d", help="'' to skip the pretraining part")
    p.add_argument("--steps", type=int, default=800, help="steps of each run: long enough that every kill lands "
                                                           "before it ends (about 7 steps/s on 2 CPU cores)")
    args = p.parse_args()
    rng = random.Random(args.seed)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        parts = {"finetune": (finetune_args(tmp / "ft", args.steps), tmp / "ft" / "training")}
        if args.pretrain_method:
            parts["pretrain"] = (pretrain_args(tmp / "pt", args.steps, args.pretrain_method), tmp / "pt" / "training")
        results = {}
        for name, (argv, run_dir) in parts.items():
            results[name] = kill_loop(argv, run_dir, args.kills // len(parts), rng, 4.0, 14.0)
            print(f"[{name}] {json.dumps(results[name])}")
    total = sum(r["kills"] for r in results.values())
    print(f"{total} SIGKILLs in all; every checkpoint loaded after every kill; every run finished with --resume "
          f"({time.time() - t0:.0f} s)")
    if total < 20:
        print(f"only {total} kills landed before the runs ended (target 20): raise --steps", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
