"""3-D Vision Transformer encoder (ViT with cubic patches), the 3DINO-ViT architecture.

Re-implemented from the papers (Dosovitskiy et al., ICLR 2021; DINOv2, Oquab et al., TMLR 2024; 3DINO,
Xu et al., npj Digit. Med. 2025) with blocks ported from DINOv2 (Apache-2.0, see `..layers.vit`): Conv3d patch
embedding, one class token, a learned position embedding for a ``img_size^3`` training crop that is
resampled trilinearly for other input sizes, pre-norm blocks with LayerScale, a final LayerNorm applied to
every intermediate layer handed to a dense decoder (DINOv2 ``get_intermediate_layers(norm=True)``).

Multi-channel input follows 3DINO: the patch embedding always has one input channel; each channel of
``x: (B, C, I, J, K)`` runs through the shared encoder as its own sample and the per-channel features are
concatenated along channels (``C * D``); the decoder merges them (`..decoders.unetr`).

Features returned (a UNETR decoder needs the raw input for its full-resolution branch):
``[x (B, C, I, J, K)] + [(B, C*D, I/p, J/p, K/p) for each index in out_indices]``.

Presets: ``L`` = 3DINO ViT-L/16 (D 1024, 24 blocks, 16 heads, img 112, LayerScale 1e-5, blocks 5/11/17/23),
``B`` (ViT-B/16, no released weights), ``test`` (tiny, for CPU tests).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Sequence

import torch
from torch import nn

from ..checkpoint_keys import Tensors, count_indices, strip_prefix
from ..layers.vit import Block, PatchEmbed3d, init_vit_weights, resize_pos_embed, token_grid
from ..registry import BACKBONES, BackboneFamily, CheckpointFormat

PRESETS: Dict[str, Dict[str, Any]] = {
    "test": {"embed_dim": 32, "depth": 4, "num_heads": 2, "img_size": 32, "out_indices": [0, 1, 2, 3]},
    "B": {"embed_dim": 768, "depth": 12, "num_heads": 12, "img_size": 96, "out_indices": [2, 5, 8, 11]},
    "L": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "img_size": 112, "out_indices": [5, 11, 17, 23]},
}
DEFAULTS: Dict[str, Any] = {"patch_size": 16, "mlp_ratio": 4.0, "init_values": 1e-5, "drop_path_rate": 0.0,
                            "qkv_bias": True}


class ViT3DEncoder(nn.Module):
    """ViT over 3-D patches; see the module docstring for the returned features."""

    def __init__(self, in_channels: int, embed_dim: int, depth: int, num_heads: int, img_size: int,
                 out_indices: Sequence[int], patch_size: int = 16, mlp_ratio: float = 4.0,
                 init_values: float | None = 1e-5, drop_path_rate: float = 0.0, qkv_bias: bool = True) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} must be a multiple of patch_size {patch_size}")
        if not out_indices or max(out_indices) >= depth or min(out_indices) < 0:
            raise ValueError(f"out_indices {list(out_indices)} must name blocks 0..{depth - 1}")
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed3d(1, embed_dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid ** 3, embed_dim))
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, init_values, drop_path_rate, qkv_bias) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.out_indices = [int(i) for i in out_indices]
        self.embed_dim, self.patch_size = embed_dim, patch_size
        self.in_channels = in_channels
        self.feature_channels = [in_channels] + [in_channels * embed_dim] * len(self.out_indices)
        self.feature_strides = [1] + [patch_size] * len(self.out_indices)
        self.size_divisor = patch_size
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(init_vit_weights)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with class token and (resampled) position embedding: ``(B, 1, I, J, K) -> (B, 1+N, D)``."""
        grid = token_grid(x.shape[2:], self.patch_size)
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        return t + resize_pos_embed(self.pos_embed, grid)

    def intermediate_layers(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Normed outputs of the blocks in ``out_indices`` as grids: ``(B, 1, I, J, K) -> [(B, D, I/p, J/p, K/p)]``."""
        grid = token_grid(x.shape[2:], self.patch_size)
        t, outs = self.tokens(x), []
        for i, blk in enumerate(self.blocks[: max(self.out_indices) + 1]):
            t = blk(t)
            if i in self.out_indices:
                outs.append(self.norm(t)[:, 1:])
        return [o.transpose(1, 2).reshape(o.shape[0], self.embed_dim, *grid) for o in outs]

    def forward_cls(self, x: torch.Tensor) -> torch.Tensor:
        """Normed class token of a one-channel input (3DINO ``forward``): ``(B, 1, I, J, K) -> (B, D)``."""
        t = self.tokens(x)
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)[:, 0]

    def forward_tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                       mask_token: torch.Tensor | None = None, keep: torch.Tensor | None = None) -> Dict[str, torch.Tensor]:
        """Normed class and patch tokens for self-supervised pretraining (DINOv2 ``forward_features``).

        ``x: (B, 1, I, J, K)``. ``mask: (B, N)`` bool with ``mask_token: (D,)``: those patch embeddings are
        replaced by the mask token before the position embedding is added (iBOT / DINOv2 masking).
        ``keep: (B, M)`` token indices: only these patch tokens enter the blocks (MAE token dropping).
        Returns ``{"cls": (B, D), "patch": (B, N or M, D)}``.
        """
        grid = token_grid(x.shape[2:], self.patch_size)
        t = self.patch_embed(x)
        if mask is not None:
            t = torch.where(mask.unsqueeze(-1), mask_token.to(t.dtype).view(1, 1, -1), t)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1) + resize_pos_embed(self.pos_embed, grid)
        if keep is not None:
            kept = torch.gather(t[:, 1:], 1, keep.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
            t = torch.cat([t[:, :1], kept], dim=1)
        for blk in self.blocks:
            t = blk(t)
        t = self.norm(t)
        return {"cls": t[:, 0], "patch": t[:, 1:]}

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        b, c = x.shape[:2]
        feats = self.intermediate_layers(x.reshape(b * c, 1, *x.shape[2:]))
        return [x] + [f.reshape(b, c * self.embed_dim, *f.shape[2:]) for f in feats]


def resolve_kwargs(preset: str | None = None, **kwargs: Any) -> Dict[str, Any]:
    """Explicit ViT arguments from a preset (default ``L``) plus overrides."""
    from ...errors import InputError, did_you_mean

    if preset is not None and preset not in PRESETS:
        raise InputError(f"unknown vit3d preset {preset!r}.{did_you_mean(preset, PRESETS)} Known: {', '.join(PRESETS)}.")
    out: Dict[str, Any] = {**DEFAULTS, **PRESETS[preset or "L"], **kwargs}
    out["out_indices"] = [int(i) for i in out["out_indices"]]
    return {k: out[k] for k in sorted(out)}


def build(in_channels: int, **kwargs: Any) -> ViT3DEncoder:
    """``(in_channels, **explicit kwargs) -> ViT3DEncoder``."""
    return ViT3DEncoder(in_channels, **kwargs)


def size_divisor(**kwargs: Any) -> int:
    """The patch size: inputs must be multiples of it (`ViT3DEncoder.size_divisor`), read without building
    (ViT-L built on the meta device still took 1.7-5.4 s: 24 blocks of Python modules)."""
    return int(kwargs.get("patch_size", DEFAULTS.get("patch_size", 16)))


# ------------------------------------------------------------------ released files (3DINO)
VIT_TOP = {"cls_token", "pos_embed", "mask_token", "patch_embed", "blocks", "norm"}
_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.")
_QKV = re.compile(r"^(backbone\.)?blocks\.\d+\.(\d+\.)?attn\.qkv\.weight$")


def convert_3dino(sd: Tensors) -> Tensors:
    """3DINO teacher ``{"backbone.<ViT key>", "dino_head.*", "ibot_head.*"}`` (or a bare DINOv2-style 3-D ViT) ->
    ``encoder.*``; blocks stored as ``blocks.{chunk}.{i}`` (DINOv2 ``block_chunks=4``) or ``blocks.{i}``."""
    out: Tensors = {}
    for key, value in sd.items():
        k = strip_prefix(key, ("module.", "_orig_mod."))
        if k.startswith("backbone.") or k.split(".")[0] in VIT_TOP:
            k = _CHUNKED.sub(r"blocks.\1.", strip_prefix(k, ("backbone.",)))
            k = "encoder." + k
        out[k] = value
    return out


def infer_from_file(sd: Tensors) -> Dict[str, Any]:
    """Width/patch from the patch embedding, depth from the blocks, grid from pos_embed, 64-d heads."""
    w = sd["encoder.patch_embed.proj.weight"]
    dim, patch = int(w.shape[0]), int(w.shape[2])
    depth = count_indices(sd, r"^encoder\.blocks\.(\d+)\.")
    grid = round((sd["encoder.pos_embed"].shape[1] - 1) ** (1.0 / 3.0))
    hidden = int(sd["encoder.blocks.0.mlp.fc1.weight"].shape[0])
    return {"embed_dim": dim, "patch_size": patch, "depth": depth, "num_heads": max(1, dim // 64),
            "img_size": grid * patch, "mlp_ratio": hidden / dim,
            "init_values": 1e-5 if "encoder.blocks.0.ls1.gamma" in sd else None,
            "out_indices": [(k + 1) * depth // 4 - 1 for k in range(4)]}


def is_vit3d_file(keys: List[str]) -> bool:
    return any(_QKV.match(k) for k in keys) and any(k.endswith("pos_embed") for k in keys)


# multi-channel input: every channel runs through the shared one-channel encoder (3DINO): no input keys
FORMAT = CheckpointFormat("3dino", convert_3dino, is_vit3d_file, infer_from_file, lambda converted: "3dino_vit_l")
BACKBONES.register("vit3d")(BackboneFamily(build, resolve_kwargs, "3-D ViT with cubic patches (3DINO ViT-L/16)",
                                           size_divisor, tokens=True, default_decoder="unetr", checkpoint=FORMAT))
