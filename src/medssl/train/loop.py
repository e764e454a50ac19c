"""The one training loop, shared by fine-tuning and every SSL pretraining method.

A task supplies a module whose ``forward(batch)`` returns ``{"loss": scalar, <terms>...}`` (pure forward: it
never calls ``backward``; fine-tuning wraps the network in `SegmentationTask`, each SSL method is such a
module) and a map-style batch source whose item ``i`` is the batch of step ``i``. The loop owns the
rest: device moves, AMP (bf16/fp16 on GPU, with a GradScaler for fp16; bf16 on CPUs that compute it natively), gradient accumulation and clipping,
the NaN guard, LR schedule, hooks (EMA teachers, temperature schedules), validation, atomic checkpoints and
exact ``--resume`` (model, optimizer, scheduler, scaler, RNG and data position), and progress events.
Under ``torchrun`` the model is wrapped in DistributedDataParallel and only rank 0 writes.
"""
from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence

import torch

from ..errors import Cancelled, CheckpointError, InputError, MedSSLError
from ..events import EtaClock, EventSink, NullSink
from ..io.settings import require
from ..inference.devices import worker_count
from .bf16_convs import float32_where_bf16_is_unsound
from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import DistContext
from .optim import build_optimizer, build_scheduler
from .threads import cpu_threads

AMP_MODES = ("auto", "bf16", "fp16", "off")
OPTIMIZERS = ("adamw", "adam", "sgd")  # `optim.build_optimizer`
SCHEDULES = ("poly", "cosine", "constant")  # `optim.build_scheduler`


@dataclass
class LoopConfig:
    """Optimisation and bookkeeping settings of one run (not part of the plan)."""

    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 3e-5
    weight_decay_end: Optional[float] = None  # set: cosine weight-decay schedule to this value (DINOv2)
    optimizer: str = "adamw"  # adamw | adam | sgd
    amsgrad: bool = False  # Adam/AdamW with AMSGrad (VoCo's pretraining)
    momentum: float = 0.99
    schedule: str = "poly"  # poly | cosine | constant
    poly_power: float = 0.9  # nnU-Net 0.9; MIS-FM 0.8
    warmup_steps: int = 0
    warmup_fraction: Optional[float] = None  # set (by a recipe): warm-up is this fraction of ``steps``
    grad_clip: float = 12.0
    accumulate: int = 1
    amp: str = "auto"  # auto | bf16 | fp16 | off
    checkpoint_every: int = 100
    validate_every: int = 0  # 0: only at the end
    log_every_s: float = 0.5
    num_workers: int = 0
    threads: int = 0  # CPU threads; 0: the cores the load leaves free (`threads.training_threads`)
    seed: int = 0
    max_bad_steps: int = 20

    def __post_init__(self) -> None:
        """Checked when a run is configured, before its folder is written (a wrong value had stopped the run at its
        optimiser with a traceback and left a run folder behind)."""
        if self.amp not in AMP_MODES:
            raise InputError(f"amp {self.amp!r} is not one of {', '.join(AMP_MODES)} (off: float32)")
        if self.optimizer not in OPTIMIZERS or self.schedule not in SCHEDULES:
            bad, known = (("optimizer", OPTIMIZERS) if self.optimizer not in OPTIMIZERS else ("schedule", SCHEDULES))
            raise InputError(f"{bad} {getattr(self, bad)!r} is not one of {', '.join(known)}")
        for name, lowest in (("steps", 1), ("accumulate", 1), ("checkpoint_every", 1), ("warmup_steps", 0),
                             ("validate_every", 0), ("num_workers", 0), ("threads", 0), ("max_bad_steps", 0),
                             ("seed", 0)):
            require(getattr(self, name) >= lowest, name, getattr(self, name), f"a whole number of {lowest} or more")
        for name in ("lr", "weight_decay", "log_every_s", "grad_clip"):  # grad_clip 0: no clipping
            require(getattr(self, name) >= 0, name, getattr(self, name), "0 or more")
        require(0 <= self.momentum < 1, "momentum", self.momentum, "a value in [0, 1)")
        require(self.warmup_fraction is None or 0 <= self.warmup_fraction <= 1, "warmup_fraction",
                self.warmup_fraction, "a fraction in [0, 1]")


