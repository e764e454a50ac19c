"""Volume Fusion (VolF): predict per-voxel fusion coefficients of two volumes (Wang et al., "MIS-FM: 3D
Medical Image Segmentation using Foundation Models Pretrained on a Large-Scale Unannotated Dataset",
arXiv 2306.16925; IEEE TIP 2025), re-implemented from the paper.

Views (`FusionViews`): two random-resized crops (per-axis scale 0.7-1.5, flips), each with PyMIC's intensity
steps (``Crop4VolumeFusion``, HiLab-git/PyMIC ``transform/crop4vf.py``): adaptive contrast with random
percentiles (0.1-2 / 98-99.9, `..intensity.adaptive_contrast`), then gamma 0.7-1.5 always; then both crops are
inverted together with p = 0.25. A coefficient map starts at class 0 and receives ``M ~ U(10, 40)`` sequential
random boxes, each side an integer U(8 voxels, 5/8 of the crop side) (the paper's U(8, 80) in-plane and U(8, 40)
across slices at 64 x 128 x 128), each painted with a class ``k`` in ``1..K-1``; the fused crop is
``a * I1 + (1 - a) * I2`` with ``a = k / (K - 1)`` (K = 5: coefficients 0, .25, .5, .75, 1).

Documented departures from PyMIC, following the paper instead: the two crops usually come from two different
volumes (PyMIC crops both from one), and the boxes are sequential random boxes (PyMIC fills a block grid with
foreground ratio 0.7).
The whole encoder-decoder segments the fused crop into the K classes, with Dice + cross-entropy
(`..losses.fusion`). Encoder *and* decoder are exported (fine-tuning re-initialises the K-class output layer).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ...data.volumes import VolumeSet
from ...io.settings import require, require_fields
from ...models.registry import BACKBONES
from ...models.segmentation import build_network
from .. import intensity
from ..base import METHODS, SSLMethod, check_input_size, prefixed
from ..batches import pick_two
from ..losses.fusion import fusion_dice_ce
from ..views import crop_matrix, random_centre, sample_view, signed_permutation


@dataclass
class VolumeFusionConfig:
    """MIS-FM recipe: 5 classes, 10-40 boxes; the crop is the plan's patch (64 x 128 x 128 in the recipe)."""

    classes: int = 5
    boxes: Tuple[int, int] = (10, 40)
    box_min: int = 8  # voxels
    box_max_fraction: float = 0.625  # of the crop side
    scale: Tuple[float, float] = (0.7, 1.5)
    p_flip: float = 0.5
    contrast_low: Tuple[float, float] = (0.1, 2.0)  # percentile ranges of PyMIC's adaptive contrast
    contrast_high: Tuple[float, float] = (98.0, 99.9)
    gamma: Tuple[float, float] = (0.7, 1.5)
    p_invert: float = 0.25  # both crops together
    dice_weight: float = 0.5
    ce_weight: float = 0.5
    crop_size: Optional[List[int]] = None  # default: the plan's patch size

    def __post_init__(self) -> None:
        require_fields(self, positive=("boxes", "box_min", "crop_size"),
                       ranges=("boxes", "scale", "contrast_low", "contrast_high", "gamma"))
        require(self.classes >= 2, "classes", self.classes, "2 or more (the fused volumes' labels)")
        require(0 < self.box_max_fraction <= 1, "box_max_fraction", self.box_max_fraction, "a fraction in (0, 1]")


def fusion_map(rng: np.random.Generator, shape: Tuple[int, int, int], classes: int, boxes: Tuple[int, int],
               box_min: int = 8, max_fraction: float = 0.625) -> np.ndarray:
    """Class map ``shape`` (int64, 0 = second volume only) painted with sequential random boxes whose sides are
    integers in ``[min(box_min, side), max(that, max_fraction * side)]``."""
    label = np.zeros(shape, dtype=np.int64)
    for _ in range(int(rng.integers(boxes[0], boxes[1] + 1))):
        size = []
        for s in shape:
            low = min(box_min, s)
            size.append(int(rng.integers(low, max(low, int(max_fraction * s)) + 1)))
        start = [int(rng.integers(0, s - z + 1)) for s, z in zip(shape, size)]
        region = tuple(slice(a, a + z) for a, z in zip(start, size))
        label[region] = int(rng.integers(1, classes))
    return label


def fuse(first: torch.Tensor, second: torch.Tensor, label: torch.Tensor, classes: int) -> torch.Tensor:
    """``a * first + (1 - a) * second`` with ``a = label / (classes - 1)``; tensors ``(1, *P)``, label ``(*P)``."""
    alpha = label.to(first.dtype).unsqueeze(0) / (classes - 1)
    return alpha * first + (1.0 - alpha) * second


@dataclass
class FusionViews:
    """Fused crops and their coefficient classes (see the module docstring)."""

    cfg: VolumeFusionConfig
    crop: Tuple[int, int, int]

    def batch(self, volumes: VolumeSet, rng: np.random.Generator, batch_size: int) -> Dict[str, torch.Tensor]:
        """{"image": (B, 1, *crop) fused, "label": (B, *crop) int64 in 0..K-1}."""
        images, labels = [], []
        for _ in range(batch_size):
            a, b = pick_two(volumes, rng)
            first, second = self._crop(volumes, a, rng), self._crop(volumes, b, rng)
            c = self.cfg
            if rng.random() < c.p_invert:  # PyMIC inverts the two crops together
                first, second = 1.0 - first, 1.0 - second
            label = torch.from_numpy(fusion_map(rng, self.crop, c.classes, c.boxes, c.box_min, c.box_max_fraction))
            images.append(fuse(first, second, label, c.classes))
            labels.append(label)
        return {"image": torch.stack(images), "label": torch.stack(labels)}

    def _crop(self, volumes: VolumeSet, v: int, rng: np.random.Generator) -> torch.Tensor:
        c = self.cfg
        extent = np.asarray(self.crop, float) * rng.uniform(*c.scale, size=3)
        q = signed_permutation(rng, c.p_flip, 0.0)
        centre = random_centre(rng, extent, volumes.boxes[v])
        x = sample_view(volumes.arrays[v], centre, crop_matrix(extent, self.crop, q), self.crop)
        x = intensity.adaptive_contrast(x, float(rng.uniform(*c.contrast_low)), float(rng.uniform(*c.contrast_high)))
        return intensity.gamma(x, float(rng.uniform(*c.gamma)))  # PyMIC: always, after the contrast step


@METHODS.register("volume_fusion")
class VolumeFusion(SSLMethod):
    """Encoder-decoder with a K-class head; ``forward({"image", "label"})`` -> Dice + CE."""

    Config = VolumeFusionConfig
    exports_decoder = True

    def __init__(self, arch, cfg: VolumeFusionConfig, patch_size) -> None:
        super().__init__(arch, cfg, patch_size)
        self.crop = tuple(int(c) for c in (cfg.crop_size or patch_size))
        self.net = build_network(arch, 1, cfg.classes)
        check_input_size(self.net.encoder, self.crop, "volume_fusion crop",
                         BACKBONES.get(arch.backbone).tokens)

    def view_maker(self) -> FusionViews:
        return FusionViews(self.cfg, self.crop)

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return fusion_dice_ce(self.net(batch["image"]), batch["label"], self.cfg.dice_weight, self.cfg.ce_weight)

    def export_state(self) -> Dict[str, torch.Tensor]:
        return prefixed(self.net.state_dict(), "")
