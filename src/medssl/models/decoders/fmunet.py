"""FMUNet decoder (MIS-FM): residual up-path with trilinear upsampling and the output layers.

Ported from openmedlab/MIS-FM ``net/fmunet.py`` (Apache-2.0; Wang et al., arXiv 2306.16925). Volume Fusion
pretrains the decoder too, so it is loaded with the encoder (name + shape match, as PyMIC does);
``out_layers.*.2`` depend on the class count and are re-initialised when it differs from the checkpoint's 5.
Logits come from ``out_layers[0]``; ``out_layers[1..3]`` (MIS-FM deep supervision) are kept for loading only.
Like the encoder it runs in MIS-FM's (D, H, W) axis order and returns logits in (I, J, K) order.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from ..layers.axes import reverse_spatial
from ..layers.fmunet import Decoder, he_init, level_dims, norm_act_conv
from ..registry import DECODERS


class FMUNetDecoder(nn.Module):
    """``[x0 .. x4]`` (see `..backbones.fmunet`) -> logits ``(B, num_classes, I, J, K)``."""

    def __init__(self, config: dict, num_classes: int) -> None:
        super().__init__()
        ft, res_mode = config["feature_chns"], config["res_mode"]
        self.decoder = Decoder(ft, res_mode, config["dropout"], config["depth"])
        dims = level_dims(res_mode)
        self.out_layers = nn.ModuleList([norm_act_conv(ft[i], num_classes, dims[i]) for i in range(4)])
        self.apply(he_init)

    def forward(self, feats: List[torch.Tensor]) -> torch.Tensor:
        out = self.out_layers[0](self.decoder([reverse_spatial(f) for f in feats])[0])
        return reverse_spatial(out).contiguous()


@DECODERS.register("fmunet")
def fmunet_decoder(encoder: nn.Module, num_classes: int) -> nn.Module:
    """FMUNet decoder for an `fmunet` encoder."""
    from ...errors import InputError

    config = getattr(encoder, "config", None)
    if not isinstance(config, dict) or "res_mode" not in config:
        raise InputError("the fmunet decoder needs the fmunet backbone; pick that backbone or another decoder")
    return FMUNetDecoder(config, num_classes)
