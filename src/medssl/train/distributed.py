"""Data-parallel training under ``torchrun`` (no home-made launcher).

`DistContext.from_env` reads the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK), initialises the
process group (NCCL on GPU, gloo on CPU) and picks the device; without them it is a single process.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Optional

import torch


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def single(cls) -> "DistContext":
        return cls()

    @classmethod
    def from_env(cls, device: Optional[str] = None) -> "DistContext":
        if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
            return cls.single()
        import torch.distributed as dist

        use_cuda = torch.cuda.is_available() and device != "cpu"
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        ctx = cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
        if use_cuda:
            torch.cuda.set_device(ctx.local_rank)
        return ctx

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def device(self, requested: str) -> torch.device:
        if self.active and requested != "cpu" and torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device(requested)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    @contextlib.contextmanager
    def no_sync(self, model: torch.nn.Module, last: bool) -> Iterator[None]:
        """Skip the gradient all-reduce on all but the last micro-batch of an accumulated step."""
        if self.active and not last and hasattr(model, "no_sync"):
            with model.no_sync():
                yield
        else:
            yield

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any (one all-reduce of a scalar; on the GPU for NCCL)."""
        if not self.active:
            return flag
        import torch.distributed as dist

        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor([1 if flag else 0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.destroy_process_group()
