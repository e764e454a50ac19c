"""What a checkpoint file says about its architecture and preprocessing (for a file given without a catalog id).

`infer_arch` asks the backbone family (its ``CheckpointFormat.infer_arch`` in ``models/backbones/<family>.py``)
for the keyword arguments that reproduce the converted tensors' shapes; what shapes cannot tell (ViT head count,
ResEnc strides, PCT-Net resolution mode) takes the released configuration. `nnssl_plan_defaults` reads the
nnssl adaptation plan stored in nnssl checkpoints into plan defaults.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

Tensors = Dict[str, torch.Tensor]


def infer_arch(family: str, converted: Tensors) -> Dict[str, Any]:
    """The backbone kwargs that reproduce a converted checkpoint's shapes (the family's ``infer_arch``)."""
    from .converters import FORMATS

    return FORMATS[family].infer_arch(converted)


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
