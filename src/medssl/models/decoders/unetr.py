"""UNETR decoder over ViT intermediate layers, built from MONAI's UNETR blocks (Apache-2.0, wrapped).

Follows UNETR (Hatamizadeh et al., WACV 2022; MONAI ``networks.nets.UNETR``) and the 3DINO segmentation head
(feature size 32, ViT-L blocks 5/11/17/23 as skips): the four token grids at stride 16 are brought to strides
2, 4, 8 by transposed-conv stacks (``encoder2..4``), the last grid is decoded upwards (``decoder5..2``) with
those skips and a full-resolution conv branch on the raw input (``encoder1``), then a 1x1x1 output layer.

Multi-channel input (3DINO): the encoder gives ``C * D`` channels per grid (every input channel through the
shared ViT); ``channel_merge`` (1x1x1 conv + GELU, 3DINO's Linear merge) maps them back to ``D`` before the
UNETR blocks. These merge layers are new, so they live here, in the trained part, not in the frozen encoder.
3DINO's ``UNETRHead`` (``dinov2/eval/segmentation_3d/segmentation_heads.py`` @85bd443) builds the merge for one
input channel too (``Linear(D, D)`` + GELU); ``merge_single_channel=True`` does the same (the 3DINO catalog
entry sets it; networks without the setting keep identity merges for one channel, as packages written before).
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from ..registry import DECODERS


class UNETRDecoder(nn.Module):
    """``[x (B, C, I, J, K), 4 x (B, C*D, I/16, J/16, K/16)]`` -> logits ``(B, num_classes, I, J, K)``."""

    def __init__(self, in_channels: int, embed_dim: int, num_classes: int, feature_size: int = 16,
                 merge_single_channel: bool = False) -> None:
        from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock

        super().__init__()
        f, d = feature_size, embed_dim
        common = {"spatial_dims": 3, "kernel_size": 3, "norm_name": "instance", "res_block": True}
        merge = [nn.Sequential(nn.Conv3d(in_channels * d, d, 1), nn.GELU()) for _ in range(4)]
        use_merge = in_channels > 1 or merge_single_channel
        self.channel_merge = nn.ModuleList(merge) if use_merge else nn.ModuleList([nn.Identity()] * 4)
        self.encoder1 = UnetrBasicBlock(in_channels=in_channels, out_channels=f, stride=1, **common)
        self.encoder2 = UnetrPrUpBlock(in_channels=d, out_channels=2 * f, num_layer=2, stride=1,
                                       upsample_kernel_size=2, conv_block=True, **common)
        self.encoder3 = UnetrPrUpBlock(in_channels=d, out_channels=4 * f, num_layer=1, stride=1,
                                       upsample_kernel_size=2, conv_block=True, **common)
        self.encoder4 = UnetrPrUpBlock(in_channels=d, out_channels=8 * f, num_layer=0, stride=1,
                                       upsample_kernel_size=2, conv_block=True, **common)
        self.decoder5 = UnetrUpBlock(in_channels=d, out_channels=8 * f, upsample_kernel_size=2, **common)
        self.decoder4 = UnetrUpBlock(in_channels=8 * f, out_channels=4 * f, upsample_kernel_size=2, **common)
        self.decoder3 = UnetrUpBlock(in_channels=4 * f, out_channels=2 * f, upsample_kernel_size=2, **common)
        self.decoder2 = UnetrUpBlock(in_channels=2 * f, out_channels=f, upsample_kernel_size=2, **common)
        self.out = UnetOutBlock(spatial_dims=3, in_channels=f, out_channels=num_classes)

    def forward(self, feats: List[torch.Tensor]) -> torch.Tensor:
        x, grids = feats[0], [m(g) for m, g in zip(self.channel_merge, feats[1:])]
        enc1, enc2 = self.encoder1(x), self.encoder2(grids[0])
        enc3, enc4 = self.encoder3(grids[1]), self.encoder4(grids[2])
        dec3 = self.decoder5(grids[3], enc4)
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        return self.out(self.decoder2(dec1, enc1))


@DECODERS.register("unetr")
def unetr_decoder(encoder: nn.Module, num_classes: int, feature_size: int = 16,
                  merge_single_channel: bool = False) -> nn.Module:
    """UNETR decoder for a `vit3d` encoder with patch size 16 and four intermediate layers."""
    from ...errors import InputError

    if getattr(encoder, "patch_size", None) != 16 or len(getattr(encoder, "out_indices", [])) != 4:
        raise InputError("the unetr decoder needs a ViT encoder with patch size 16 and four out_indices; "
                         "use a vit3d preset (test, B, L)")
    return UNETRDecoder(encoder.in_channels, encoder.embed_dim, num_classes, feature_size, merge_single_channel)
