"""The training loop: exact resume, accumulation, NaN guard, checkpoints that always load."""
from __future__ import annotations

import math

import pytest
import torch

from medssl.errors import MedSSLError
from medssl.events import ListSink
from medssl.train.checkpoint import load_checkpoint
from medssl.train.loop import LoopConfig, TrainLoop


class Regression(torch.nn.Module):
    """``batch -> {"loss"}``: a small MLP fitting a fixed random function (with dropout: uses the torch RNG)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Dropout(0.1), torch.nn.ReLU(), torch.nn.Linear(32, 1))

    def forward(self, batch):
        err = self.net(batch["x"]) - batch["y"]
        return {"loss": (err ** 2).mean(), "mae": err.abs().mean().detach()}


class Batches(torch.utils.data.Dataset):
    def __len__(self):
        return 10**6

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(int(i))
        x = torch.randn(16, 8, generator=g)
        return {"x": x, "y": x @ torch.linspace(-1, 1, 8)[:, None]}


class KillAt:
    """Hook that interrupts the run at a given step (as a kill between two checkpoints would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, step: int, total: int) -> None:
        if step == self.step:
            raise KeyboardInterrupt


def run(tmp_path, steps, resume=False, kill_at=None, **cfg):
    model = Regression()
    config = LoopConfig(steps=steps, lr=1e-2, checkpoint_every=cfg.pop("checkpoint_every", 5), log_every_s=0, **cfg)
    hooks = [KillAt(kill_at)] if kill_at else []
    loop = TrainLoop(model, Batches(), config, tmp_path, torch.device("cpu"), sink=ListSink(), hooks=hooks)
    if resume:
        assert loop.resume()
    return loop, loop.run()


def test_loss_falls(tmp_path):
    _, result = run(tmp_path, 60)
    first = sum(h["loss"] for h in result.history[:5]) / 5
    last = sum(h["loss"] for h in result.history[-5:]) / 5
    assert last < 0.5 * first


def test_resume_continues_with_identical_losses(tmp_path):
    full_loop, full = run(tmp_path / "a", 20, accumulate=2)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", 20, kill_at=13, accumulate=2)  # killed three steps after the step-10 checkpoint
    assert load_checkpoint(tmp_path / "b" / "checkpoint_last.pt")["step"] == 10
    loop, resumed = run(tmp_path / "b", 20, resume=True, accumulate=2)
    assert [h["loss"] for h in resumed.history[10:]] == [h["loss"] for h in full.history[10:]]  # bit for bit
    a, b = full_loop.model.state_dict(), loop.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # dropout RNG and data position (2 micro-batches a step) restored
    assert resumed.step == 20 and load_checkpoint(tmp_path / "b" / "checkpoint_last.pt")["step"] == 20


