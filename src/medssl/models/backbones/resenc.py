"""Residual-encoder U-Net encoder (nnU-Net ResEnc; Isensee et al., MICCAI 2024), as used by nnssl/OpenMind.

The module *is* `dynamic_network_architectures`' ``ResidualEncoder`` (installed with ``--no-deps``), so the
state-dict keys of ``SegmentationNet(encoder, UNetDecoder)`` equal those of ``ResidualEncoderUNet`` and of
the released nnssl checkpoints. Presets: ``test`` (tiny, for CPU tests), ``tiny`` (CPU demo), ``small``,
``M`` and ``L`` (nnssl's ``get_res_enc_l`` arguments: features 32..320, blocks 1,3,4,6,6,6).
"""
from __future__ import annotations

from typing import Any, Dict, List

from torch import nn

from ..checkpoint_keys import Tensors, count_indices, strip_prefix
from ..registry import BACKBONES, BackboneFamily, CheckpointFormat

PRESETS: Dict[str, Dict[str, Any]] = {
    "test": {"features_per_stage": [8, 16, 32, 64], "n_blocks_per_stage": [1, 1, 1, 1]},
    "tiny": {"features_per_stage": [16, 32, 64, 128, 192], "n_blocks_per_stage": [1, 2, 2, 2, 2]},
    "small": {"features_per_stage": [24, 48, 96, 192, 256, 256], "n_blocks_per_stage": [1, 2, 3, 4, 4, 4]},
    "M": {"features_per_stage": [32, 64, 128, 256, 320, 320], "n_blocks_per_stage": [1, 3, 4, 6, 6, 6]},
    "L": {"features_per_stage": [32, 64, 128, 256, 320, 320], "n_blocks_per_stage": [1, 3, 4, 6, 6, 6]},
}


def resolve_kwargs(preset: str | None = None, **kwargs: Any) -> Dict[str, Any]:
    """Explicit ResidualEncoder arguments from a preset name plus overrides (strides default 1,2,2,...)."""
    from ...errors import InputError, did_you_mean

    if preset is not None and preset not in PRESETS:
        raise InputError(f"unknown resenc preset {preset!r}.{did_you_mean(preset, PRESETS)} Known: {', '.join(PRESETS)}.")
    out: Dict[str, Any] = dict(PRESETS[preset or "L"])
    out.update(kwargs)
    n = len(out["features_per_stage"])
    out.setdefault("strides", [1] + [2] * (n - 1))
    out.setdefault("kernel_sizes", [3] * n)
    out.setdefault("conv_bias", True)
    out.setdefault("axis_order", "ijk")
    return {k: out[k] for k in sorted(out)}


def _encoder_class(axis_order: str) -> type:
    """dna's ResidualEncoder, or a subclass that runs on reversed spatial axes (same submodules and keys).

    nnU-Net/nnssl train on SimpleITK arrays, ``(K, J, I)``: OpenMind weights expect that order, so
    ``axis_order="kji"`` reverses the input before the encoder and every skip after it; features leave in
    MedSSL's ``(I, J, K)`` order, so the decoder is unchanged.
    """
    from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder

    from ..layers.axes import reverse_spatial

    if axis_order == "ijk":
        return ResidualEncoder
    if axis_order != "kji":
        raise ValueError(f"axis_order must be 'ijk' or 'kji', got {axis_order!r}")

    class KJIResidualEncoder(ResidualEncoder):
        def forward(self, x):
            return [reverse_spatial(f) for f in super().forward(reverse_spatial(x))]

    return KJIResidualEncoder


def build(in_channels: int, features_per_stage, n_blocks_per_stage, strides, kernel_sizes,
          conv_bias: bool = True, axis_order: str = "ijk") -> nn.Module:
    """ResidualEncoder with InstanceNorm(affine) + LeakyReLU, returning one skip per stage.

    ``x: (B, C, I, J, K)`` -> ``[(B, F_s, I/r_s, J/r_s, K/r_s) for each stage s]``. ``axis_order="kji"``: the
    convolutions run on the reversed axes (the order nnssl checkpoints were trained in).
    """
    n = len(features_per_stage)
    enc = _encoder_class(axis_order)(
        in_channels, n, list(features_per_stage), nn.Conv3d, [[k] * 3 if isinstance(k, int) else k for k in kernel_sizes],
        [[s] * 3 if isinstance(s, int) else s for s in strides], list(n_blocks_per_stage), conv_bias,
        nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU, {"inplace": True},
        return_skips=True, disable_default_stem=False,
    )
    enc.in_channels = in_channels
    enc.feature_channels = list(features_per_stage)
    strides_cum, r = [], 1
    for s in strides:
        r *= s if isinstance(s, int) else max(s)
        strides_cum.append(r)
    enc.feature_strides = strides_cum
    enc.size_divisor = strides_cum[-1]
    return enc


# ------------------------------------------------------------------ released files (nnssl / OpenMind)
def convert_nnssl(sd: Tensors) -> Tensors:
    """nnssl ``network_weights`` (a ``ResidualEncoderUNet`` state) -> the ResEnc encoder keys (identical names);
    the decoder and ``seg_layers`` stay unused (nnssl's fine-tuning builds the decoder fresh)."""
    out: Tensors = {}
    for key, value in sd.items():
        k = strip_prefix(key, ("module.", "_orig_mod."))
        if k.startswith(("encoder.stem.", "encoder.stages.")):
            out[k] = value
    return out


def infer_from_file(sd: Tensors) -> Dict[str, Any]:
    """Widths, blocks and kernels per stage; strides 1, 2, 2, ... (not visible in weights)."""
    n = count_indices(sd, r"^encoder\.stages\.(\d+)\.")
    feats = [int(sd[f"encoder.stages.{s}.blocks.0.conv2.conv.weight"].shape[0]) for s in range(n)]
    blocks = [count_indices(sd, rf"^encoder\.stages\.{s}\.blocks\.(\d+)\.") for s in range(n)]
    kernels = [int(sd[f"encoder.stages.{s}.blocks.0.conv2.conv.weight"].shape[-1]) for s in range(n)]
    return {"features_per_stage": feats, "n_blocks_per_stage": blocks, "kernel_sizes": kernels,
            "strides": [1] + [2] * (n - 1), "conv_bias": "encoder.stem.convs.0.conv.bias" in sd}


def is_resenc_file(keys: List[str]) -> bool:
    return "encoder.stem.convs.0.conv.weight" in keys


FORMAT = CheckpointFormat("nnssl", convert_nnssl, is_resenc_file, infer_from_file, lambda converted: "openmind_resencl_mae",
                          input_keys=("encoder.stem.convs.0.conv.weight", "encoder.stem.convs.0.all_modules.0.weight"))
BACKBONES.register("resenc")(BackboneFamily(build, resolve_kwargs, "nnU-Net residual encoder (ResEnc, nnssl/OpenMind)",
                                            default_decoder="unet", checkpoint=FORMAT))
