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
from typing import Any, Callable, Dict, Optional

from torch import nn

from ..registry import Registry


@dataclass(frozen=True)
class BackboneFamily:
    """A registered backbone: its factory and the function that expands presets into explicit kwargs."""

    build: Callable[..., nn.Module]
    resolve_kwargs: Callable[..., Dict[str, Any]]
    description: str = ""
    size_divisor: Optional[Callable[..., int]] = None  # (**kwargs) -> divisor, when building is too costly
    tokens: bool = False  # a token model (ViT: patch tokens, one resolution), not a dense convolutional pyramid


BACKBONES: Registry[BackboneFamily] = Registry("backbone")
DECODERS: Registry[Callable[..., nn.Module]] = Registry("decoder")
