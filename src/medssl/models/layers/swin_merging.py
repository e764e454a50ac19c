"""Swin patch merging as MONAI 1.3.0 computed it: the layout VoCo and VoComni were trained with.

Ported from MONAI 1.3.0 ``monai/networks/nets/swin_unetr.py::PatchMerging.forward`` (Apache-2.0, Project-MONAI).
MONAI 1.5.0 rewrote that forward to concatenate the eight 2x2x2 sub-voxels once each; 1.3.0 concatenates
``(0,0,0) (1,0,0) (0,1,0) (0,0,1) (1,0,1) (0,1,0) (0,0,1) (1,1,1)``: ``(0,1,0)`` and ``(0,0,1)`` twice, ``(1,1,0)``
and ``(0,1,1)`` never. The parameters (``norm``, ``reduction``) and their names are the same in both versions, so
a checkpoint loads into either without a key error but computes another function in the wrong one. Which layout a
network uses is part of its architecture (``swin_unetr`` ``patch_merging``), decided by the weights' catalog entry,
never by the installed MONAI version.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (d, h, w) offsets of the sub-voxels in the order MONAI 1.3.0 concatenates them (channel blocks of C each)
MONAI_1_3_OFFSETS = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1))


class PatchMergingMonai13(nn.Module):
    """``(B, D, H, W, C) -> (B, ceil(D/2), ceil(H/2), ceil(W/2), 2C)``: LayerNorm(8C) then Linear(8C -> 2C).

    Built by MONAI's ``BasicLayer`` as ``downsample(dim=C, norm_layer=..., spatial_dims=3)``; odd sides are padded
    with zeros at the end first, as in MONAI.
    """

    def __init__(self, dim: int, norm_layer: type = nn.LayerNorm, spatial_dims: int = 3) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError("the MONAI 1.3.0 patch-merging layout is defined for 3-D inputs only")
        self.dim = dim
        self.reduction = nn.Linear(8 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(8 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"expecting a 5-D (B, D, H, W, C) tensor, got {tuple(x.shape)}")
        _, d, h, w, _ = x.shape
        if d % 2 or h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        parts = [x[:, i::2, j::2, k::2, :] for i, j, k in MONAI_1_3_OFFSETS]
        return self.reduction(self.norm(torch.cat(parts, -1)))
