"""Swin UNETR v2 encoder (Hatamizadeh et al., 2022; He et al., "SwinUNETR-V2", MICCAI 2023), as used by VoCo.

A wrapper, not a copy: MONAI's ``SwinUNETR(use_v2=True)`` (Apache-2.0) is constructed and its submodules are
re-homed. The encoder holds ``swinViT`` and the conv blocks ``encoder1..4`` and ``encoder10`` (all of which VoCo
pretrains); the decoder (`..decoders.swin_unetr`) takes ``decoder5..1`` and a new ``out``. Attribute names
are MONAI's, so VoCo / VoComni checkpoints map onto ``encoder.<key>`` / ``decoder.<key>`` by prefix only.

Features for ``x: (B, C, I, J, K)`` with feature size F (MONAI ``SwinUNETR.forward``):
``[enc0 (F, /1), enc1 (F, /2), enc2 (2F, /4), enc3 (4F, /8), hidden3 (8F, /16), dec4 (16F, /32)]``.
Every side must be a multiple of 32. Presets (VoCo): ``B`` F=48, ``L`` F=96, ``H`` F=192; ``test`` F=12.

``patch_merging`` picks the downsampling layout: ``"monai-1.5"`` (MONAI >= 1.5: each 2x2x2 sub-voxel once, the
default for new networks) or ``"monai-1.3"`` (the layout VoCo / VoComni were trained with, see
`..layers.swin_merging`); the weights' catalog entry sets it, so the same file computes the same features on any
installed MONAI.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch
from torch import nn

from ..checkpoint_keys import Tensors, count_indices, strip_prefix, window_side
from ..registry import BACKBONES, BackboneFamily, CheckpointFormat

PRESETS: Dict[str, Dict[str, Any]] = {
    "test": {"feature_size": 12}, "B": {"feature_size": 48}, "L": {"feature_size": 96}, "H": {"feature_size": 192},
}
DEFAULTS: Dict[str, Any] = {"depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24], "window_size": 7,
                            "drop_path_rate": 0.0, "use_checkpoint": False, "patch_merging": "monai-1.5"}
PATCH_MERGING = ("monai-1.5", "monai-1.3")
DECODER_PARTS = ("decoder5", "decoder4", "decoder3", "decoder2", "decoder1")


def monai_swin_unetr(in_channels: int, feature_size: int, depths, num_heads, window_size: int,
                     drop_path_rate: float = 0.0, use_checkpoint: bool = False,
                     patch_merging: str = "monai-1.5") -> nn.Module:
    """MONAI ``SwinUNETR(use_v2=True)`` with VoCo's settings (1 output channel; ``out`` is replaced later)."""
    from monai.networks.nets import SwinUNETR

    from ..layers.swin_merging import PatchMergingMonai13

    downsample = PatchMergingMonai13 if patch_merging == "monai-1.3" else "merging"
    return SwinUNETR(in_channels=in_channels, out_channels=1, feature_size=feature_size, depths=tuple(depths),
                     num_heads=tuple(num_heads), window_size=window_size, dropout_path_rate=drop_path_rate,
                     use_checkpoint=use_checkpoint, use_v2=True, downsample=downsample)


class SwinUNETREncoder(nn.Module):
    """The pretrained half of SwinUNETR v2; see the module docstring for the features it returns."""

    def __init__(self, in_channels: int, feature_size: int, depths, num_heads, window_size: int = 7,
                 drop_path_rate: float = 0.0, use_checkpoint: bool = False, patch_merging: str = "monai-1.5") -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "feature_size": feature_size, "depths": list(depths),
                       "num_heads": list(num_heads), "window_size": window_size, "drop_path_rate": drop_path_rate,
                       "use_checkpoint": use_checkpoint, "patch_merging": patch_merging}
        net = monai_swin_unetr(**self.config)
        for name in ("swinViT", "encoder1", "encoder2", "encoder3", "encoder4", "encoder10"):
            setattr(self, name, getattr(net, name))
        self.normalize = bool(net.normalize)
        # decoder blocks of the same construction, handed once to the decoder factory (a dict: not registered)
        self._spare_decoder = {n: getattr(net, n) for n in DECODER_PARTS}
        f = feature_size
        self.in_channels, self.feature_size = in_channels, f
        self.feature_channels = [f, f, 2 * f, 4 * f, 8 * f, 16 * f]
        self.feature_strides = [1, 2, 4, 8, 16, 32]
        self.size_divisor = 32

    def take_decoder_parts(self) -> Dict[str, nn.Module]:
        """MONAI's ``decoder5..1`` built with this encoder (fresh ones if already taken)."""
        parts = self.__dict__.pop("_spare_decoder", None)
        if parts is None:
            net = monai_swin_unetr(**self.config)
            parts = {n: getattr(net, n) for n in DECODER_PARTS}
        return parts

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        hidden = self.swinViT(x, self.normalize)
        return [self.encoder1(x), self.encoder2(hidden[0]), self.encoder3(hidden[1]), self.encoder4(hidden[2]),
                hidden[3], self.encoder10(hidden[4])]


