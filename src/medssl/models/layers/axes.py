"""Spatial axis order of networks pretrained on SimpleITK arrays.

MedSSL tensors are ``(B, C, I, J, K)`` in the image's (i, j, k) order (RAS after reorientation). PyMIC (MIS-FM)
reads images with ``sitk.GetArrayFromImage`` and trains on ``(B, C, D, H, W) = (B, C, K, J, I)``: the
through-plane axis comes first, and the anisotropic 1x3x3 kernels / 1x2x2 strides of its networks act on
(H, W). Networks ported from there reverse the spatial axes on the way in and out, so their pretrained
filters see the axis order they were trained with.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch


def reverse_spatial(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, A, B', C') -> (B, C, C', B', A)``; its own inverse (a view, no copy)."""
    return x.permute(0, 1, 4, 3, 2)


def reverse_triple(t: Sequence[int]) -> Tuple[int, int, int]:
    """A per-axis triple in the other axis order."""
    return int(t[2]), int(t[1]), int(t[0])
