"""Optimiser parameter groups: `split_decay` (weights decayed, 1-D parameters such as norms and biases not, as
dinov2 and timm do) for every method, and layer-wise learning-rate decay for ViT students (BEiT, Bao et al., ICLR
2022; as DINOv2 ``dinov2/utils/param_groups.py`` assigns it, Apache-2.0).

Layer ids: position/class/mask tokens and the patch embedding are layer 0, block ``i`` is layer ``i + 1``,
everything after the blocks (final norm, heads) is layer ``depth + 1``; the LR multiplier is
``decay ** (depth + 1 - id)``, times ``patch_embed_lr_mult`` for the patch embedding. Biases, norms and
LayerScale ``gamma`` get no weight decay. Parameters with equal multipliers share one group.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Tuple

from torch import nn

EMBEDDINGS = ("pos_embed", "patch_embed", "mask_token", "cls_token")


def vit_layer_id(name: str, depth: int) -> int:
    """Layer id of parameter ``name`` of a ViT backbone (names relative to the backbone)."""
    if any(name.startswith(e) for e in EMBEDDINGS):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def layerwise_groups(named: Iterable[Tuple[str, nn.Parameter]], depth: int, lr: float, weight_decay: float,
                     layer_decay: float, patch_embed_lr_mult: float, backbone_prefix: str = "") -> List[Dict[str, Any]]:
    """Groups ``{"params", "lr", "weight_decay"}``; names under ``backbone_prefix`` get layer-wise decay,
    others (heads) the full LR; a top-level ``mask_token`` counts as layer 0."""
    fused: Dict[Tuple[float, float], Dict[str, Any]] = {}
    for name, p in named:
        if not p.requires_grad:
            continue
        inner = name[len(backbone_prefix):] if name.startswith(backbone_prefix) else None
        if inner is None and name.startswith(EMBEDDINGS):  # a mask token kept beside the backbone
            inner = name
        layer = vit_layer_id(inner, depth) if inner is not None else depth + 1
        lr_mult = layer_decay ** (depth + 1 - layer)
        if inner is not None and inner.startswith("patch_embed"):
            lr_mult *= patch_embed_lr_mult
        wd_mult = 0.0 if name.endswith(".bias") or "norm" in name or "gamma" in name else 1.0
        group = fused.setdefault((lr_mult, wd_mult), {"params": [], "lr": lr * lr_mult,
                                                      "weight_decay": weight_decay * wd_mult})
        group["params"].append(p)
    return list(fused.values())


def split_decay(named_params: Iterable, weight_decay: float) -> List[Dict[str, Any]]:
    """Two groups: weights with ``weight_decay``, 1-D parameters without."""
    decay, no_decay = [], []
    for _, p in named_params:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0})
            if g["params"]]