def resolve_kwargs(preset: str | None = None, **kwargs: Any) -> Dict[str, Any]:
    """Explicit SwinUNETR arguments from a preset (default ``B``) plus overrides."""
    from ...errors import InputError, did_you_mean

    if preset is not None and preset not in PRESETS:
        raise InputError(f"unknown swin_unetr preset {preset!r}.{did_you_mean(preset, PRESETS)} "
                         f"Known: {', '.join(PRESETS)}.")
    out: Dict[str, Any] = {**DEFAULTS, **PRESETS[preset or "B"], **kwargs}
    if out["patch_merging"] not in PATCH_MERGING:
        raise InputError(f"unknown swin_unetr patch_merging {out['patch_merging']!r}. Known: {', '.join(PATCH_MERGING)}.")
    out["depths"], out["num_heads"] = [int(d) for d in out["depths"]], [int(h) for h in out["num_heads"]]
    return {k: out[k] for k in sorted(out)}


def build(in_channels: int, **kwargs: Any) -> SwinUNETREncoder:
    """``(in_channels, **explicit kwargs) -> SwinUNETREncoder``."""
    return SwinUNETREncoder(in_channels, **kwargs)


def size_divisor(**kwargs: Any) -> int:
    """Patch size 2 and four 2x downsamplings: inputs must be multiples of 32 (MONAI's SwinUNETR check)."""
    return 32


# ------------------------------------------------------------------ released files (VoCo / VoComni)
SWIN_ENCODER = {"swinViT", "encoder1", "encoder2", "encoder3", "encoder4", "encoder10"}
SWIN_DECODER = {"decoder1", "decoder2", "decoder3", "decoder4", "decoder5", "out"}


def convert_voco(sd: Tensors) -> Tensors:
    """A flat SwinUNETR state (VoCo SSL head: ``swinViT.*``, ``encoder1-4/10.*``; VoComni also ``decoder1-5.*``,
    ``out.*``) -> ``encoder.*`` / ``decoder.*``; ``module.``/``backbone.`` stripped and ``swin_vit`` renamed, as
    VoCo's own loader does."""
    out: Tensors = {}
    for key, value in sd.items():
        k = strip_prefix(key, ("module.", "backbone."))
        k = "swinViT" + k[len("swin_vit"):] if k.startswith("swin_vit.") else k
        head = k.split(".")[0]
        k = "encoder." + k if head in SWIN_ENCODER else "decoder." + k if head in SWIN_DECODER else k
        out[k] = value
    return out


def infer_from_file(sd: Tensors) -> Dict[str, Any]:
    """Feature size, blocks and heads per stage, window from the bias-table rows."""
    feature = int(sd["encoder.swinViT.patch_embed.proj.weight"].shape[0])
    depths = [count_indices(sd, rf"^encoder\.swinViT\.layers{i}\.0\.blocks\.(\d+)\.") for i in range(1, 5)]
    tables = [sd[f"encoder.swinViT.layers{i}.0.blocks.0.attn.relative_position_bias_table"] for i in range(1, 5)]
    return {"feature_size": feature, "depths": depths, "num_heads": [int(t.shape[1]) for t in tables],
            "window_size": window_side(int(tables[0].shape[0]))}


def voco_variant(converted: Tensors) -> str:
    """``voco_<size>`` or ``vocomni_<size>`` (decoder present) from a converted SwinUNETR state."""
    f = int(converted["encoder.swinViT.patch_embed.proj.weight"].shape[0])
    size = {48: "b", 96: "l", 192: "h"}.get(f, "b")
    return ("vocomni_" if any(k.startswith("decoder.") for k in converted) else "voco_") + size


def is_swin_file(keys: List[str]) -> bool:
    return any(strip_prefix(k, ("backbone.",)).startswith(("swinViT.", "swin_vit.")) for k in keys)


FORMAT = CheckpointFormat("voco", convert_voco, is_swin_file, infer_from_file, voco_variant,
                          input_keys=("encoder.swinViT.patch_embed.proj.weight", "encoder.encoder1.layer.conv1.conv.weight",
                                      "encoder.encoder1.layer.conv3.conv.weight"), fresh_input_layer=True)
BACKBONES.register("swin_unetr")(BackboneFamily(build, resolve_kwargs, "MONAI SwinUNETR v2 encoder (VoCo B/L/H)",
                                                size_divisor, default_decoder="swin_unetr", checkpoint=FORMAT))
