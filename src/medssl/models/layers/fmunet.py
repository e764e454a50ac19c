"""Blocks of FMUNet (MIS-FM): residual pre-activation convs, strided-conv downsampling, trilinear up + concat.

Ported from openmedlab/MIS-FM ``net/fmunet.py`` (Apache-2.0; Wang et al., arXiv 2306.16925), with PyMIC's He
initialisation (HiLab-git/PyMIC ``net/net_init.py``, Apache-2.0). Attribute names are MIS-FM's so its
checkpoints load by name. ``dim=2`` blocks work in-plane only (kernel 1x3x3, stride 1x2x2);
``res_mode`` picks the dims of the two finest levels: 0 isotropic (3, 3), 1 (2, 3), 2 (2, 2).
Tensors here are in MIS-FM's axis order ``(B, C, D, H, W)`` (see `.axes`).
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn

DIM0 = {0: 3, 1: 2, 2: 2}
DIM1 = {0: 3, 1: 3, 2: 2}
CONV_KERNEL = {2: (1, 3, 3), 3: 3}
CONV_PAD = {2: (0, 1, 1), 3: 1}
SCALE = {2: (1, 2, 2), 3: 2}


def level_dims(res_mode: int) -> List[int]:
    """Conv dim (2 or 3) of the five levels for ``res_mode``."""
    return [DIM0[res_mode], DIM1[res_mode], 3, 3, 3]


def norm_act_conv(cin: int, cout: int, dim: int, stride=1, kernel=None) -> nn.Sequential:
    """InstanceNorm3d(affine) -> LeakyReLU -> Conv3d (keys ``0``, ``2``)."""
    k = CONV_KERNEL[dim] if kernel is None else kernel
    pad = CONV_PAD[dim] if kernel is None else 0
    return nn.Sequential(nn.InstanceNorm3d(cin, affine=True), nn.LeakyReLU(),
                         nn.Conv3d(cin, cout, kernel_size=k, padding=pad, stride=stride))


class ResConv(nn.Module):
    """``depth`` residual units ``x + conv(dropout(lrelu(norm(x))))``, channels unchanged."""

    def __init__(self, channels: int, dim: int = 3, dropout: float = 0.0, depth: int = 2) -> None:
        super().__init__()
        self.conv_list = nn.ModuleList([nn.Sequential(
            nn.InstanceNorm3d(channels, affine=True), nn.LeakyReLU(), nn.Dropout(dropout),
            nn.Conv3d(channels, channels, kernel_size=CONV_KERNEL[dim], padding=CONV_PAD[dim])) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.conv_list:
            x = conv(x) + x
        return x


class DownSample(nn.Module):
    """Pre-activation strided conv (stride 2, or 1x2x2 when ``dim=2``): ``(B, Cin, S) -> (B, Cout, S/2)``."""

    def __init__(self, cin: int, cout: int, dim: int = 3) -> None:
        super().__init__()
        self.down = norm_act_conv(cin, cout, dim, stride=SCALE[dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(x)


class UpCatConv(nn.Module):
    """1x1 conv + trilinear upsampling of the coarse map, concatenation with the fine map, conv.

    ``x_l: (B, C1, S/2)`` coarse, ``x_h: (B, C2, S)`` fine -> ``(B, Cout, S)``.
    """

    def __init__(self, in_channels1: int, in_channels2: int, out_channels: int, dim: int = 3) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.InstanceNorm3d(in_channels1, affine=True), nn.LeakyReLU(),
            nn.Conv3d(in_channels1, in_channels2, kernel_size=1, padding=0),
            nn.Upsample(scale_factor=SCALE[dim], mode="trilinear", align_corners=True))
        self.conv = norm_act_conv(in_channels2 * 2, out_channels, dim)

    def forward(self, x_l: torch.Tensor, x_h: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x_h, self.up(x_l)], dim=1))


class Encoder(nn.Module):
    """Five residual levels joined by strided convs: ``x (C0) -> [x0 .. x4]`` (channels ``ft``)."""

    def __init__(self, ft: Sequence[int], res_mode: int = 0, dropout: float = 0.0, depth: int = 2) -> None:
        super().__init__()
        dims = level_dims(res_mode)
        for i in range(5):
            setattr(self, f"en_conv{i}", ResConv(ft[i], dims[i], dropout if i >= 2 else 0.0, depth))
        for i in range(4):
            setattr(self, f"down{i}", DownSample(ft[i], ft[i + 1], dims[i]))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = [self.en_conv0(x)]
        for i in range(1, 5):
            feats.append(getattr(self, f"en_conv{i}")(getattr(self, f"down{i - 1}")(feats[-1])))
        return feats


class Decoder(nn.Module):
    """``[x0 .. x4] -> [d0 .. d3]`` (d0 at full resolution); ``de_conv4`` refines the bottleneck first."""

    def __init__(self, ft: Sequence[int], res_mode: int = 0, dropout: float = 0.0, depth: int = 2) -> None:
        super().__init__()
        dims = level_dims(res_mode)
        for i in range(4):
            setattr(self, f"upcat{i}", UpCatConv(ft[i + 1], ft[i], ft[i], dims[i]))
        for i in range(5):
            setattr(self, f"de_conv{i}", ResConv(ft[i], dims[i], dropout if i >= 2 else 0.0, depth))

    def forward(self, feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        x = self.de_conv4(feats[4])
        outs = []
        for i in (3, 2, 1, 0):
            x = getattr(self, f"de_conv{i}")(getattr(self, f"upcat{i}")(x, feats[i]))
            outs.insert(0, x)
        return outs


def he_init(module: nn.Module, neg_slope: float = 1e-2) -> None:
    """PyMIC ``Initialization_He``: Kaiming-normal conv weights (LeakyReLU slope), zero biases."""
    if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=neg_slope)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