def leave_stopping_to_the_main_process(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the worker ignores SIGTERM and SIGINT. A cancel (MedSSL's Slicer modules send
    SIGTERM to the whole process group; Ctrl+C sends SIGINT to the terminal's) otherwise killed the workers too,
    and torch's SIGCHLD check then raised "DataLoader worker ... is killed by signal: Terminated" in the main
    process in the middle of a step: a traceback and no checkpoint instead of the stop at the next step boundary.
    The main process stops the workers itself when its loader goes; a SIGKILL still ends them all."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def clip_gradients(model: torch.nn.Module, max_norm: float) -> float:
    """Clip to ``max_norm``: the whole model at once, or each part of ``model.grad_clip_groups()`` on its own
    (3DINO clips backbone, DINO head and iBOT head separately, ``train3d.py``). Returns the largest norm."""
    parts = model.grad_clip_groups() if hasattr(model, "grad_clip_groups") else [model.parameters()]
    return max(float(torch.nn.utils.clip_grad_norm_(list(p), max_norm)) for p in parts)


class Hook(Protocol):
    def on_step_end(self, step: int, total: int) -> None: ...


@dataclass
class LoopResult:
    step: int
    last_losses: Dict[str, float]
    best_metric: Optional[float]
    best_step: Optional[int]
    history: List[Dict[str, float]] = field(default_factory=list)
    data_wait_fraction: float = 0.0


class TrainLoop:
    """Runs ``cfg.steps`` optimisation steps of ``model``: ``model(batch) -> {"loss": ..., ...}``."""

    def __init__(self, model: torch.nn.Module, batches: torch.utils.data.Dataset, cfg: LoopConfig, run_dir: Path, device: torch.device,
                 sink: EventSink | None = None, hooks: Sequence[Hook] = (), task: str = "train",
                 validate: Optional[Callable[[], Dict[str, Any]]] = None,
                 param_groups: Optional[List[Dict[str, Any]]] = None, on_best: Optional[Callable[[int], None]] = None,
                 dist: Optional[DistContext] = None) -> None:
        self.model, self.batches, self.cfg = model, batches, cfg
        self.run_dir, self.device, self.sink, self.hooks = Path(run_dir), device, sink or NullSink(), list(hooks)
        self.task, self.validate, self.on_best = task, validate, on_best
        self.dist = dist or DistContext.single()
        self.opt = build_optimizer(param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}], cfg)
        self.sched = build_scheduler(self.opt, cfg)
        if cfg.weight_decay_end is not None:  # each group keeps its ratio to the base decay (0 for norms/biases)
            for g in self.opt.param_groups:
                g["wd_ratio"] = g["weight_decay"] / cfg.weight_decay if cfg.weight_decay else 0.0
        self.amp_dtype = _amp_dtype(cfg.amp, device)
        self.guard_convs = self.amp_dtype == torch.bfloat16 and device.type == "cpu"  # `bf16_convs`
        from ..inference.runtimes import cpu_has_bf16

        if self.guard_convs and not cpu_has_bf16():
            self.sink.emit("log", message="warning: amp bf16 on a CPU without AMX or AVX-512-BF16: bf16 is "
                                          "emulated there, slower than float32; use amp: auto (float32 here)")
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.step, self.best_metric, self.best_step, self.history = 0, None, None, []
        self.threads = 0  # CPU threads of this run (0: not chosen yet; a resumed run keeps its checkpoint's)
        self.forward_model = self.dist.wrap(model)

    # ------------------------------------------------------------------ state
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint_last.pt"

    def state_dict(self) -> Dict[str, Any]:
        return {"step": self.step, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": _rng_state(), "best_metric": self.best_metric, "best_step": self.best_step,
                "history": self.history[-2000:], "config": asdict(self.cfg), "threads": self.threads}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.step, self.best_metric, self.best_step = int(state["step"]), state["best_metric"], state["best_step"]
        self.history = list(state.get("history", []))
        self.threads = int(state.get("threads", 0))

    def resume(self) -> bool:
        """Load ``checkpoint_last.pt`` if present; returns whether a run was resumed."""
        if not self.checkpoint_path.exists():
            return False
        self.load_state_dict(load_checkpoint(self.checkpoint_path, "training checkpoint"))
        if self.step > self.cfg.steps:  # "resumed at step 4 of 1" had followed
            raise InputError(f"--resume: the run is at step {self.step}, past the {self.cfg.steps} step(s) asked for; "
                             f"give --steps {self.step} or more (or leave --steps out)")
        return True

    def save(self) -> None:
        if self.dist.is_main:
            save_checkpoint(self.state_dict(), self.checkpoint_path)
            self.sink.emit("checkpoint", step=self.step, path=str(self.checkpoint_path), kind="last")

    # ------------------------------------------------------------------ running
    @contextlib.contextmanager
    def _graceful_stop(self):
        """While running, a first SIGTERM/SIGINT asks for a stop at the next step boundary (after a checkpoint);
        a second one interrupts at once. Only the main thread can install handlers; elsewhere nothing changes."""
        self._stop_requested = False
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        def ask(signum, frame):  # noqa: ARG001
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
        previous = {s: signal.signal(s, ask) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _stop_if_requested(self) -> None:
        """Under ``torchrun`` every process stops at the same step when any was asked to (`DistContext.any`): a
        signal reaches the processes at slightly different moments, and one that stopped a step earlier left the
        others waiting in the next gradient all-reduce for a peer that had gone (gloo: "Connection closed by peer",
        a traceback, and rank 0 died without a checkpoint when it was the one left)."""
        if self.dist.any(getattr(self, "_stop_requested", False)):
            self.save()
            raise Cancelled(f"cancelled at step {self.step} of {self.cfg.steps}; the checkpoint is saved: "
                            f"continue with --resume")

    def run(self) -> LoopResult:
        with self._graceful_stop(), cpu_threads(self.device, self.cfg.threads or self.threads) as threads:
            self.threads = threads
            return self._run(threads)

    def _run(self, threads: int) -> LoopResult:
        loader = self._loader(self.step * self.cfg.accumulate, self.cfg.steps * self.cfg.accumulate)
        try:
            return self._steps(threads, loader)
        finally:  # also on an error: workers ignore SIGTERM, so interpreter exit (terminate, then join) would hang
            stop_workers = getattr(loader, "_shutdown_workers", None)  # torch's own teardown of its iterator
            if stop_workers is not None:
                stop_workers()

    def _steps(self, threads: int, loader) -> LoopResult:
        cfg, total = self.cfg, self.cfg.steps
        self.model.train()
        self.sink.emit("start", task=self.task, total=total, initial=self.step, device=str(self.device),
                       threads=threads)
        clock, wait, busy, last_emit = EtaClock(total, self.step), 0.0, 0.0, 0.0
        bad = 0
        losses: Dict[str, float] = {}
        while self.step < total:
            t0 = time.perf_counter()
            losses, waited = self._one_step(loader)
            wait, busy = wait + waited, busy + time.perf_counter() - t0
            bad = bad + 1 if losses.get("skipped") else 0
            if bad > cfg.max_bad_steps:
                raise MedSSLError(f"the loss was not finite for {bad} steps in a row; lower the learning rate "
                                  f"(--config lr: ...) or check the inputs for extreme values")
            self.step += 1
            for hook in self.hooks:
                hook.on_step_end(self.step, total)
            self.history.append({"step": self.step, **losses})
            if time.monotonic() - last_emit >= cfg.log_every_s or self.step == total:
                last_emit = time.monotonic()
                self.sink.emit("step", step=self.step, total=total, lr=self.opt.param_groups[0]["lr"],
                               eta_s=clock.eta(self.step), data_wait=wait / max(busy, 1e-9), **losses)
            self._maybe_validate(total)
            if self.step % cfg.checkpoint_every == 0 or self.step == total:
                self.save()
            self._stop_if_requested()
        return LoopResult(self.step, losses, self.best_metric, self.best_step, self.history, wait / max(busy, 1e-9))

    def _loader(self, start: int, stop: int):
        """Batch indices ``start..stop`` (micro-steps); under DDP rank r takes index ``i * world + r``."""
        world, rank = self.dist.world_size, self.dist.rank
        sampler = range(start * world + rank, stop * world, world)
        workers = worker_count(self.cfg.num_workers)  # never more processes than cores
        loader = torch.utils.data.DataLoader(self.batches, batch_size=None, sampler=sampler,
                                             num_workers=workers,
                                             generator=torch.Generator().manual_seed(self.cfg.seed),  # keeps the global RNG untouched
                                             persistent_workers=False, prefetch_factor=2 if workers else None,
                                             worker_init_fn=leave_stopping_to_the_main_process if workers else None)
        return iter(loader)

    def _one_step(self, loader) -> tuple:
        """Accumulate ``cfg.accumulate`` micro-batches, then clip and step. Returns (losses, seconds waited)."""
        cfg, waited, totals = self.cfg, 0.0, {}
        finite = True
        for micro in range(cfg.accumulate):
            t0 = time.perf_counter()
            batch = _to_device(next(loader), self.device)
            waited += time.perf_counter() - t0
            with self.dist.no_sync(self.forward_model, last=micro == cfg.accumulate - 1):
                with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.amp_dtype is not None), \
                        float32_where_bf16_is_unsound(self.guard_convs):
                    out = self.forward_model(batch)
                loss = out["loss"]
                if not torch.isfinite(loss):
                    finite = False
                    continue
                self.scaler.scale(loss / cfg.accumulate).backward()
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) / cfg.accumulate
        if not finite:
            self.opt.zero_grad(set_to_none=True)
            return {"skipped": 1.0}, waited
        self.scaler.unscale_(self.opt)
        self._schedule_weight_decay()
        if cfg.grad_clip > 0:
            totals["grad_norm"] = clip_gradients(self.model, cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        return totals, waited

    def _schedule_weight_decay(self) -> None:
        """Cosine weight decay from ``weight_decay`` to ``weight_decay_end`` over the run (DINOv2's ``wd_schedule``),
        a pure function of the step (so ``--resume`` is exact)."""
        end = self.cfg.weight_decay_end
        if end is None:
            return
        t = min(self.step / max(1, self.cfg.steps - 1), 1.0)
        wd = end + 0.5 * (self.cfg.weight_decay - end) * (1.0 + math.cos(math.pi * t))
        for g in self.opt.param_groups:
            g["weight_decay"] = wd * g["wd_ratio"]

    def _maybe_validate(self, total: int) -> None:
        every = self.cfg.validate_every
        if self.validate is None or not (self.step == total or (every and self.step % every == 0)):
            return
        self.model.eval()
        metrics = self.validate()
        self.model.train()
        metric = metrics.get("metric")
        self.sink.emit("validation", step=self.step, **{k: v for k, v in metrics.items() if k != "metric"})
        if metric is not None and math.isfinite(metric) and (self.best_metric is None or metric > self.best_metric):
            self.best_metric, self.best_step = float(metric), self.step
            if self.on_best is not None and self.dist.is_main:
                self.on_best(self.step)


def _amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """``auto``: bf16 on a GPU that has it (else fp16 with a scaler), bf16 on a CPU that computes it natively (AMX
    or AVX-512-BF16: `benchmarks/train_step_bf16.py`, the same rule as inference's; on AVX-512-BF16 without AMX
    the convolutions whose bf16 weight gradients oneDNN computes from unwritten memory run in float32,
    `bf16_convs`; float32 training there from 2026-12-02 to 2026-12-04), else float32."""
    from ..inference.runtimes import cpu_has_bf16

    if amp == "auto" and device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def uses_amp(amp: str, device: torch.device) -> bool:
    """Whether the training loop will run under autocast (activations then counted at 0.6)."""
    return _amp_dtype(amp, device) is not None


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def keeps_callers_rng(run: Callable) -> Callable:
    """Decorator for the API's training entry points (`finetune`, `pretrain`): they seed torch's global generator
    for a reproducible run, and the caller's random streams (torch, CUDA, Python's) are put back afterwards (a
    notebook's ``torch.rand`` had come out the same after every fine-tune)."""
    import functools

    @functools.wraps(run)
    def kept(*args, **kwargs):
        state = _rng_state()
        try:
            return run(*args, **kwargs)
        finally:
            _set_rng_state(state)

    return kept


def _rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    try:
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"the training checkpoint has an unreadable random state ({exc}); start a new run") from None
