"""VoCo: volume contrast by position prediction (Wu et al., CVPR 2024; TPAMI 2026 "Large-scale 3D medical
image pre-training with geometric context priors").

Re-implemented from the papers and the released code (Luffy03/Large-Scale-Medical, Apache-2.0; see
`..losses.voco` for the losses). One step:

1. views (`VoCoViews`): per volume a region of ``3 x 3`` base crops in-plane (one base thick across slices;
   192 x 192 x 64 voxels for 64^3 bases) is cut into the base crops; ``n_crops`` random crops of base size are
   placed uniformly inside the region, labelled with their in-plane overlap ratio with every base; bases and
   random crops alike get flips (0.2 per axis), in-plane quarter turns (0.2) and an intensity shift (0.5), as
   upstream's ``get_crop_transform(aug=True)`` (``utils/voco_trans.py``) gives both;
2. bases and crops run through the backbone (SwinUNETR, ResEnc or any encoder of the registry); the feature
   maps are average-pooled and concatenated; the student projector sees them after embedding dropout (0.2:
   upstream's ``nn.Dropout1d`` on the ``(N, C)`` embeddings, which PyTorch reads as unbatched, so it zeroes
   whole sample embeddings, `sample_dropout`), the teacher projector (an EMA of the student's, momentum 0.9)
   sees them unchanged, without gradient;
3. losses (1:1:1): position prediction (student crops vs. teacher bases of their volume, against the overlap
   ratios), inter-volume consistency (student vs. teacher similarities to the next volume's bases) and base
   orthogonality.
Only the encoder is exported. Optimiser (``voco_train.py:188``): ``AdamW(model.parameters(), lr, amsgrad=True)``,
torch's default weight decay 0.01 on every parameter, no gradient clipping (``configs/pretrain/voco.yaml``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ...data.volumes import VolumeSet
from ...io.settings import require, require_fields
from ...models.registry import BACKBONES
from .. import intensity
from ..base import METHODS, SSLMethod, check_input_size, prefixed
from ..ema import freeze, update_momentum
from ..heads import ProjectionHead, pooled_features
from ..losses.voco import orthogonality_loss, position_loss, similarities
from ..views import box_size, crop_matrix, random_centre, sample_view, signed_permutation

IN_PLANE = {0: ((1, 2),), 1: ((0, 2),), 2: ((0, 1),)}  # rot90 axis pair per slice axis (MONAI spatial_axes (0, 1))


@dataclass
class VoCoConfig:
    """VoCo recipe (``voco_train.py``): 64^3 bases, 3 x 3 grid, 2 random crops, EMA 0.9, 1024-d projector."""

    base_size: int = 64
    grid: Tuple[int, int] = (3, 3)
    slice_axis: int = 2
    n_crops: int = 2
    p_flip: float = 0.2
    p_rot90: float = 0.2
    p_shift: float = 0.5
    shift: float = 0.1
    hidden_dim: int = 1024
    out_dim: int = 1024
    dropout: float = 0.2
    momentum: float = 0.9
    pool_features: Optional[List[int]] = None  # feature maps pooled for the projector (None: all)
    intra_weight: float = 1.0
    inter_weight: float = 1.0
    reg_weight: float = 1.0

    def __post_init__(self) -> None:
        require_fields(self, positive=("base_size", "grid", "n_crops", "hidden_dim", "out_dim"),
                       fractions=("dropout",))
        require(self.slice_axis in (0, 1, 2), "slice_axis", self.slice_axis, "0, 1 or 2")
        require(0 <= self.momentum <= 1, "momentum", self.momentum, "a value in [0, 1]")


def overlap_labels(offsets: np.ndarray, grid: Tuple[int, int]) -> np.ndarray:
    """Overlap of a base-sized crop at in-plane ``offsets`` (in base units, region-relative) with each base.

    ``offsets: (2,)`` in ``[0, grid - 1]``; returns ``(grid[0] * grid[1],)`` fractions summing to 1.
    """
    per_axis = []
    for o, g in zip(offsets, grid):
        starts = np.arange(g, dtype=float)
        per_axis.append(np.clip(np.minimum(o + 1.0, starts + 1.0) - np.maximum(o, starts), 0.0, 1.0))
    return np.outer(per_axis[0], per_axis[1]).ravel()


def neighbour_distinct_volumes(n_volumes: int, batch_size: int, rng: np.random.Generator) -> List[int]:
    """Volume index per batch item such that item ``i`` and its inter-volume partner ``(i + 1) % B`` come
    from different volumes whenever that is possible (VoCo's inter-volume term compares two volumes)."""
    ids = [int(rng.integers(n_volumes))]
    for i in range(1, batch_size):
        avoid = {ids[-1], ids[0]} if i == batch_size - 1 and n_volumes > 2 else {ids[-1]}
        choices = [v for v in range(n_volumes) if v not in avoid] or list(range(n_volumes))
        ids.append(int(rng.choice(choices)))
    return ids


@dataclass
class VoCoViews:
    """Base crops, random crops and overlap labels of one step (see the module docstring)."""

    cfg: VoCoConfig

    def batch(self, volumes: VolumeSet, rng: np.random.Generator, batch_size: int) -> Dict[str, torch.Tensor]:
        """{"bases": (B, 9, 1, b, b, b), "crops": (B, n, 1, b, b, b), "labels": (B, n, 9)}."""
        ids = neighbour_distinct_volumes(len(volumes), batch_size, rng)
        samples = [self._sample(volumes, v, rng) for v in ids]
        return {k: torch.stack([s[k] for s in samples]) for k in ("bases", "crops", "labels")}

    def _sample(self, volumes: VolumeSet, v: int, rng: np.random.Generator) -> Dict[str, torch.Tensor]:
        c = self.cfg
        plane = [a for a in range(3) if a != c.slice_axis]
        units = np.ones(3)
        units[plane[0]], units[plane[1]] = c.grid
        region = np.minimum(units * c.base_size, box_size(volumes.boxes[v]))  # shrinks on small volumes
        base = region / units
        lo = random_centre(rng, region, volumes.boxes[v]) - (region - 1) / 2
        out = (c.base_size,) * 3
        bases = []
        for u in range(c.grid[0]):
            for w in range(c.grid[1]):
                idx = np.zeros(3)
                idx[plane[0]], idx[plane[1]] = u, w
                bases.append(self._augmented_view(volumes.arrays[v], lo + (idx + 0.5) * base - 0.5, base, rng))
        crops, labels = [], []
        for _ in range(c.n_crops):
            offsets = rng.uniform(0.0, np.array(c.grid, float) - 1.0)
            pos = np.full(3, 0.5)
            pos[plane[0]], pos[plane[1]] = offsets + 0.5
            crops.append(self._augmented_view(volumes.arrays[v], lo + pos * base - 0.5, base, rng))
            labels.append(torch.from_numpy(overlap_labels(offsets, c.grid)).float())
        return {"bases": torch.stack(bases), "crops": torch.stack(crops), "labels": torch.stack(labels)}

    def _augmented_view(self, volume, centre: np.ndarray, extent: np.ndarray, rng: np.random.Generator):
        """``(1, b, b, b)``: a base-sized view with VoCo's flips, in-plane quarter turns and intensity shift."""
        c, out = self.cfg, (self.cfg.base_size,) * 3
        q = signed_permutation(rng, c.p_flip, c.p_rot90, IN_PLANE[c.slice_axis])
        view = sample_view(volume, centre, crop_matrix(extent, out, q), out)
        return intensity.shift_intensity(view, rng, c.shift) if rng.random() < c.p_shift else view


def sample_dropout(emb: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``(N, C) -> (N, C)``: each row (one sample's embedding) zeroed with probability ``p``, kept rows scaled by
    ``1 / (1 - p)``: what upstream's ``nn.Dropout1d(p)(emb)`` does on a 2-D tensor (read as unbatched ``(C=N,
    L=C)``, so the "channels" it drops are the samples)."""
    if not training or p <= 0:
        return emb
    keep = (torch.rand(emb.shape[0], 1, device=emb.device) >= p).to(emb.dtype)
    return emb * keep / (1.0 - p)


@METHODS.register("voco")
class VoCo(SSLMethod):
    """Backbone + student/EMA-teacher projectors; ``forward(batch)`` -> losses (see the module docstring)."""

    Config = VoCoConfig

    def __init__(self, arch, cfg: VoCoConfig, patch_size) -> None:
        super().__init__(arch, cfg, patch_size)
        self.encoder = BACKBONES.get(arch.backbone).build(1, **arch.backbone_kwargs)
        check_input_size(self.encoder, [cfg.base_size] * 3, "voco base_size",
                         BACKBONES.get(arch.backbone).tokens)
        channels = list(self.encoder.feature_channels)
        chosen = cfg.pool_features if cfg.pool_features is not None else range(len(channels))
        self.student = ProjectionHead(sum(channels[i] for i in chosen), cfg.hidden_dim, cfg.out_dim)
        self.teacher = freeze(copy.deepcopy(self.student))

    def view_maker(self) -> VoCoViews:
        return VoCoViews(self.cfg)

    def param_groups(self, lr: float, weight_decay: float) -> List[Dict[str, Any]]:
        """Every trainable parameter decayed, norms and biases too (``AdamW(model.parameters())`` upstream)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "weight_decay": weight_decay}]

    def forward_voxels(self) -> int:
        """3 x 3 base crops and ``n_crops`` random crops, each ``base_size``^3, per volume."""
        c = self.cfg
        return (c.grid[0] * c.grid[1] + c.n_crops) * c.base_size ** 3

    def train(self, mode: bool = True) -> "VoCo":
        super().train(mode)
        self.teacher.eval()
        return self

    def on_step_end(self, step: int, total: int) -> None:
        update_momentum(self.teacher, self.student, self.cfg.momentum)

    def _project(self, batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Student and teacher projections ``(B, k + n, C)`` (bases first, then crops)."""
        bases, crops = batch["bases"], batch["crops"]
        b, k, n = bases.shape[0], bases.shape[1], crops.shape[1]
        x = torch.cat([bases, crops], dim=1).flatten(0, 1)
        emb = pooled_features(self.encoder(x), self.cfg.pool_features)
        student = self.student(sample_dropout(emb, self.cfg.dropout, self.training)).view(b, k + n, -1)
        with torch.no_grad():
            teacher = self.teacher(emb).view(b, k + n, -1)
        return student, teacher

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        c, labels = self.cfg, batch["labels"]
        k = batch["bases"].shape[1]
        student, teacher = self._project(batch)
        b = labels.shape[0]
        intra = inter = reg = student.new_zeros((), dtype=torch.float32)
        for i in range(b):
            j = (i + 1) % b
            s_crops, t_crops = student[i, k:], teacher[i, k:]
            intra = intra + position_loss(labels[i], similarities(s_crops, teacher[i, :k]))
            target = similarities(t_crops, teacher[j, :k]).detach()
            inter = inter + position_loss(target, similarities(s_crops, student[j, :k]))
            reg = reg + orthogonality_loss(student[i, :k])
        intra, inter, reg = intra / b, inter / b, reg / b
        loss = c.intra_weight * intra + c.inter_weight * inter + c.reg_weight * reg
        return {"loss": loss, "intra": intra.detach(), "inter": inter.detach(), "reg": reg.detach()}

    def export_state(self) -> Dict[str, torch.Tensor]:
        return prefixed(self.encoder.state_dict(), "encoder.")
