"""The SwinUNETR decoder: MONAI's ``decoder5..decoder1`` (UnetrUpBlock) and a 1x1x1 ``out`` layer.

Wraps the blocks of the MONAI ``SwinUNETR(use_v2=True)`` the `swin_unetr` encoder was cut from (MONAI,
Apache-2.0; Hatamizadeh et al., 2022). VoCo fine-tunes exactly this decoder from scratch; VoComni checkpoints
carry it pretrained (21 classes), and ``out`` is re-initialised when the class count differs.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from ..registry import DECODERS


class SwinUNETRDecoder(nn.Module):
    """``[enc0, enc1, enc2, enc3, hidden3, dec4]`` (see `..backbones.swin_unetr`) -> logits ``(B, K, I, J, K)``."""

    def __init__(self, parts: dict, feature_size: int, num_classes: int) -> None:
        from monai.networks.blocks import UnetOutBlock

        super().__init__()
        for name, module in parts.items():
            setattr(self, name, module)
        self.out = UnetOutBlock(spatial_dims=3, in_channels=feature_size, out_channels=num_classes)

    def forward(self, feats: List[torch.Tensor]) -> torch.Tensor:
        enc0, enc1, enc2, enc3, hidden3, dec4 = feats
        dec3 = self.decoder5(dec4, hidden3)
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        dec0 = self.decoder2(dec1, enc1)
        return self.out(self.decoder1(dec0, enc0))


@DECODERS.register("swin_unetr")
def swin_unetr_decoder(encoder: nn.Module, num_classes: int) -> nn.Module:
    """SwinUNETR decoder for a `swin_unetr` encoder."""
    from ...errors import InputError

    if not hasattr(encoder, "take_decoder_parts"):
        raise InputError("the swin_unetr decoder needs the swin_unetr backbone; pick that backbone or another decoder")
    return SwinUNETRDecoder(encoder.take_decoder_parts(), encoder.feature_size, num_classes)
