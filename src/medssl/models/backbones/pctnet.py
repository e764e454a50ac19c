"""PCT-Net encoder (MIS-FM, Volume Fusion pretraining): conv patch embedding + pyramid of conv-transformer blocks.

Ported from openmedlab/MIS-FM ``net/pct_net.py`` (Apache-2.0; Wang et al., "MIS-FM", arXiv 2306.16925 /
IEEE TIP 2025). The released ``PCTNet`` is cut in two at its bottleneck: this encoder holds the three
``embeddings`` (one per resolution mode; only ``resolution_mode`` runs, all three are kept so the whole
checkpoint loads) and the encoder side of ``pyramid_ct`` (``down3``, ``down4``, ``convtrans_e2..e4``); the
decoder (`..decoders.pctnet`) holds the rest of ``pyramid_ct`` and the ``pred_heads``. Checkpoint keys map
by prefix only (``encoder.`` / ``decoder.`` + the MIS-FM key).

Axis order: MIS-FM trained on SimpleITK arrays ``(D, H, W) = (k, j, i)``, so the network runs on the input with
its spatial axes reversed (`..layers.axes`); inputs and returned features are in MedSSL's ``(I, J, K)`` order.
Resolution modes (stem scale in (D, H, W)): 0 isotropic (4,4,4), 1 (2,4,4) for thick slices (released), 2
(1,4,4). ``input_size`` is the pretraining patch in (D, H, W) order, (64,128,128): it fixes the Swin window
sizes (parameter shapes); at run time any size whose sides are multiples of the strides works.
Features for ``x: (B, C, I, J, K)``: ``[x0 (C0), x1 (C1), e2 (C2), e3 (C3), e4 (C4)]`` at ``feature_strides``
(per axis, (i, j, k); mode 1: 1, (2,2,1), (4,4,2), (8,8,4), (16,16,8)).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import nn

from ..layers.axes import reverse_spatial, reverse_triple
from ..layers.pct import MODE_DIMS, MODE_SCALE, ConvTransBlock, DownSample, PatchEmbedding
from ..checkpoint_keys import Tensors, count_indices, strip_prefix, window_side
from ..registry import BACKBONES, BackboneFamily, CheckpointFormat

PRESETS: Dict[str, Dict[str, Any]] = {
    "test": {"feature_chns": [4, 8, 16, 32, 64], "num_heads": [2, 4, 8], "window_sizes": [2, 2, 2],
             "input_size": [32, 32, 32]},
    "ct10k": {"feature_chns": [24, 48, 128, 256, 512], "num_heads": [4, 8, 16], "window_sizes": [6, 6, 6],
              "input_size": [64, 128, 128]},
}
DEFAULTS: Dict[str, Any] = {"dropout": [0.0, 0.0, 0.2, 0.2, 0.2], "depths": [2, 2, 2], "resolution_mode": 1}


def mode_strides(mode: int) -> List[Tuple[int, int, int]]:
    """Per-axis strides, in (i, j, k) order, of the five features in resolution ``mode``."""
    down_dims = MODE_DIMS[mode][1]
    s1 = (1, 2, 2) if down_dims[0] == 2 else (2, 2, 2)
    s2 = MODE_SCALE[mode]
    dhw = [(1, 1, 1), s1, s2, tuple(2 * s for s in s2), tuple(4 * s for s in s2)]
    return [reverse_triple(s) for s in dhw]


class PyramidEncoder(nn.Module):
    """Encoder side of MIS-FM ``PyramidConvTrans``: ``e2 -> e3 -> e4`` with conv+Swin blocks at each level."""

    def __init__(self, ft: Sequence[int], grid: Sequence[int], dropout: Sequence[float], depths: Sequence[int],
                 heads: Sequence[int], windows: Sequence[int]) -> None:
        super().__init__()
        grids = [list(grid), [g // 2 for g in grid], [g // 4 for g in grid]]
        self.down3 = DownSample(ft[0], ft[1], 3, 3)
        self.down4 = DownSample(ft[1], ft[2], 3, 3)
        for lvl, name in enumerate(("convtrans_e2", "convtrans_e3", "convtrans_e4")):
            setattr(self, name, ConvTransBlock(ft[lvl], grids[lvl], depths[lvl], heads[lvl], windows[lvl],
                                               dropout[lvl], dropout[lvl]))

    def forward(self, x2: torch.Tensor) -> List[torch.Tensor]:
        e2 = self.convtrans_e2(x2)
        e3 = self.convtrans_e3(self.down3(e2))
        return [e2, e3, self.convtrans_e4(self.down4(e3))]


class PCTNetEncoder(nn.Module):
    """See the module docstring."""

    def __init__(self, in_channels: int, feature_chns: Sequence[int], dropout: Sequence[float], depths: Sequence[int],
                 num_heads: Sequence[int], window_sizes: Sequence[int], resolution_mode: int,
                 input_size: Sequence[int]) -> None:
        super().__init__()
        if resolution_mode not in MODE_SCALE:
            raise ValueError(f"resolution_mode must be 0, 1 or 2, got {resolution_mode}")
        ft = list(feature_chns)
        self.config = {"feature_chns": ft, "dropout": list(dropout), "depths": list(depths),
                       "num_heads": list(num_heads), "window_sizes": list(window_sizes),
                       "resolution_mode": resolution_mode, "input_size": list(input_size)}
        self.embeddings = nn.ModuleList(
            [PatchEmbedding(in_channels, ft[:3], *MODE_DIMS[m], dropout[:3]) for m in (0, 1, 2)])
        grid = [s // m for s, m in zip(input_size, MODE_SCALE[resolution_mode])]
        self.pyramid_ct = PyramidEncoder(ft[2:], grid, dropout[2:], depths, num_heads, window_sizes)
        self.resolution_mode = resolution_mode
        self.in_channels, self.feature_channels = in_channels, ft
        self.feature_strides = mode_strides(resolution_mode)
        self.size_divisor = max(self.feature_strides[-1])

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x0, x1, x2 = self.embeddings[self.resolution_mode](reverse_spatial(x))
        return [reverse_spatial(f) for f in [x0, x1] + self.pyramid_ct(x2)]


def resolve_kwargs(preset: str | None = None, **kwargs: Any) -> Dict[str, Any]:
    """Explicit PCT-Net arguments from a preset (default ``ct10k``, the released model) plus overrides."""
    from ...errors import InputError, did_you_mean

    if preset is not None and preset not in PRESETS:
        raise InputError(f"unknown pctnet preset {preset!r}.{did_you_mean(preset, PRESETS)} Known: {', '.join(PRESETS)}.")
    out: Dict[str, Any] = {**DEFAULTS, **PRESETS[preset or "ct10k"], **kwargs}
    for key in ("feature_chns", "depths", "num_heads", "window_sizes", "input_size"):
        out[key] = [int(v) for v in out[key]]
    out["dropout"] = [float(v) for v in out["dropout"]]
    out["resolution_mode"] = int(out["resolution_mode"])
    return {k: out[k] for k in sorted(out)}


def build(in_channels: int, **kwargs: Any) -> PCTNetEncoder:
    """``(in_channels, **explicit kwargs) -> PCTNetEncoder``."""
    return PCTNetEncoder(in_channels, **kwargs)


# ------------------------------------------------------------------ released files (MIS-FM, PyMIC checkpoints)
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


def infer_from_file(sd: Tensors) -> Dict[str, Any]:
    """Channels per level, Swin depths/heads/windows (resolution mode: the released 1)."""
    e, p = "encoder.embeddings.0.", "encoder.pyramid_ct."
    feats = [sd[e + "proj.weight"], sd[e + "down1.conv.2.weight"], sd[e + "down2.conv.2.weight"],
             sd[p + "down3.conv.2.weight"], sd[p + "down4.conv.2.weight"]]
    levels = ("convtrans_e2", "convtrans_e3", "convtrans_e4")
    tables = [sd[f"{p}{lv}.trans.blocks.0.attn.relative_position_bias_table"] for lv in levels]
    return {"feature_chns": [int(t.shape[0]) for t in feats],
            "depths": [count_indices(sd, rf"^{re.escape(p)}{lv}\.trans\.blocks\.(\d+)\.") for lv in levels],
            "num_heads": [int(t.shape[1]) for t in tables],
            "window_sizes": [window_side(int(t.shape[0])) for t in tables]}


def is_pctnet_file(keys: List[str]) -> bool:
    return any(k.startswith("pyramid_ct.") for k in keys) and any(k.startswith("embeddings.") for k in keys)


FORMAT = CheckpointFormat("misfm_pctnet", convert_misfm_pctnet, is_pctnet_file, infer_from_file,
                          lambda converted: "misfm_pctnet_ct10k",
                          input_keys=tuple(f"encoder.embeddings.{m}.proj.weight" for m in range(3)))
BACKBONES.register("pctnet")(BackboneFamily(build, resolve_kwargs, "PCT-Net encoder (MIS-FM Volume Fusion, CT10k)",
                                            default_decoder="pctnet", checkpoint=FORMAT))
