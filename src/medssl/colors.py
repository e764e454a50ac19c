"""Distinct label colours (RGB in [0, 1]) for segments without colours of their own.

The first entries follow the order of 3D Slicer's ``GenericColors`` table so that segments look familiar.
"""
from __future__ import annotations

from typing import Tuple

PALETTE = [
    (0.502, 0.682, 0.502), (0.945, 0.839, 0.569), (0.694, 0.478, 0.396), (0.435, 0.722, 0.824),
    (0.847, 0.396, 0.310), (0.867, 0.510, 0.396), (0.565, 0.933, 0.565), (0.753, 0.408, 0.345),
    (0.863, 0.961, 0.078), (0.306, 0.247, 0.000), (1.000, 0.980, 0.863), (0.902, 0.863, 0.275),
    (0.784, 0.784, 0.922), (0.980, 0.980, 0.824), (0.957, 0.839, 0.286), (0.000, 0.592, 0.808),
    (0.710, 0.494, 0.906), (0.710, 0.804, 0.396), (0.863, 0.078, 0.235), (0.275, 0.510, 0.706),
]


def label_color(value: int) -> Tuple[float, float, float]:
    """Colour for label ``value`` (1-based); background (0) is black."""
    if value <= 0:
        return (0.0, 0.0, 0.0)
    return PALETTE[(value - 1) % len(PALETTE)]
