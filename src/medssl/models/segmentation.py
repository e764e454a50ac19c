"""SegmentationNet = backbone (encoder) + decoder, built from a plan's `ArchSpec`.

The attribute names ``encoder`` and ``decoder`` are part of the checkpoint format: with the ResEnc backbone
and the U-Net decoder the state-dict keys equal those of dynamic-network-architectures'
``ResidualEncoderUNet`` (and so of nnU-Net / nnssl checkpoints).
"""
from __future__ import annotations

import contextlib
from typing import Dict, List

import torch
from torch import nn

from ..errors import InputError
from ..plan import ArchSpec, Plan
from .no_init import initialisation_skipped
from .registry import BACKBONES, DECODERS


class SegmentationNet(nn.Module):
    """``x: (B, C, I, J, K)`` -> logits ``(B, num_classes, I, J, K)``."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    @property
    def size_divisor(self) -> int:
        return int(getattr(self.encoder, "size_divisor", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def encoder_parameters(self) -> List[nn.Parameter]:
        return list(self.encoder.parameters())


def resolve_arch(backbone: str, decoder: str, backbone_kwargs: Dict | None = None,
                 decoder_kwargs: Dict | None = None) -> ArchSpec:
    """An `ArchSpec` whose backbone kwargs have presets expanded into explicit arguments."""
    family = BACKBONES.get(backbone)
    DECODERS.get(decoder)
    return ArchSpec(backbone, decoder, family.resolve_kwargs(**(backbone_kwargs or {})), dict(decoder_kwargs or {}))


def build_network(arch: ArchSpec, in_channels: int, num_classes: int) -> SegmentationNet:
    """Instantiate the network described by ``arch`` (random weights)."""
    family = BACKBONES.get(arch.backbone)
    encoder = family.build(in_channels, **arch.backbone_kwargs)
    decoder = DECODERS.get(arch.decoder)(encoder, num_classes, **arch.decoder_kwargs)
    return SegmentationNet(encoder, decoder)


def build_from_plan(plan: Plan, initialise: bool = True) -> SegmentationNet:
    """The plan's network with random weights; checks that the patch size fits the network. ``initialise=False``:
    parameters left as allocated, for a caller that loads every one of them next (`no_init`; `load_package`)."""
    with contextlib.nullcontext() if initialise else initialisation_skipped():
        net = build_network(plan.architecture, plan.num_channels, plan.num_classes)
    div = net.size_divisor
    if any(p % div for p in plan.patch_size):
        raise InputError(
            f"patch size {list(plan.patch_size)} is not divisible by {div}, which the {plan.architecture.backbone} "
            f"backbone needs; use multiples of {div}"
        )
    return net
