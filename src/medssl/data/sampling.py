"""Foreground-oversampled, augmented patches for fine-tuning, deterministic per step.

Every batch is a pure function of ``(seed, index)``: ``PatchBatches(...)[index]`` draws its own
``numpy.random.default_rng([seed, index])``, so a resumed run, a run with several loader workers and an
uninterrupted run see identical batches. Spatial augmentation (rotation, scaling, mirroring) is applied by
sampling the patch directly from the whole case through one affine ``grid_sample`` (no border artefacts);
intensity augmentation follows nnU-Net's defaults (brightness, contrast, gamma, noise).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .augment import AugmentConfig, augment_intensity, random_affine


@dataclass
class Case:
    """One preprocessed training case: image (C, I, J, K) float32, label (I, J, K) class indices."""

    image: np.ndarray
    label: np.ndarray
    name: str = ""
    foreground: Dict[int, np.ndarray] = field(default_factory=dict)  # class -> (N, 3) voxel indices
    labelled: Optional[np.ndarray] = None  # sparse slices: (N, 3) labelled voxels that every patch must reach
    ignore: int = 255  # the ignore label; a sparse case's patches carry it outside the volume

    def __post_init__(self) -> None:
        if not self.foreground:
            self.foreground = foreground_index(self.label, ignore_index=self.ignore)


def foreground_index(label: np.ndarray, max_per_class: int = 20000, ignore_index: int = 255) -> Dict[int, np.ndarray]:
    """A regular subsample of the voxel indices of each foreground class (for oversampling)."""
    out: Dict[int, np.ndarray] = {}
    for c in np.unique(label):
        if c == 0 or c == ignore_index:
            continue
        idx = np.argwhere(label == c)
        out[int(c)] = idx[:: max(1, len(idx) // max_per_class)]
    return out


class PatchBatches(torch.utils.data.Dataset):
    """Map-style dataset: item ``i`` is the whole batch of step ``i``: {"image": (B, C, *P), "label": (B, *P)}."""

    def __init__(self, cases: Sequence[Case], patch_size: Sequence[int], batch_size: int, seed: int,
                 foreground_fraction: float = 0.33, augment: AugmentConfig | None = None, length: int = 10**9):
        self.cases, self.patch, self.batch_size = list(cases), tuple(int(p) for p in patch_size), batch_size
        self.seed, self.fg, self.augment, self.length = seed, foreground_fraction, augment or AugmentConfig(), length
        self._volumes = [torch.from_numpy(c.image) for c in self.cases]
        # a sparse case's labels are stored + 1, so that grid_sample's zero padding marks the outside (`_sample_patch`)
        self._outside = [c.ignore if c.labelled is not None else None for c in self.cases]
        self._labels = [torch.from_numpy(c.label.astype(np.float32) + (0 if o is None else 1))
                        for c, o in zip(self.cases, self._outside)]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(index)])
        samples = [self._sample(rng) for _ in range(self.batch_size)]
        return {"image": torch.stack([s[0] for s in samples]), "label": torch.stack([s[1] for s in samples])}

    def _sample(self, rng: np.random.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        c = int(rng.integers(len(self.cases)))
        centre = self._centre(self.cases[c], rng)
        theta = random_affine(rng, self.augment, self.patch, self.cases[c].label.shape, centre)
        image, label = _sample_patch(self._volumes[c], self._labels[c], theta, self.patch, self._outside[c])
        image = augment_intensity(image, rng, self.augment)
        return image, label.round().long()

    def _centre(self, case: Case, rng: np.random.Generator) -> np.ndarray:
        """Voxel centre of the patch: a random foreground voxel with probability ``fg``, else uniform; for a
        sparse case (``labelled`` set) uniform within a quarter patch of a labelled voxel, so every patch holds
        labelled slices even after rotation and scaling. Both non-foreground kinds keep the patch inside the
        volume where it fits (a labelled voxel near the border then lies off-centre, but still in the patch):
        a patch hanging out of the volume sees less anatomy, and in a dense case its outside reads as
        background."""
        if case.foreground and rng.random() < self.fg:
            cls = list(case.foreground)[int(rng.integers(len(case.foreground)))]
            idx = case.foreground[cls]
            return idx[int(rng.integers(len(idx)))].astype(np.float64)
        shape, patch = np.array(case.label.shape), np.array(self.patch, dtype=np.float64)
        half = np.minimum(patch / 2.0, shape / 2.0)
        if case.labelled is not None and len(case.labelled):
            anchor = case.labelled[int(rng.integers(len(case.labelled)))]
            centre = anchor + np.round(rng.uniform(-patch / 4.0, patch / 4.0))
            return np.clip(centre, np.ceil(half - 0.5), np.floor(shape - half - 0.5))  # integer: an exact crop
        return np.round(rng.uniform(half - 0.5, shape - half - 0.5))


def _sample_patch(volume: torch.Tensor, label: torch.Tensor, theta: torch.Tensor, patch: Tuple[int, int, int],
                  outside: Optional[int] = None):
    """Resample ``volume`` (C, I, J, K) trilinearly and ``label`` (I, J, K) by nearest at the affine grid.

    ``theta``: (3, 4) map from normalised patch coordinates to normalised volume coordinates, in
    grid_sample's (x=K, y=J, z=I) axis order. Outside the volume: image 0; label 0 (background) when
    ``outside`` is None, else ``outside`` (the ignore label of a sparse case: the voxels out there are no more
    painted than an unpainted slice), and then ``label`` holds the class indices + 1.
    """
    grid = F.affine_grid(theta.unsqueeze(0), [1, 1, *patch], align_corners=False)
    img = F.grid_sample(volume.unsqueeze(0), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    lab = F.grid_sample(label[None, None], grid, mode="nearest", padding_mode="zeros", align_corners=False)[0, 0]
    if outside is not None:
        lab = torch.where(lab == 0, torch.full_like(lab, float(outside)), lab - 1.0)
    return img[0], lab


def fixed_patches(cases: Sequence[Case], patch_size: Sequence[int], count: int, seed: int) -> List[Dict[str, torch.Tensor]]:
    """``count`` unaugmented foreground-centred batches of one patch each (for quick checks and benchmarks)."""
    ds = PatchBatches(cases, patch_size, 1, seed, foreground_fraction=1.0, augment=AugmentConfig.none())
    return [ds[i] for i in range(count)]
