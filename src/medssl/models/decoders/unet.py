"""The nnU-Net U-Net decoder (`dynamic_network_architectures` ``UNetDecoder``) over a ResEnc/PlainConv encoder.

Transposed-conv upsampling, skip concatenation, ``n_conv_per_stage`` conv blocks per stage and a 1x1 output
layer; deep supervision off. Built fresh for fine-tuning, as nnssl does (only encoder weights are pretrained).
"""
from __future__ import annotations

from torch import nn

from ..registry import DECODERS


@DECODERS.register("unet")
def unet_decoder(encoder: nn.Module, num_classes: int, n_conv_per_stage: int = 1) -> nn.Module:
    """Features ``[(B, F_s, ...)]`` -> logits ``(B, num_classes, I, J, K)``."""
    from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder

    n_stages = len(encoder.output_channels)
    return UNetDecoder(encoder, num_classes, [n_conv_per_stage] * (n_stages - 1), deep_supervision=False)
