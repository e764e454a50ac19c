"""Registries of network parts. A backbone factory is ``(in_channels, **kwargs) -> nn.Module`` returning an
encoder that maps ``x: (B, C, I, J, K)`` to a list of feature maps (highest resolution first) and exposes
``in_channels``, ``feature_channels``, ``feature_strides`` and ``size_divisor``; it also carries
``resolve_kwargs(**kwargs) -> dict`` (presets expanded, so plans store explicit arguments) and says whether it
is a token model (``tokens``: SSL methods then mask tokens instead of voxels, and inputs need only be
multiples of the patch size). A decoder factory
is ``(encoder, num_classes, **kwargs) -> nn.Module`` mapping the feature list to logits ``(B, K, I, J, K)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..registry import Registry


Tensors = Dict[str, torch.Tensor]


@dataclass(frozen=True)
class CheckpointFormat:
    """How a family's released files are read (`medssl.hub` derives its converter, detection and
    architecture-inference tables from these; see `.checkpoint_keys`).

    ``detect(keys)``: the file's tensor keys (``module.``/``_orig_mod.`` removed) are this family's;
    ``template(converted)``: the catalog entry a bare file of this family is read like; ``input_keys``: network
    keys whose second dimension is the input channel count; ``fresh_input_layer``: for another channel count those
    layers start fresh (VoCo's rule) instead of being repeated over the channels and scaled (nnssl's rule).
    """

    name: str  # the converter id catalog entries name
    convert: Callable[[Tensors], Tensors]
    detect: Callable[[List[str]], bool]
    infer_arch: Callable[[Tensors], Dict[str, Any]]
    template: Callable[[Tensors], str]
    input_keys: Tuple[str, ...] = ()
    fresh_input_layer: bool = False


@dataclass(frozen=True)
class BackboneFamily:
    """A registered backbone: factory, preset expansion, default decoder, and how its released files are read.

    One file per family (``models/backbones/<name>.py``) declares all of it; every other list (converters,
    file detection, architecture inference, catalog families, default decoders, token models) is derived."""

    build: Callable[..., nn.Module]
    resolve_kwargs: Callable[..., Dict[str, Any]]
    description: str = ""
    size_divisor: Optional[Callable[..., int]] = None  # (**kwargs) -> divisor, when building is too costly
    tokens: bool = False  # a token model (ViT: patch tokens, one resolution), not a dense convolutional pyramid
    default_decoder: str = "unet"
    checkpoint: Optional[CheckpointFormat] = None


BACKBONES: Registry[BackboneFamily] = Registry("backbone")
DECODERS: Registry[Callable[..., nn.Module]] = Registry("decoder")
