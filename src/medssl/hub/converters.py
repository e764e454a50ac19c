"""Checkpoint converters: released files of the seed systems -> state dicts keyed like MedSSL's networks.

A converter is a pure function ``(tensor dict of the file) -> tensor dict keyed like SegmentationNet``
(timm's ``checkpoint_filter_fn`` idea): it only renames and selects, never copies or changes values, so the
loader can tell which tensors of the file were used. Keys a converter does not know are passed through
unchanged; they are reported as unused and checked against the catalog's ``allowed_unexpected``.

Formats (key schemes from the fingerprints in ``shared/fingerprints``):

- ``3dino``: ``{"teacher": {"backbone.<ViT key>", "dino_head.*", "ibot_head.*"}}``; blocks stored as
  ``blocks.{chunk}.{i}`` (DINOv2 ``block_chunks=4``) or ``blocks.{i}`` -> ``encoder.blocks.{i}``.
- ``nnssl``: ``{"network_weights": ResidualEncoderUNet state}``; only ``encoder.stem``/``encoder.stages`` are
  taken (nnssl fine-tuning builds the decoder fresh); names already equal MedSSL's.
- ``voco``: a flat SwinUNETR state (``swinViT.*``, ``encoder1..4/10.*``, optionally ``decoder1..5.*``, ``out.*``);
  ``module.``/``backbone.`` stripped, ``swin_vit`` renamed (VoCo's own loader rules).
- ``misfm_pctnet`` / ``misfm_fmunet``: PyMIC ``{"model_state_dict": ...}``; split into ``encoder.``/``decoder.``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch

Tensors = Dict[str, torch.Tensor]
WRAPPERS = ("teacher", "network_weights", "model_state_dict", "state_dict", "model", "net", "student")


def is_tensor_dict(obj: Any) -> bool:
    """A non-empty mapping whose values are all tensors."""
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def find_state_dict(obj: Any) -> Optional[Tensors]:
    """The tensor dict inside a loaded checkpoint: the object itself or the first known wrapper holding one."""
    if is_tensor_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in WRAPPERS:
            if is_tensor_dict(obj.get(key)):
                return dict(obj[key])
    return None


def strip_prefix(key: str, prefixes: Tuple[str, ...]) -> str:
    """Remove any leading ``prefixes`` (repeatedly; prefixes only, never inner substrings)."""
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


# ----------------------------------------------------------------------------------------------- converters
VIT_TOP = {"cls_token", "pos_embed", "mask_token", "patch_embed", "blocks", "norm"}
_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.")


def convert_3dino(sd: Tensors) -> Tensors:
    """3DINO teacher (or a bare DINOv2-style 3-D ViT) -> ``encoder.*`` of the vit3d backbone."""
    out: Tensors = {}
    for key, value in sd.items():
        k = strip_prefix(key, ("module.", "_orig_mod."))
        if k.startswith("backbone.") or k.split(".")[0] in VIT_TOP:
            k = _CHUNKED.sub(r"blocks.\1.", strip_prefix(k, ("backbone.",)))
            k = "encoder." + k
        out[k] = value
    return out


def convert_nnssl(sd: Tensors) -> Tensors:
    """nnssl ``network_weights`` -> the ResEnc encoder keys (identical names); the rest is left unused."""
    out: Tensors = {}
    for key, value in sd.items():
        k = strip_prefix(key, ("module.", "_orig_mod."))
        if k.startswith(("encoder.stem.", "encoder.stages.")):
            out[k] = value
    return out


SWIN_ENCODER = {"swinViT", "encoder1", "encoder2", "encoder3", "encoder4", "encoder10"}
SWIN_DECODER = {"decoder1", "decoder2", "decoder3", "decoder4", "decoder5", "out"}


def convert_voco(sd: Tensors) -> Tensors:
    """VoCo SSL-head / VoComni SwinUNETR state -> ``encoder.*`` (swinViT, encoder1-4, 10) and ``decoder.*``."""
    out: Tensors = {}
    for key, value in sd.items():
        k = strip_prefix(key, ("module.", "backbone."))
        k = "swinViT" + k[len("swin_vit"):] if k.startswith("swin_vit.") else k
        head = k.split(".")[0]
        k = "encoder." + k if head in SWIN_ENCODER else "decoder." + k if head in SWIN_DECODER else k
        out[k] = value
    return out


PCT_ENCODER = ("embeddings.", "pyramid_ct.down3.", "pyramid_ct.down4.", "pyramid_ct.convtrans_e")
PCT_DECODER = ("pred_heads.", "pyramid_ct.")


def convert_misfm_pctnet(sd: Tensors) -> Tensors:
    """MIS-FM PCTNet ``model_state_dict`` -> ``encoder.`` (embeddings, pyramid down/e*) / ``decoder.`` (rest)."""
    out: Tensors = {}
    for key, value in sd.items():
        k = strip_prefix(key, ("module.",))
        k = "encoder." + k if k.startswith(PCT_ENCODER) else "decoder." + k if k.startswith(PCT_DECODER) else k
        out[k] = value
    return out


def convert_misfm_fmunet(sd: Tensors) -> Tensors:
    """MIS-FM FMUNet ``model_state_dict`` -> ``encoder.`` (project, encoder) / ``decoder.`` (decoder, out_layers)."""
    out: Tensors = {}
    for key, value in sd.items():
        k = strip_prefix(key, ("module.",))
        head = k.split(".")[0]
        k = "encoder." + k if head in ("project", "encoder") else "decoder." + k if head in ("decoder", "out_layers") else k
        out[k] = value
    return out


CONVERTERS: Dict[str, Callable[[Tensors], Tensors]] = {
    "3dino": convert_3dino, "nnssl": convert_nnssl, "voco": convert_voco,
    "misfm_pctnet": convert_misfm_pctnet, "misfm_fmunet": convert_misfm_fmunet,
}


# ----------------------------------------------------------------------------------------------- detection
@dataclass(frozen=True)
class FamilyFormat:
    """How a family's files are read: converter, the catalog entry a bare file is treated like, and the
    network keys whose second dimension is the number of input channels (repeat-and-scale targets)."""

    converter: str
    template_id: str
    input_keys: Tuple[str, ...] = ()
    fresh_input_layer: bool = False  # other channel counts: the input layer starts fresh (VoCo's rule)


FORMATS: Dict[str, FamilyFormat] = {
    "vit3d": FamilyFormat("3dino", "3dino_vit_l"),  # multi-channel: shared one-channel encoder (3DINO)
    "resenc": FamilyFormat("nnssl", "openmind_resencl_mae", (
        "encoder.stem.convs.0.conv.weight", "encoder.stem.convs.0.all_modules.0.weight")),
    "swin_unetr": FamilyFormat("voco", "voco_b", (
        "encoder.swinViT.patch_embed.proj.weight", "encoder.encoder1.layer.conv1.conv.weight",
        "encoder.encoder1.layer.conv3.conv.weight"), fresh_input_layer=True),
    "pctnet": FamilyFormat("misfm_pctnet", "misfm_pctnet_ct10k", tuple(
        f"encoder.embeddings.{m}.proj.weight" for m in range(3))),
    "fmunet": FamilyFormat("misfm_fmunet", "misfm_fmunet_abd1k", ("encoder.project.weight",)),
}
_VIT_QKV = re.compile(r"^(backbone\.)?blocks\.\d+\.(\d+\.)?attn\.qkv\.weight$")


def detect_family(sd: Tensors) -> Optional[str]:
    """The backbone family whose released files have these keys, or None."""
    keys = [strip_prefix(k, ("module.", "_orig_mod.")) for k in sd]
    plain = [strip_prefix(k, ("backbone.",)) for k in keys]
    if any(_VIT_QKV.match(k) for k in keys) and any(k.endswith("pos_embed") for k in keys):
        return "vit3d"
    if "encoder.stem.convs.0.conv.weight" in keys:
        return "resenc"
    if any(k.startswith(("swinViT.", "swin_vit.")) for k in plain):
        return "swin_unetr"
    if any(k.startswith("pyramid_ct.") for k in keys) and any(k.startswith("embeddings.") for k in keys):
        return "pctnet"
    if "project.weight" in keys and any(k.startswith("encoder.en_conv") for k in keys):
        return "fmunet"
    return None


def detect_voco_variant(net_sd: Tensors) -> str:
    """``voco_<size>`` or ``vocomni_<size>`` (decoder present) from a converted SwinUNETR state."""
    f = int(net_sd["encoder.swinViT.patch_embed.proj.weight"].shape[0])
    size = {48: "b", 96: "l", 192: "h"}.get(f, "b")
    return ("vocomni_" if any(k.startswith("decoder.") for k in net_sd) else "voco_") + size
