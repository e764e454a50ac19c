"""Architecture arguments read from a converted checkpoint (for a file given without a catalog id).

Each function takes a state dict keyed like MedSSL's network (the output of a converter) and returns the
backbone keyword arguments that reproduce its tensor shapes; what shapes cannot tell (ViT head count, ResEnc
strides, PCT-Net resolution mode) takes the released configuration (heads of 64 channels, strides 1,2,2...,
resolution mode 1). Also reads the nnssl adaptation plan stored in nnssl checkpoints into plan defaults.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

import torch

Tensors = Dict[str, torch.Tensor]


def _count(sd: Tensors, pattern: str) -> int:
    """Number of distinct indices ``N`` in keys matching ``pattern`` (a regex with one ``(\\d+)`` group)."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [rx.match(k)] if m})


def _window(table_rows: int) -> int:
    """Window side ``w`` of a relative-position table with ``(2w-1)^3`` rows."""
    return (round(table_rows ** (1.0 / 3.0)) + 1) // 2


def infer_vit3d(sd: Tensors) -> Dict[str, Any]:
    """ViT: width/patch from the patch embedding, depth from the blocks, grid from pos_embed, 64-d heads."""
    w = sd["encoder.patch_embed.proj.weight"]
    dim, patch = int(w.shape[0]), int(w.shape[2])
    depth = _count(sd, r"^encoder\.blocks\.(\d+)\.")
    grid = round((sd["encoder.pos_embed"].shape[1] - 1) ** (1.0 / 3.0))
    hidden = int(sd["encoder.blocks.0.mlp.fc1.weight"].shape[0])
    return {"embed_dim": dim, "patch_size": patch, "depth": depth, "num_heads": max(1, dim // 64),
            "img_size": grid * patch, "mlp_ratio": hidden / dim,
            "init_values": 1e-5 if "encoder.blocks.0.ls1.gamma" in sd else None,
            "out_indices": [(k + 1) * depth // 4 - 1 for k in range(4)]}


def infer_resenc(sd: Tensors) -> Dict[str, Any]:
    """ResEnc: widths, blocks and kernels per stage; strides 1, 2, 2, ... (not visible in weights)."""
    n = _count(sd, r"^encoder\.stages\.(\d+)\.")
    feats = [int(sd[f"encoder.stages.{s}.blocks.0.conv2.conv.weight"].shape[0]) for s in range(n)]
    blocks = [_count(sd, rf"^encoder\.stages\.{s}\.blocks\.(\d+)\.") for s in range(n)]
    kernels = [int(sd[f"encoder.stages.{s}.blocks.0.conv2.conv.weight"].shape[-1]) for s in range(n)]
    return {"features_per_stage": feats, "n_blocks_per_stage": blocks, "kernel_sizes": kernels,
            "strides": [1] + [2] * (n - 1), "conv_bias": "encoder.stem.convs.0.conv.bias" in sd}


def infer_swin_unetr(sd: Tensors) -> Dict[str, Any]:
    """SwinUNETR: feature size, blocks and heads per stage, window from the bias-table rows."""
    feature = int(sd["encoder.swinViT.patch_embed.proj.weight"].shape[0])
    depths = [_count(sd, rf"^encoder\.swinViT\.layers{i}\.0\.blocks\.(\d+)\.") for i in range(1, 5)]
    tables = [sd[f"encoder.swinViT.layers{i}.0.blocks.0.attn.relative_position_bias_table"] for i in range(1, 5)]
    return {"feature_size": feature, "depths": depths, "num_heads": [int(t.shape[1]) for t in tables],
            "window_size": _window(int(tables[0].shape[0]))}


def infer_pctnet(sd: Tensors) -> Dict[str, Any]:
    """PCT-Net: channels per level, Swin depths/heads/windows (resolution mode: the released 1)."""
    e, p = "encoder.embeddings.0.", "encoder.pyramid_ct."
    feats = [sd[e + "proj.weight"], sd[e + "down1.conv.2.weight"], sd[e + "down2.conv.2.weight"],
             sd[p + "down3.conv.2.weight"], sd[p + "down4.conv.2.weight"]]
    levels = ("convtrans_e2", "convtrans_e3", "convtrans_e4")
    tables = [sd[f"{p}{lv}.trans.blocks.0.attn.relative_position_bias_table"] for lv in levels]
    return {"feature_chns": [int(t.shape[0]) for t in feats],
            "depths": [_count(sd, rf"^{re.escape(p)}{lv}\.trans\.blocks\.(\d+)\.") for lv in levels],
            "num_heads": [int(t.shape[1]) for t in tables], "window_sizes": [_window(int(t.shape[0])) for t in tables]}


def infer_fmunet(sd: Tensors) -> Dict[str, Any]:
    """FMUNet: channels, residual depth, and res_mode from the in-plane (1x3x3) kernels."""
    feats = [int(sd[f"encoder.encoder.en_conv{i}.conv_list.0.3.weight"].shape[0]) for i in range(5)]
    depth = _count(sd, r"^encoder\.encoder\.en_conv0\.conv_list\.(\d+)\.")
    flat0 = sd["encoder.project.weight"].shape[2] == 1
    flat1 = sd["encoder.encoder.down1.down.2.weight"].shape[2] == 1
    return {"feature_chns": feats, "depth": depth, "res_mode": 2 if flat1 else 1 if flat0 else 0}


INFER = {"vit3d": infer_vit3d, "resenc": infer_resenc, "swin_unetr": infer_swin_unetr, "pctnet": infer_pctnet,
         "fmunet": infer_fmunet}

NNSSL_NORM = {"ZScoreNormalization": "zscore", "NoNormalization": "none"}


def nnssl_plan_defaults(ckpt: Any) -> Dict[str, Any]:
    """Spacing, normalisation and patch size from an nnssl checkpoint's ``nnssl_adaptation_plan``.

    nnU-Net/nnssl plans give spacing and patch in SimpleITK array order (k, j, i); they are reversed into
    MedSSL's (i, j, k). The configuration name is not assumed: the first one is used (as TaWald/nnUNet's
    ``like_nnssl`` does). Returns only the fields it could read.
    """
    plan = ckpt.get("nnssl_adaptation_plan") if isinstance(ckpt, dict) else None
    configs = plan.get("pretrain_plan", {}).get("configurations", {}) if isinstance(plan, dict) else {}
    cfg = next(iter(configs.values()), None) if isinstance(configs, dict) else None
    if not isinstance(cfg, dict):
        return {}
    out: Dict[str, Any] = {}
    spacing = _triple(cfg.get("spacing"), float)
    if spacing:
        out["spacing"] = spacing[::-1]
    patch = _triple(plan.get("recommended_downstream_patchsize") or cfg.get("patch_size"), int)
    if patch:
        out["patch_size"] = patch[::-1]
    norm = _nnssl_norm(cfg)
    if norm:
        out["normalization"] = [norm]
    return out


def _nnssl_norm(cfg: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    schemes, masks = cfg.get("normalization_schemes") or [], cfg.get("use_mask_for_norm") or [False]
    scheme = NNSSL_NORM.get(schemes[0]) if schemes else None
    if scheme == "zscore":
        return {"scheme": "zscore", "params": {"per_image": True, "nonzero": bool(masks[0])}}
    return {"scheme": scheme, "params": {}} if scheme else None


def _triple(v: Any, typ: type) -> Optional[List]:
    try:
        out = [typ(x) for x in v]
    except (TypeError, ValueError):
        return None
    return out if len(out) == 3 and all(x > 0 for x in out) else None
