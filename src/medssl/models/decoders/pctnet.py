"""PCT-Net decoder (MIS-FM): decoder side of ``pyramid_ct`` plus the three resolution-mode prediction heads.

Ported from openmedlab/MIS-FM ``net/pct_net.py`` (Apache-2.0; Wang et al., arXiv 2306.16925). Volume Fusion
pretrains encoder *and* decoder, so these weights are loaded too (all tensors whose name and shape match,
as PyMIC does); the class-count-dependent output convs (``out_conv*``) are re-initialised when the number of
classes differs from the checkpoint's 5. Only ``pred_heads[resolution_mode].out_conv0`` produces logits;
MIS-FM's deep-supervision outputs (``out_conv1``, ``pyramid_ct.out_conv2/3``) are kept for loading only.
Like the encoder it runs in MIS-FM's (D, H, W) axis order and returns logits in (I, J, K) order.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn

from ..layers.axes import reverse_spatial
from ..layers.pct import MODE_DIMS, MODE_SCALE, ConvLayer, ConvTransBlock, PredictionHead, UpCatBlock
from ..registry import DECODERS


class PyramidDecoder(nn.Module):
    """Decoder side of MIS-FM ``PyramidConvTrans``: ``(e2, e3, e4) -> d2 (C2, same grid as e2)``."""

    def __init__(self, ft: Sequence[int], grid: Sequence[int], dropout: Sequence[float], depths: Sequence[int],
                 heads: Sequence[int], windows: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.up3 = UpCatBlock(ft[0], ft[1], 3, 3)
        self.up4 = UpCatBlock(ft[1], ft[2], 3, 3)
        self.convtrans_d2 = ConvTransBlock(ft[0], list(grid), depths[0], heads[0], windows[0], dropout[0], dropout[0])
        self.convtrans_d3 = ConvTransBlock(ft[1], [g // 2 for g in grid], depths[1], heads[1], windows[1],
                                           dropout[1], dropout[1])
        self.out_conv2 = ConvLayer(ft[0], num_classes)
        self.out_conv3 = ConvLayer(ft[1], num_classes)

    def forward(self, e2: torch.Tensor, e3: torch.Tensor, e4: torch.Tensor) -> torch.Tensor:
        d3 = self.convtrans_d3(self.up4(e3, e4))
        return self.convtrans_d2(self.up3(e2, d3))


class PCTNetDecoder(nn.Module):
    """``[x0, x1, e2, e3, e4]`` (see `..backbones.pctnet`) -> logits ``(B, num_classes, I, J, K)``."""

    def __init__(self, config: dict, num_classes: int) -> None:
        super().__init__()
        ft, dropout, mode = config["feature_chns"], config["dropout"], config["resolution_mode"]
        grid = [s // m for s, m in zip(config["input_size"], MODE_SCALE[mode])]
        self.pyramid_ct = PyramidDecoder(ft[2:], grid, dropout[2:], config["depths"], config["num_heads"],
                                         config["window_sizes"], num_classes)
        self.pred_heads = nn.ModuleList(
            [PredictionHead(ft[:3], *MODE_DIMS[m], dropout[:3], num_classes) for m in (0, 1, 2)])
        self.resolution_mode = mode

    def forward(self, feats: List[torch.Tensor]) -> torch.Tensor:
        x0, x1, e2, e3, e4 = [reverse_spatial(f) for f in feats]
        out = self.pred_heads[self.resolution_mode](x0, x1, self.pyramid_ct(e2, e3, e4))
        return reverse_spatial(out).contiguous()


@DECODERS.register("pctnet")
def pctnet_decoder(encoder: nn.Module, num_classes: int) -> nn.Module:
    """PCT-Net decoder for a `pctnet` encoder (same feature channels, windows and resolution mode)."""
    from ...errors import InputError

    config = getattr(encoder, "config", None)
    if not isinstance(config, dict) or "resolution_mode" not in config or "window_sizes" not in config:
        raise InputError("the pctnet decoder needs the pctnet backbone; pick that backbone or another decoder")
    return PCTNetDecoder(config, num_classes)
