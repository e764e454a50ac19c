"""FMUNet encoder (MIS-FM, Volume Fusion pretraining on AbdomenCT-1K): a stem conv and a 5-level residual encoder.

Ported from openmedlab/MIS-FM ``net/fmunet.py`` (Apache-2.0; Wang et al., arXiv 2306.16925). The released
``FMUNet`` is cut at its bottleneck: this encoder holds ``project`` and ``encoder``; the decoder
(`..decoders.fmunet`) holds ``decoder`` and ``out_layers`` (pretrained too). Checkpoint keys map by prefix
only (``encoder.`` / ``decoder.`` + the MIS-FM key).

Axis order: MIS-FM trained on SimpleITK arrays ``(D, H, W) = (k, j, i)``, so the network runs on the input with
its spatial axes reversed (`..layers.axes`); inputs and returned features are in MedSSL's ``(I, J, K)`` order.
``res_mode`` 0 is isotropic (released); 1 and 2 convolve in-plane (H, W) at the finest one or two levels.
Features for ``x: (B, C, I, J, K)``: five maps with channels ``feature_chns`` at strides 1, 2, 4, 8, 16 per
axis (``feature_strides``, (i, j, k); smaller along K at in-plane levels).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import nn

from ..layers.axes import reverse_spatial, reverse_triple
from ..layers.fmunet import CONV_KERNEL, CONV_PAD, Encoder, he_init, level_dims
from ..checkpoint_keys import Tensors, count_indices, strip_prefix
from ..registry import BACKBONES, BackboneFamily, CheckpointFormat

PRESETS: Dict[str, Dict[str, Any]] = {
    "test": {"feature_chns": [4, 8, 16, 32, 64]},
    "abd1k": {"feature_chns": [32, 64, 128, 256, 512]},
}
DEFAULTS: Dict[str, Any] = {"dropout": 0.2, "depth": 2, "res_mode": 0}


def mode_strides(res_mode: int) -> List[Tuple[int, int, int]]:
    """Per-axis strides, in (i, j, k) order, of the five features."""
    strides, s = [(1, 1, 1)], [1, 1, 1]
    for dim in level_dims(res_mode)[:4]:
        s = [s[0] * (2 if dim == 3 else 1), s[1] * 2, s[2] * 2]  # (D, H, W)
        strides.append(reverse_triple(s))
    return strides


class FMUNetEncoder(nn.Module):
    """See the module docstring."""

    def __init__(self, in_channels: int, feature_chns: Sequence[int], dropout: float = 0.2, depth: int = 2,
                 res_mode: int = 0) -> None:
        super().__init__()
        if res_mode not in (0, 1, 2):
            raise ValueError(f"res_mode must be 0, 1 or 2, got {res_mode}")
        ft = list(feature_chns)
        d0 = level_dims(res_mode)[0]
        self.config = {"feature_chns": ft, "dropout": dropout, "depth": depth, "res_mode": res_mode}
        self.project = nn.Conv3d(in_channels, ft[0], kernel_size=CONV_KERNEL[d0], padding=CONV_PAD[d0])
        self.encoder = Encoder(ft, res_mode, dropout, depth)
        self.apply(he_init)
        self.in_channels, self.feature_channels = in_channels, ft
        self.feature_strides = mode_strides(res_mode)
        self.size_divisor = max(self.feature_strides[-1])

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [reverse_spatial(f) for f in self.encoder(self.project(reverse_spatial(x)))]


def resolve_kwargs(preset: str | None = None, **kwargs: Any) -> Dict[str, Any]:
    """Explicit FMUNet arguments from a preset (default ``abd1k``, the released model) plus overrides."""
    from ...errors import InputError, did_you_mean

    if preset is not None and preset not in PRESETS:
        raise InputError(f"unknown fmunet preset {preset!r}.{did_you_mean(preset, PRESETS)} Known: {', '.join(PRESETS)}.")
    out: Dict[str, Any] = {**DEFAULTS, **PRESETS[preset or "abd1k"], **kwargs}
    out["feature_chns"] = [int(v) for v in out["feature_chns"]]
    out.update(dropout=float(out["dropout"]), depth=int(out["depth"]), res_mode=int(out["res_mode"]))
    return {k: out[k] for k in sorted(out)}


def build(in_channels: int, **kwargs: Any) -> FMUNetEncoder:
    """``(in_channels, **explicit kwargs) -> FMUNetEncoder``."""
    return FMUNetEncoder(in_channels, **kwargs)


# ------------------------------------------------------------------ released files (MIS-FM, PyMIC checkpoints)
def convert_misfm_fmunet(sd: Tensors) -> Tensors:
    """MIS-FM FMUNet ``model_state_dict`` -> ``encoder.`` (project, encoder) / ``decoder.`` (decoder, out_layers)."""
    out: Tensors = {}
    for key, value in sd.items():
        k = strip_prefix(key, ("module.",))
        head = k.split(".")[0]
        k = "encoder." + k if head in ("project", "encoder") else "decoder." + k if head in ("decoder", "out_layers") else k
        out[k] = value
    return out


def infer_from_file(sd: Tensors) -> Dict[str, Any]:
    """Channels, residual depth, and res_mode from the in-plane (1x3x3) kernels."""
    feats = [int(sd[f"encoder.encoder.en_conv{i}.conv_list.0.3.weight"].shape[0]) for i in range(5)]
    depth = count_indices(sd, r"^encoder\.encoder\.en_conv0\.conv_list\.(\d+)\.")
    flat0 = sd["encoder.project.weight"].shape[2] == 1
    flat1 = sd["encoder.encoder.down1.down.2.weight"].shape[2] == 1
    return {"feature_chns": feats, "depth": depth, "res_mode": 2 if flat1 else 1 if flat0 else 0}


def is_fmunet_file(keys: List[str]) -> bool:
    return "project.weight" in keys and any(k.startswith("encoder.en_conv") for k in keys)


FORMAT = CheckpointFormat("misfm_fmunet", convert_misfm_fmunet, is_fmunet_file, infer_from_file,
                          lambda converted: "misfm_fmunet_abd1k", input_keys=("encoder.project.weight",))
BACKBONES.register("fmunet")(BackboneFamily(build, resolve_kwargs, "FMUNet encoder (MIS-FM Volume Fusion, AbdomenCT-1K)",
                                            default_decoder="fmunet", checkpoint=FORMAT))
