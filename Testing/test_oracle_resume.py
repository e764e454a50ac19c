"""Exact resume (README: "continue an interrupted or cancelled run exactly"; "exact resume: model, optimiser,
RNG, data position"): a run killed with SIGKILL and continued with ``--resume`` ends with BIT-IDENTICAL weights
and losses to the same run left alone, for fine-tuning (with gradient accumulation across the kill) and for
every SSL method. The oracle is the uninterrupted run; the kill is a real ``kill -9`` of ``medssl`` in a
subprocess, right after its first checkpoint, so the resumed part really starts from the file on disk.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from medssl_test_utils import ITK_DATA, REPO, require, stdout_lines
from safetensors.torch import load_file

from medssl import finetune
from medssl.train.checkpoint import load_checkpoint
from medssl.train.pretrain import pretrain

STEPS, EVERY = 10, 3
LOOP = {"steps": STEPS, "checkpoint_every": EVERY, "log_every_s": 0, "num_workers": 0, "warmup_steps": 2}
SMALL = {"backbone": "resenc:test", "patch_size": [16, 16, 16], "spacing": 4.0, "batch_size": 2}
PRETRAIN = {  # tiny but complete recipes; drop path and masking draw random numbers that resume must restore
    "mae3d": {**SMALL, "method": {"block": 4}, "loop": {**LOOP, "num_workers": 1}},  # one loader worker
    "voco": {**SMALL, "method": {"base_size": 16, "grid": [2, 2], "hidden_dim": 32, "out_dim": 32}, "loop": LOOP},
    "volume_fusion": {**SMALL, "method": {"crop_size": [16, 16, 16]}, "loop": LOOP},
    "dino3d": {"backbone": "vit3d:test", "patch_size": [32, 32, 32], "spacing": 4.0, "batch_size": 2, "loop": LOOP,
               "method": {"global_size": 32, "local_size": 16, "n_local": 2, "dino_prototypes": 64,
                          "ibot_prototypes": 64, "head_hidden": 32, "head_bottleneck": 16,
                          "teacher_temp_warmup_steps": 4, "freeze_last_layer_steps": 2, "student_drop_path": 0.1}},
}
FINETUNE = {"patch_size": [16, 16, 16], "spacing": [4.0, 4.0, 4.0], "loop": {**LOOP, "accumulate": 2}}
ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}

pytestmark = pytest.mark.usefixtures("one_thread")


def kill_after_first_checkpoint(argv: list, run_dir: Path) -> int:
    """Run ``medssl ARGV`` and SIGKILL it at its first checkpoint event; returns the checkpointed step."""
    proc = subprocess.Popen([sys.executable, "-m", "medssl", *argv, "--progress", "json"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**os.environ, **ENV})
    for line in stdout_lines(proc):
        if line.startswith("{") and json.loads(line)["event"] == "checkpoint":
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    step = load_checkpoint(run_dir / "checkpoint_last.pt")["step"]
    assert EVERY <= step < STEPS, step  # killed between checkpoints, before the end
    return step


def assert_identical_runs(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a / "checkpoint_last.pt"), load_checkpoint(b / "checkpoint_last.pt")
    assert ca["step"] == cb["step"] == STEPS
    assert ca["model"].keys() == cb["model"].keys()
    different = [k for k in ca["model"] if not torch.equal(ca["model"][k], cb["model"][k])]
    assert not different, f"{len(different)} tensors differ after resume, e.g. {different[:3]}"
    assert [h["loss"] for h in ca["history"]] == [h["loss"] for h in cb["history"]]


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.fixture(scope="module")
def t1() -> str:
    return str(require(ITK_DATA / "KmeansTest_T1UCharRaw.nii.gz"))


@pytest.mark.parametrize("method", sorted(PRETRAIN))
def test_pretraining_resumed_after_kill_9_is_bit_identical(method, t1, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(PRETRAIN[method]))
    full = pretrain(method, [t1], tmp_path / "full", preset="cpu", config_yaml=str(config), device="cpu")
    killed = tmp_path / "killed"
    kill_after_first_checkpoint(["pretrain", "--method", method, "--images", t1, "--out", str(killed), "--preset",
                                 "cpu", "--config", str(config), "--device", "cpu"], killed / "training")
    resumed = pretrain(method, [t1], killed, preset="cpu", config_yaml=str(config), device="cpu", resume=True)
    assert_identical_runs(tmp_path / "full" / "training", killed / "training")
    assert_same_tensors(full / "backbone.safetensors", resumed / "backbone.safetensors")


def test_finetuning_with_accumulation_resumed_after_kill_9_is_bit_identical(t1, tmp_path):
    labels = str(require(ITK_DATA / "KmeansTest_T1KmeansPrelimSegmentation.nii.gz"))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(FINETUNE))
    full = finetune([t1], [labels], tmp_path / "full", backbone="resenc:test", config_yaml=str(config), device="cpu")
    killed = tmp_path / "killed"
    kill_after_first_checkpoint(["finetune", "--images", t1, "--labels", labels, "--out", str(killed), "--backbone",
                                 "resenc:test", "--config", str(config), "--device", "cpu"], killed / "training")
    resumed = finetune([t1], [labels], killed, backbone="resenc:test", config_yaml=str(config), device="cpu",
                       resume=True)
    assert_identical_runs(full / "training", killed / "training")
    assert_same_tensors(full / "weights.safetensors", resumed / "weights.safetensors")