class Linear(torch.nn.Module):
    """``batch -> {"loss"}`` with no randomness of its own (no dropout): its gradients can be recomputed by hand."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.lin = torch.nn.Linear(8, 1)

    def forward(self, batch):
        return {"loss": ((self.lin(batch["x"]) - batch["y"]) ** 2).mean()}


def test_accumulation_averages_micro_batches(tmp_path):
    """Oracle: one SGD step (no momentum, constant LR, no clipping) on 4 accumulated micro-batches moves the
    weights by ``-lr x`` the MEAN of the 4 micro-batch gradients, computed here with autograd on a fresh copy;
    the reported loss is the mean of the 4 micro-batch losses. Without the ``/ accumulate`` the step is 4x."""
    model, lr = Linear(), 0.05
    start = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = LoopConfig(steps=1, lr=lr, optimizer="sgd", momentum=0.0, schedule="constant", weight_decay=0.0,
                     grad_clip=0.0, accumulate=4, checkpoint_every=100, log_every_s=0, amp="off")  # float32 oracle
    loop = TrainLoop(model, Batches(), cfg, tmp_path, torch.device("cpu"), sink=ListSink())
    result = loop.run()
    oracle = Linear()
    oracle.load_state_dict(start)
    micro = [oracle(Batches()[i])["loss"] for i in range(4)]  # micro-batches 0..3 make step 1
    grads = torch.autograd.grad(sum(micro) / 4, list(oracle.parameters()))
    for (name, p), g in zip(oracle.named_parameters(), grads):
        torch.testing.assert_close(model.state_dict()[name], p.detach() - lr * g, rtol=0, atol=1e-6)
    assert result.history[0]["loss"] == pytest.approx(float(sum(micro).detach()) / 4, rel=1e-6)
    assert [e["total"] for e in loop.sink.events if e["event"] == "start"] == [1]


def test_gradient_clipping_scales_the_step_to_the_norm_limit(tmp_path):
    """Oracle: with ``grad_clip`` below the gradient norm, one SGD step is ``-lr * g * clip / ||g||`` (the global
    L2 norm over all parameters, as torch.nn.utils.clip_grad_norm_ documents), computed here by hand."""
    model, lr, clip = Linear(), 0.05, 0.01
    start = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = LoopConfig(steps=1, lr=lr, optimizer="sgd", momentum=0.0, schedule="constant", weight_decay=0.0,
                     grad_clip=clip, checkpoint_every=100, log_every_s=0, amp="off")  # float32 oracle
    result = TrainLoop(model, Batches(), cfg, tmp_path, torch.device("cpu")).run()
    oracle = Linear()
    oracle.load_state_dict(start)
    grads = torch.autograd.grad(oracle(Batches()[0])["loss"], list(oracle.parameters()))
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in grads))
    assert norm > 10 * clip and result.history[0]["grad_norm"] == pytest.approx(norm, rel=1e-5)
    for (name, p), g in zip(oracle.named_parameters(), grads):
        torch.testing.assert_close(model.state_dict()[name], p.detach() - lr * g * clip / norm, rtol=0, atol=1e-7)


class Exploding(Regression):
    def forward(self, batch):
        out = super().forward(batch)
        return {"loss": out["loss"] * float("nan")}


def test_nan_guard_stops_with_advice(tmp_path):
    loop = TrainLoop(Exploding(), Batches(), LoopConfig(steps=50, max_bad_steps=3, log_every_s=0), tmp_path,
                     torch.device("cpu"))
    with pytest.raises(MedSSLError, match="not finite for 4 steps.*learning rate"):
        loop.run()


def test_events_have_eta_and_checkpoints(tmp_path):
    loop, _ = run(tmp_path, 10)
    steps = loop.sink.of("step")
    assert steps[-1]["step"] == 10 and steps[-1]["eta_s"] == 0
    assert [e["step"] for e in loop.sink.of("checkpoint")] == [5, 10]


def test_sigterm_stops_at_a_step_boundary_with_a_checkpoint(tmp_path):
    """A first SIGTERM (3D Slicer's Cancel) ends the run after the current step and saves it for --resume."""
    import os
    import signal

    from medssl.errors import Cancelled

    class TermAt:
        def on_step_end(self, step, total):
            if step == 7:
                os.kill(os.getpid(), signal.SIGTERM)

    def previous(signum, frame):  # the handler in place before the run (3D Slicer's, the CLI's)
        raise AssertionError("the run's own handler should have taken the signal")

    loop = TrainLoop(Regression(), Batches(), LoopConfig(steps=50, checkpoint_every=100, log_every_s=0), tmp_path,
                     torch.device("cpu"), hooks=[TermAt()])
    saved = {s: signal.signal(s, previous) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with pytest.raises(Cancelled, match="cancelled at step 7 of 50.*--resume"):
            loop.run()
        assert load_checkpoint(tmp_path / "checkpoint_last.pt")["step"] == 7
        assert signal.getsignal(signal.SIGTERM) is previous and signal.getsignal(signal.SIGINT) is previous
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


@pytest.mark.parametrize("flags, warned", [({"avx2", "fma"}, True), ({"avx512_bf16"}, False)])
def test_bf16_asked_for_where_the_cpu_emulates_it_says_so(tmp_path, monkeypatch, flags, warned):
    from medssl.inference import runtimes

    monkeypatch.setattr(runtimes, "cpu_flags", lambda path="/proc/cpuinfo": frozenset(flags))
    sink = ListSink()
    loop = TrainLoop(Regression(), Batches(), LoopConfig(steps=1, amp="bf16", log_every_s=0), tmp_path,
                     torch.device("cpu"), sink=sink)
    assert loop.amp_dtype == torch.bfloat16 and loop.guard_convs  # asked for: given, with the float32 convolutions
    logs = [e["message"] for e in sink.events if e["event"] == "log"]
    assert any("emulated" in m and "amp: auto" in m for m in logs) is warned


WORKER_FAILS = r"""
import sys, torch
from medssl.train.loop import LoopConfig, TrainLoop

class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(8, 1)
    def forward(self, batch):
        return {"loss": ((self.w(batch["x"]) - batch["y"]) ** 2).mean()}

class Broken(torch.utils.data.Dataset):
    def __len__(self):
        return 10**6
    def __getitem__(self, i):
        if i >= 3:
            raise ValueError("a setting the sampler cannot use")
        return {"x": torch.zeros(4, 8), "y": torch.zeros(4, 1)}

loop = TrainLoop(Model(), Broken(), LoopConfig(steps=20, num_workers=1, log_every_s=0, checkpoint_every=100),
                 sys.argv[1], torch.device("cpu"))
try:
    loop.run()
except Exception as exc:
    print("raised", type(exc).__name__)
"""


def test_resume_past_the_asked_steps_is_refused(tmp_path):
    run(tmp_path, 10)
    from medssl.errors import InputError

    with pytest.raises(InputError, match=r"the run is at step 10, past the 4 step\(s\) asked for; give --steps 10"):
        run(tmp_path, 4, resume=True)


def test_a_worker_error_does_not_hang_the_exit(tmp_path):
    """Found by an audit: an exception in a DataLoader worker (a pretraining setting its sampler cannot use) left
    the process hanging at exit: the workers ignore SIGTERM (`leave_stopping_to_the_main_process`), and
    multiprocessing's exit handler terminates, then joins them."""
    import subprocess
    import sys
    from unittest import mock

    from medssl.inference import devices

    if devices.usable_cores() < 2:
        pytest.skip("one core: the loop runs without workers")
    script = tmp_path / "worker_fails.py"
    script.write_text(WORKER_FAILS)
    with mock.patch.dict("os.environ", {"OMP_NUM_THREADS": "1"}):
        done = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 0 and "raised ValueError" in done.stdout, done.stderr[-2000:]  # the worker's own error
