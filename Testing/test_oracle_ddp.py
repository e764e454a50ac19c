"""DistributedDataParallel (README: "DistributedDataParallel under torchrun", "torchrun --nproc_per_node 4 -m
medssl pretrain"): two gloo processes under ``torchrun``, each with half the batch, equal ONE process with the
whole batch, here the same micro-batches accumulated (``accumulate=2``): losses and weights after N steps to
float tolerance. Only gradient averaging across processes can make them equal. The batches handed to the
processes cover the data exactly once (rank r takes micro-batch ``i * world + r``).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from medssl_test_utils import ITK_DATA, REPO, require
from safetensors.torch import load_file

from medssl.train.checkpoint import load_checkpoint
from medssl.train.pretrain import pretrain

WORKER = Path(__file__).with_name("ddp_loop_worker.py")
ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{Path(__file__).parent}"}
STEPS = 4

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def torchrun(*args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ENV}, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]


def assert_close_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    assert worst < atol, f"weights differ by up to {worst:.2e}"


def test_fine_tuning_task_two_processes_equal_one_with_the_whole_batch(tmp_path):
    torchrun(str(WORKER), str(tmp_path / "ddp"), str(STEPS), "1")
    done = subprocess.run([sys.executable, str(WORKER), str(tmp_path / "one"), str(STEPS), "2"], capture_output=True,
                          text=True, env={**os.environ, **ENV}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in (0, 1))
    one = torch.load(tmp_path / "one" / "rank0.pt")
    # shards: rank r got micro-batches r, r + 2, ...; together every index once; the same ones as the single run
    assert r0["seen"] == list(range(0, 2 * STEPS, 2)) and r1["seen"] == list(range(1, 2 * STEPS, 2))
    assert sorted(r0["seen"] + r1["seen"]) == one["seen"] == list(range(2 * STEPS))
    # losses: the single run's accumulated loss is the mean of the two processes' losses
    mean = [(a + b) / 2 for a, b in zip(r0["losses"], r1["losses"])]
    assert one["losses"] == pytest.approx(mean, rel=1e-5) and r0["losses"] != r1["losses"]
    # weights: synchronised gradients keep both processes identical, and equal to the single run
    assert_close_weights(r0["weights"], r1["weights"], 1e-7)
    assert_close_weights(r0["weights"], one["weights"], 1e-5)
    moved = max(float((one["weights"][k] - one["start"][k]).abs().max()) for k in one["weights"])
    assert moved > 1e-3  # the steps did change the weights: the agreement above is not trivial


def test_pretraining_two_processes_equal_one_with_the_whole_batch(tmp_path):
    """volume_fusion through ``torchrun -m medssl pretrain``, against ``pretrain`` in one process with
    ``accumulate: 2``: the exported backbones agree to float tolerance."""
    t1 = str(require(ITK_DATA / "KmeansTest_T1UCharRaw.nii.gz"))
    base = {"backbone": "resenc:test", "patch_size": [16, 16, 16], "spacing": 4.0, "batch_size": 1,
            "method": {"crop_size": [16, 16, 16]},
            "loop": {"steps": STEPS, "checkpoint_every": 100, "log_every_s": 0, "num_workers": 0, "warmup_steps": 0}}
    ddp_cfg, one_cfg = tmp_path / "ddp.yaml", tmp_path / "one.yaml"
    ddp_cfg.write_text(yaml.safe_dump(base))
    one_cfg.write_text(yaml.safe_dump({**base, "loop": {**base["loop"], "accumulate": 2}}))
    torchrun("-m", "medssl", "pretrain", "--method", "volume_fusion", "--images", t1, "--out", str(tmp_path / "ddp"),
             "--preset", "cpu", "--config", str(ddp_cfg), "--device", "cpu", "--progress", "none")
    export = pretrain("volume_fusion", [t1], tmp_path / "one", preset="cpu", config_yaml=str(one_cfg), device="cpu")
    a, b = load_file(str(tmp_path / "ddp" / "export" / "backbone.safetensors")), load_file(str(export / "backbone.safetensors"))
    assert_close_weights(a, b, 1e-5)
    start = load_checkpoint(tmp_path / "one" / "training" / "checkpoint_last.pt")
    assert start["step"] == load_checkpoint(tmp_path / "ddp" / "training" / "checkpoint_last.pt")["step"] == STEPS


def _rank_pid(torchrun_pid: int, rank: int) -> int | None:
    """The pid of ``torchrun``'s worker process with ``RANK=rank`` (read from /proc), None until it runs."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != torchrun_pid:
                continue
            env = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if f"RANK={rank}".encode() in env:
            return int(stat.parent.name)
    return None


def test_a_stop_asked_of_one_process_stops_every_process_at_the_same_step(tmp_path):
    """A signal reaches torchrun's processes at different moments; here it reaches rank 1 only, the worst case.
    Ranks agree on stopping (one all-reduce a step): rank 0 checkpoints and both end with the cancel line, where
    rank 0 went on alone into the next all-reduce ("Connection closed by peer") and died without a checkpoint."""
    import json
    import signal

    from medssl_test_utils import stdout_lines

    t1 = str(require(ITK_DATA / "KmeansTest_T1UCharRaw.nii.gz"))
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump({"backbone": "resenc:test", "patch_size": [16, 16, 16], "spacing": 4.0,
                                   "batch_size": 1, "method": {"crop_size": [16, 16, 16]},
                                   "loop": {"steps": 500, "checkpoint_every": 1000, "log_every_s": 0,
                                            "num_workers": 0}}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m", "medssl",
           "pretrain", "--method", "volume_fusion", "--images", t1, "--out", str(tmp_path / "ddp"), "--preset", "cpu",
           "--config", str(cfg), "--device", "cpu", "--progress", "json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **ENV})
    for line in stdout_lines(proc, timeout=300):
        if line.startswith("{") and json.loads(line).get("event") == "step" and json.loads(line)["step"] >= 3:
            os.kill(_rank_pid(proc.pid, 1), signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=120)
    assert "Connection closed by peer" not in err, err[-3000:]
    saved = load_checkpoint(tmp_path / "ddp" / "training" / "checkpoint_last.pt")["step"]
    assert 3 <= saved < 500
    assert err.count(f"error: cancelled at step {saved} of 500;") == err.count("cancelled at step") == 2, err[-3000:]
