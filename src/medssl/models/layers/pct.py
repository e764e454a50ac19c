"""Convolutional parts of PCT-Net (MIS-FM): pre-activation conv blocks, patch embedding, conv-transformer
blocks and the prediction head.

Ported from openmedlab/MIS-FM ``net/pct_net.py`` (Apache-2.0; Wang et al., "MIS-FM: 3D Medical Image
Segmentation using Foundation Models Pretrained on a Large-Scale Unannotated Dataset", arXiv 2306.16925).
Attribute names and layer order are MIS-FM's (BatchNorm3d -> PReLU -> Conv3d, keys ``conv_conv.{0,1,2,3,4,6}``)
so its checkpoints load by name. Tensors here are in MIS-FM's axis order ``(B, C, D, H, W)`` (see `.axes`);
``dim=2`` blocks convolve in-plane only (kernel 1x3x3, pooling 1x2x2 over (H, W)) for thick-slice volumes.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

from .pct_swin import BasicLayer


def conv_kernel(dim: int) -> Tuple[Tuple[int, int, int], Tuple[int, int, int]]:
    """(kernel, padding) of a 3x3x3 conv (``dim=3``) or an in-plane 1x3x3 conv (``dim=2``)."""
    return ((1, 3, 3), (0, 1, 1)) if dim == 2 else ((3, 3, 3), (1, 1, 1))


def pre_act_conv(cin: int, cout: int, kernel=1, padding=0) -> nn.Sequential:
    """BatchNorm3d -> PReLU -> Conv3d (keys ``0``, ``1``, ``2``)."""
    return nn.Sequential(nn.BatchNorm3d(cin), nn.PReLU(), nn.Conv3d(cin, cout, kernel_size=kernel, padding=padding))


class ConvBlock(nn.Module):
    """Two pre-activation convs with dropout between them: ``(B, Cin, ...) -> (B, Cout, ...)``."""

    def __init__(self, cin: int, cout: int, dim: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        k, p = conv_kernel(dim)
        self.conv_conv = nn.Sequential(
            nn.BatchNorm3d(cin), nn.PReLU(), nn.Conv3d(cin, cout, kernel_size=k, padding=p),
            nn.BatchNorm3d(cout), nn.PReLU(), nn.Dropout(dropout), nn.Conv3d(cout, cout, kernel_size=k, padding=p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_conv(x)


class DownSample(nn.Module):
    """Max-pool by 2 (``down_dim=3``) or 1x2x2 (``down_dim=2``), then a pre-activation conv."""

    def __init__(self, cin: int, cout: int, down_dim: int = 3, conv_dim: int = 3) -> None:
        super().__init__()
        self.pool = nn.MaxPool3d((1, 2, 2) if down_dim == 2 else 2)
        self.conv = pre_act_conv(cin, cout, *conv_kernel(conv_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


class UpCatBlock(nn.Module):
    """Upsample the coarse map by a transposed conv, concatenate with the fine one, fuse by a conv.

    ``x_l: (B, C_l, ...)`` fine, ``x_h: (B, C_h, .../2)`` coarse -> ``(B, C_l, ...)``.
    """

    def __init__(self, chns_l: int, chns_h: int, up_dim: int = 3, conv_dim: int = 3) -> None:
        super().__init__()
        k = (1, 2, 2) if up_dim == 2 else 2
        self.up = nn.Sequential(nn.BatchNorm3d(chns_h), nn.PReLU(), nn.ConvTranspose3d(chns_h, chns_l, k, stride=k))
        self.conv = pre_act_conv(chns_l * 2, chns_l, *conv_kernel(conv_dim))

    def forward(self, x_l: torch.Tensor, x_h: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x_l, self.up(x_h)], dim=1))


class ConvLayer(nn.Module):
    """Pre-activation 1x1x1 conv (MIS-FM output layers): ``(B, Cin, ...) -> (B, Cout, ...)``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = pre_act_conv(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PatchEmbedding(nn.Module):
    """Stem of one resolution mode: full-res conv branch, one downsampling conv stage and a second
    downsampling to the transformer's grid. ``x -> (x0 (C0, /1), x1 (C1, /s1), x2 (C2, /s2))``."""

    def __init__(self, in_chns: int, ft_chns: Sequence[int], conv_dims: Sequence[int], down_dims: Sequence[int],
                 dropout: Sequence[float]) -> None:
        super().__init__()
        k, p = conv_kernel(conv_dims[0])
        self.proj = nn.Conv3d(in_chns, ft_chns[0], kernel_size=k, padding=p)
        self.conv0 = ConvBlock(ft_chns[0], ft_chns[0], conv_dims[0], dropout[0])
        self.conv1 = ConvBlock(ft_chns[1], ft_chns[1], conv_dims[1], dropout[1])
        self.down1 = DownSample(ft_chns[0], ft_chns[1], down_dims[0], conv_dims[1])
        self.down2 = DownSample(ft_chns[1], ft_chns[2], down_dims[1], 3)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x0 = self.conv0(self.proj(x))
        x1 = self.conv1(self.down1(x0))
        return x0, x1, self.down2(x1)


class ConvTransBlock(nn.Module):
    """Sum of a conv block and a Swin stage on the same grid: ``(B, C, S, H, W) -> (B, C, S, H, W)``.

    ``norm_layer`` exists in MIS-FM (and its checkpoints) but is not applied; kept for loading.
    """

    def __init__(self, chns: int, input_resolution: Sequence[int], depth: int = 2, num_head: int = 4,
                 window_size: int = 6, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.2) -> None:
        super().__init__()
        self.conv = ConvBlock(chns, chns, dim=3, dropout=drop_rate)
        self.trans = BasicLayer(chns, input_resolution, depth, num_head, window_size, drop_rate, attn_drop_rate,
                                drop_path_rate)
        self.norm_layer = nn.LayerNorm(chns)
        self.pos_drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, s, h, w = x.shape
        tokens = self.pos_drop(x.flatten(2).transpose(1, 2))
        y = self.trans(tokens, (s, h, w)).reshape(b, s, h, w, c).permute(0, 4, 1, 2, 3)
        return self.conv(x) + y


class PredictionHead(nn.Module):
    """Decoder tail of one resolution mode: two UpCat stages back to full resolution and 1x1 outputs.

    ``out_conv1`` (deep supervision in MIS-FM) is kept for loading; `forward` returns ``out_conv0`` only.
    """

    def __init__(self, ft_chns: Sequence[int], conv_dims: Sequence[int], down_dims: Sequence[int],
                 dropout: Sequence[float], class_num: int) -> None:
        super().__init__()
        self.up1 = UpCatBlock(ft_chns[0], ft_chns[1], down_dims[0], conv_dims[0])
        self.up2 = UpCatBlock(ft_chns[1], ft_chns[2], down_dims[1], conv_dims[1])
        self.conv0 = ConvBlock(ft_chns[0], ft_chns[0], conv_dims[0], dropout[0])
        self.conv1 = ConvBlock(ft_chns[1], ft_chns[1], conv_dims[1], dropout[1])
        self.out_conv0 = ConvLayer(ft_chns[0], class_num)
        self.out_conv1 = ConvLayer(ft_chns[1], class_num)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        x_d1 = self.conv1(self.up2(x1, x2))
        return self.out_conv0(self.conv0(self.up1(x0, x_d1)))


# (conv_dims, down_dims) of the three resolution modes: 0 isotropic (4,4,4), 1 (2,4,4), 2 (1,4,4)
MODE_DIMS = {0: ([3, 3], [3, 3]), 1: ([2, 3], [2, 3]), 2: ([2, 2], [2, 2])}
MODE_SCALE = {0: (4, 4, 4), 1: (2, 4, 4), 2: (1, 4, 4)}
