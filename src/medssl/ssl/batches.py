"""The batch source of a pretraining run: item ``i`` is the whole batch of step ``i``.

`StepBatches` draws ``numpy.random.default_rng([seed, i])`` and asks the method's view maker for a batch, so
a resumed run, several loader workers and several DDP ranks (rank ``r`` takes items ``i * world + r``) all
see batches that depend only on ``(seed, index)`` (the `medssl.train.loop.TrainLoop` contract). A view maker
is a small picklable object (it runs in loader workers): ``maker.batch(volumes, rng, batch_size) -> dict``.
"""
from __future__ import annotations

from typing import Dict, Protocol

import numpy as np
import torch

from ..data.volumes import VolumeSet


class ViewMaker(Protocol):
    def batch(self, volumes: VolumeSet, rng: np.random.Generator, batch_size: int) -> Dict[str, torch.Tensor]: ...


class StepBatches(torch.utils.data.Dataset):
    """Map-style dataset of whole batches; ``len`` is effectively unbounded (the loop picks the indices)."""

    def __init__(self, volumes: VolumeSet, maker: ViewMaker, batch_size: int, seed: int, length: int = 10**9) -> None:
        self.volumes, self.maker, self.batch_size, self.seed, self.length = volumes, maker, batch_size, seed, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(index)])
        return self.maker.batch(self.volumes, rng, self.batch_size)


def pick_volume(volumes: VolumeSet, rng: np.random.Generator) -> int:
    return int(rng.integers(len(volumes)))


def pick_two(volumes: VolumeSet, rng: np.random.Generator) -> tuple:
    """Two different volumes when there are several (Volume Fusion, VoCo inter-volume pairs)."""
    if len(volumes) < 2:
        return 0, 0
    a, b = rng.choice(len(volumes), size=2, replace=False)
    return int(a), int(b)
