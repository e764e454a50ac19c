"""A picture of the result: three orthogonal slices of the T1 with the labels blended on top, plus a legend.

Slices are taken from the image reoriented to RAS and shown in neurological convention (subject's right on
the right of each panel), through the centre of mass of the labelled voxels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw

from ..io.atomic import atomic_path
from ..plan import LabelSpec


def _window(t1: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(t1, [1, 99.5])
    return np.clip((t1 - lo) / max(hi - lo, 1e-6), 0, 1)


def _blend(gray: np.ndarray, labels: np.ndarray, colors: Dict[int, Sequence[float]], alpha: float) -> np.ndarray:
    rgb = np.repeat(gray[..., None], 3, axis=2)
    for value, color in colors.items():
        m = labels == value
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(color)
    return (rgb * 255).astype(np.uint8)


def _panels(t1: np.ndarray, lab: np.ndarray, centre) -> list:
    """Axial, coronal, sagittal 2D arrays from (k, j, i) RAS arrays, flipped so up is superior/anterior."""
    k, j, i = centre
    return [(t1[k, ::-1, :], lab[k, ::-1, :], "axial"), (t1[::-1, j, :], lab[::-1, j, :], "coronal"),
            (t1[::-1, :, i], lab[::-1, :, i], "sagittal")]


def render_overlay(t1: sitk.Image, labels: sitk.Image, specs: Sequence[LabelSpec], path: str | Path,
                   title: str = "", scores: Optional[Dict[str, float]] = None, scale: int = 2) -> Path:
    """Write a PNG with three slices and a legend (region name and, if given, its score)."""
    t1_ras = sitk.DICOMOrient(t1, "RAS")
    lab_ras = sitk.DICOMOrient(sitk.Resample(labels, t1, sitk.Transform(), sitk.sitkNearestNeighbor), "RAS")
    gray, lab = _window(sitk.GetArrayFromImage(t1_ras).astype(np.float32)), sitk.GetArrayFromImage(lab_ras)
    centre = [int(c) for c in np.argwhere(lab > 0).mean(axis=0)] if lab.any() else [s // 2 for s in lab.shape]
    colors = {s.value: s.color for s in specs if s.value}
    tiles = [Image.fromarray(_blend(g, l, colors, 0.45)).resize((g.shape[1] * scale, g.shape[0] * scale), Image.NEAREST)
             for g, l, _ in _panels(gray, lab, centre)]
    legend_w, height = 300, max(t.height for t in tiles) + 40
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + legend_w, height), "black")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for tile, (_, _, name) in zip(tiles, _panels(gray, lab, centre)):
        canvas.paste(tile, (x, 30))
        draw.text((x + 5, 8), f"{name}   (R on the right)" if name != "sagittal" else name, fill="white")
        x += tile.width
    _legend(draw, x + 10, specs, scores, title)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)


def _legend(draw: ImageDraw.ImageDraw, x: int, specs: Sequence[LabelSpec], scores, title: str) -> None:
    draw.text((x, 8), title, fill="white")
    for row, spec in enumerate(s for s in specs if s.value):
        y = 40 + 22 * row
        draw.rectangle([x, y, x + 14, y + 14], fill=tuple(int(255 * c) for c in spec.color))
        score = f"  Dice {scores[spec.name]:.2f}" if scores and spec.name in scores else ""
        draw.text((x + 22, y + 1), f"{spec.name}{score}", fill="white")
