"""Dataset fingerprint of unlabelled volumes: what was measured, before any decision (nnU-Net
``dataset_fingerprint.json``, Isensee et al., Nat. Methods 2021).

For every volume: size and spacing after reorientation to the plan's orientation (image axis order i, j, k),
intensity percentiles (0.5, 50, 99.5), mean, standard deviation, minimum, maximum and a modality guess
(`.rules.guess_modality`, the one used for fine-tuning plans too). The fingerprint also keeps a
bounded voxel sample per volume (in memory only) from which the planner fits frozen normalisation statistics.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import SimpleITK as sitk

from ..data.preprocess import target_grid
from ..io.volume_io import read_image
from .rules import guess_modality

SAMPLE_VOXELS = 200_000  # per volume, for fitting normalisation statistics


@dataclass
class VolumeFingerprint:
    """Measurements of one volume (spacing and size in the plan's orientation, i.e. (i, j, k) order)."""

    path: str
    size: List[int]
    spacing: List[float]
    modality: str
    percentiles: Dict[str, float]
    mean: float
    std: float
    minimum: float
    maximum: float
    file_size: int = 0


@dataclass
class DatasetFingerprint:
    """All volumes of a pretraining set; ``samples`` (one voxel sample per volume) is not serialised."""

    orientation: str
    volumes: List[VolumeFingerprint]
    samples: List[np.ndarray] = field(default_factory=list, repr=False)

    def to_dict(self) -> Dict[str, Any]:
        return {"orientation": self.orientation, "volumes": [asdict(v) for v in self.volumes],
                "summary": self.summary()}

    def hash(self) -> str:
        """sha256 of the measurements (paths excluded: a moved copy of the same data has the same hash)."""
        d = [{k: v for k, v in asdict(f).items() if k != "path"} for f in self.volumes]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def summary(self) -> Dict[str, Any]:
        """Median spacing and size, modality counts and pooled intensity range."""
        spacings = np.array([v.spacing for v in self.volumes])
        sizes = np.array([v.size for v in self.volumes])
        modalities: Dict[str, int] = {}
        for v in self.volumes:
            modalities[v.modality] = modalities.get(v.modality, 0) + 1
        return {"volumes": len(self.volumes), "median_spacing": np.median(spacings, 0).round(4).tolist(),
                "median_size": np.median(sizes, 0).astype(int).tolist(), "modalities": modalities,
                "same_spacing": bool(np.allclose(spacings, spacings[0], rtol=1e-3)),
                "intensity_min": float(min(v.minimum for v in self.volumes)),
                "intensity_max": float(max(v.maximum for v in self.volumes)), "hash": self.hash()}

    @property
    def modality(self) -> str:
        """The most frequent modality guess."""
        counts = self.summary()["modalities"]
        return max(sorted(counts), key=counts.get)


def _measure(path: str, orientation: str, rng: np.random.Generator) -> tuple:
    image = read_image(path, "image")
    grid = target_grid(image, orientation, None)
    arr = np.asarray(sitk.GetArrayViewFromImage(image), dtype=np.float32).ravel()
    sub = arr[:: max(1, arr.size // (4 * SAMPLE_VOXELS))]
    p = np.percentile(sub, [0.5, 50.0, 99.5])
    sample = rng.choice(sub, size=min(SAMPLE_VOXELS, sub.size), replace=False)
    lo, hi = float(arr.min()), float(arr.max())
    file = Path(str(path).split("::")[0])
    fp = VolumeFingerprint(
        path=str(path), size=[int(s) for s in grid.size], spacing=[float(s) for s in grid.spacing],
        modality=guess_modality(lo), percentiles={"0.5": float(p[0]), "50": float(p[1]), "99.5": float(p[2])},
        mean=float(sub.mean()), std=float(sub.std()), minimum=lo, maximum=hi,
        file_size=file.stat().st_size if file.is_file() else 0)
    return fp, sample


def fingerprint_dataset(paths: Sequence[str], orientation: str = "RAS", seed: int = 0) -> DatasetFingerprint:
    """Read every volume once and measure it (see the module docstring)."""
    rng = np.random.default_rng(seed)
    measured = [_measure(p, orientation, rng) for p in paths]
    return DatasetFingerprint(orientation, [m[0] for m in measured], [m[1] for m in measured])
