"""Vision-transformer blocks for 3-D volumes: patch embedding, attention, MLP, LayerScale, pre-norm block.

Ported from DINOv2 (facebookresearch/dinov2, Apache-2.0: ``dinov2/layers/{patch_embed,attention,mlp,
layer_scale,block}.py``) and written for 3-D patches; the attribute names (``proj``, ``qkv``, ``ls1``,
``fc1`` ...) are DINOv2's, so DINOv2-family checkpoints (3DINO) load by name. Attention uses PyTorch's
``scaled_dot_product_attention``, which equals DINOv2's explicit softmax(q k^T / sqrt(d)) v.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed3d(nn.Module):
    """Non-overlapping cubic patches -> tokens. ``x: (B, C, I, J, K)`` -> ``(B, I/p * J/p * K/p, D)``."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention over tokens ``x: (B, N, D)`` -> ``(B, N, D)``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, N, d/heads)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Two-layer perceptron with GELU: ``(..., D) -> (..., D_out)``; dropout after each layer (Swin/timm)."""

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_dim or dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class LayerScale(nn.Module):
    """Per-channel learned residual scale (CaiT; DINOv2 ``ls1``/``ls2``): ``x * gamma``."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``, x: (B, N, D).

    ``init_values=None`` switches LayerScale off (identity), as in a plain ViT.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, init_values: float | None = 1e-5,
                 drop_path: float = 0.0, qkv_bias: bool = True) -> None:
        from monai.networks.layers import DropPath

        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


def resize_pos_embed(pos_embed: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Trilinearly resample the patch part of a learned position embedding to another token grid.

    ``pos_embed: (1, 1 + n^3, D)`` (class token first, an n x n x n grid stored in (i, j, k) order) ->
    ``(1, 1 + gi*gj*gk, D)``. Follows DINOv2/3DINO ``interpolate_pos_encoding``: scale factors
    ``(g + 0.1) / n`` (the 0.1 avoids floor errors), unchanged when the grid already matches.
    """
    n = round((pos_embed.shape[1] - 1) ** (1.0 / 3.0))
    grid = tuple(int(g) for g in grid)
    if grid == (n, n, n):
        return pos_embed
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:].float()
    dim = patch_pos.shape[-1]
    patch_pos = patch_pos.reshape(1, n, n, n, dim).permute(0, 4, 1, 2, 3)
    scale = tuple((g + 0.1) / n for g in grid)
    patch_pos = F.interpolate(patch_pos, scale_factor=scale, mode="trilinear", align_corners=False)
    if tuple(patch_pos.shape[2:]) != grid:  # guard against rounding of the 0.1 trick
        patch_pos = F.interpolate(patch_pos, size=grid, mode="trilinear", align_corners=False)
    patch_pos = patch_pos.permute(0, 2, 3, 4, 1).reshape(1, -1, dim).to(pos_embed.dtype)
    return torch.cat([cls_pos, patch_pos], dim=1)


def token_grid(shape: Sequence[int], patch_size: int) -> Tuple[int, int, int]:
    """Token grid of an input with spatial ``shape`` (each side must be a multiple of ``patch_size``)."""
    if any(s % patch_size for s in shape):
        raise ValueError(f"input size {list(shape)} is not a multiple of the patch size {patch_size}")
    return tuple(s // patch_size for s in shape)  # type: ignore[return-value]


def init_vit_weights(module: nn.Module) -> None:
    """timm/DINOv2 initialisation: truncated normal (std 0.02) Linear weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def cube_root_int(n: int) -> int:
    """Integer cube root of a perfect cube (raises ``ValueError`` otherwise)."""
    r = round(n ** (1.0 / 3.0))
    if r ** 3 != n:
        raise ValueError(f"{n} is not a perfect cube")
    return int(r)


__all__ = ["PatchEmbed3d", "Attention", "Mlp", "LayerScale", "Block", "resize_pos_embed", "token_grid",
           "init_vit_weights", "cube_root_int"]
