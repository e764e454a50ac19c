"""Which case next: unlabelled volumes ordered by the model's uncertainty (``medssl rank``).

Active learning by predictive entropy (Shannon entropy of the averaged prediction; the "max entropy"
acquisition of Gal, Islam & Ghahramani, ICML 2017), with mirroring test-time augmentation as the ensemble
(the TTA uncertainty of Wang et al., Neurocomputing 2019) instead of MONAI Label's MC dropout, so that any
package works without dropout layers. The model is loaded once; per volume:

* ``H`` = normalised entropy of the TTA-mean class probabilities per network voxel (0 certain, 1 uniform);
* ``mean_entropy`` = mean ``H`` inside the predicted foreground (arg-max not background);
* ``uncertain_fraction`` = share of voxels with ``H > 0.5`` among the predicted foreground and every voxel
  with ``H > 0.5`` (how much of what the model calls structure, or hesitates about, is uncertain);
* ``score`` = (mean_entropy + uncertain_fraction) / 2; a volume with no predicted foreground scores 1
  (the model found nothing: look at it first). Volumes are listed most uncertain first.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..data.datasets import _expand_images
from ..data.label_resample import class_argmax
from ..data.postprocess import entropy
from ..data.preprocess import preprocess
from ..errors import InputError, MedSSLError
from ..events import EventSink, NullSink
from ..io.volume_io import read_image
from .predictor import Predictor
from .sliding_window import probabilities

UNCERTAIN = 0.5  # normalised entropy above which a voxel counts as uncertain


@dataclass
class CaseScore:
    """The uncertainty of one volume (see the module docstring); ``error`` when it could not be scored."""

    name: str
    images: List[str]
    score: float = math.nan
    mean_entropy: Optional[float] = None
    uncertain_fraction: Optional[float] = None
    foreground_fraction: float = 0.0
    error: Optional[str] = None

    def to_dict(self) -> Dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def score_probabilities(probs: np.ndarray) -> Dict[str, Optional[float]]:
    """``probs``: (K, ...) TTA-mean class probabilities -> score, mean_entropy, uncertain_fraction, foreground_fraction."""
    h = entropy(probs)
    foreground = class_argmax(probs) != 0
    if not foreground.any():
        return {"score": 1.0, "mean_entropy": None, "uncertain_fraction": None, "foreground_fraction": 0.0}
    uncertain = h > UNCERTAIN
    mean_h = float(h[foreground].mean())
    fraction = float(uncertain.sum() / np.logical_or(foreground, uncertain).sum())
    return {"score": (mean_h + fraction) / 2, "mean_entropy": mean_h, "uncertain_fraction": fraction,
            "foreground_fraction": float(foreground.mean())}


def _score_case(predictor: Predictor, channels: Sequence[str], tta: bool) -> Dict[str, Optional[float]]:
    images = [read_image(c, "input image") for c in channels]
    pre = preprocess(images, predictor.plan, names=list(channels))
    settings = predictor.settings(tta=tta)
    probs = probabilities(predictor.net, torch.from_numpy(pre.image).unsqueeze(0), settings, predictor.device)
    return score_probabilities(probs[0].numpy())


def rank_images(model: str | Path, images: Sequence[str], device: str = "auto", tta: bool = True,
                sink: Optional[EventSink] = None) -> List[CaseScore]:
    """Score every case of ``images`` (files, comma-joined channels or folders) with the package ``model``
    (loaded once); most uncertain first, cases that failed last with their one-line error; `InputError` when
    every case failed."""
    sink = sink or NullSink()
    cases = _expand_images(images)
    if not cases:
        raise InputError("no images to rank; pass --images FILE [FILE ...] or a folder")
    predictor = Predictor.from_package(model, device)
    sink.emit("start", task="rank", total=len(cases), model=str(model), device=str(predictor.device))
    scores: List[CaseScore] = []
    for n, case in enumerate(cases):
        sink.emit("progress", stage="rank", done=n, total=len(cases), case=case.name)
        entry = CaseScore(case.name, list(case.channels))
        try:
            for key, value in _score_case(predictor, case.channels, tta).items():
                setattr(entry, key, value)
        except MedSSLError as err:
            entry.error = str(err)
            sink.emit("log", message=f"{case.name}: {err}")
        scores.append(entry)
    sink.emit("progress", stage="rank", done=len(cases), total=len(cases))
    if all(s.error is not None for s in scores):  # nothing to rank: a failure, exit code 2 (some failed: listed)
        raise InputError(f"none of the {len(scores)} case(s) could be ranked ({scores[0].name}: {scores[0].error})")
    return sorted(scores, key=lambda s: (s.error is not None, -s.score if math.isfinite(s.score) else 0.0))
