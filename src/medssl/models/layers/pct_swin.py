"""Shifted-window transformer stage of PCT-Net (MIS-FM), for token grids ``(B, S*H*W, C)``.

Ported from openmedlab/MIS-FM ``net/transformer.py`` (Apache-2.0; Wang et al., "MIS-FM", arXiv 2306.16925),
itself after Swin Transformer (Liu et al., ICCV 2021). Kept as in MIS-FM so its checkpoints load and compute
the same: attribute names, the window shrinking rule (a grid no larger than the window at construction time
uses one window of that size and no shift), and PCT-Net's own relative-position index strides
``(3w-1, 2w-1, 1)`` (not Swin's). Change from MIS-FM: the grid size is read from the input at run time
(MIS-FM fixes it at construction and asserts), so other patch sizes than the pretraining one work; the
construction-time ``input_resolution`` still decides the window size, hence the parameter shapes.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .vit import Mlp


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """``(B, S, H, W, C)`` with sides divisible by ``w`` -> windows ``(B * nW, w^3, C)``."""
    b, s, h, wd, c = x.shape
    x = x.view(b, s // w, w, h // w, w, wd // w, w, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(-1, w * w * w, c)


def window_reverse(windows: torch.Tensor, w: int, s: int, h: int, wd: int) -> torch.Tensor:
    """Inverse of `window_partition`: ``(B * nW, w^3, C)`` -> ``(B, S, H, W, C)``."""
    b = windows.shape[0] // ((s // w) * (h // w) * (wd // w))
    x = windows.view(b, s // w, h // w, wd // w, w, w, w, -1).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, s, h, wd, -1)


def pct_relative_position_index(w: int) -> torch.Tensor:
    """Index into the ``(2w-1)^3``-row bias table for all token pairs of a ``w^3`` window: ``(w^3, w^3)``.

    PCT-Net's strides: ``dz * (3w-1) + dy * (2w-1) + dx`` after shifting offsets to start at 0.
    """
    coords = torch.stack(torch.meshgrid(*[torch.arange(w)] * 3, indexing="ij")).flatten(1)  # (3, w^3)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (w - 1)  # (w^3, w^3, 3)
    return rel[..., 0] * (3 * w - 1) + rel[..., 1] * (2 * w - 1) + rel[..., 2]


class WindowAttention(nn.Module):
    """Multi-head attention inside windows with a learned relative-position bias: ``(B', w^3, C)`` -> same."""

    def __init__(self, dim: int, window: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.window, self.num_heads = window, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 3, num_heads))
        self.register_buffer("relative_position_index", pct_relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(b // nw, nw, self.num_heads, n, n) + mask[None, :, None]).view(-1, self.num_heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, n, c)))


class SwinBlock(nn.Module):
    """(Shifted-)window attention block: ``x: (B, S*H*W, C)`` and its grid size -> same shape."""

    def __init__(self, dim: int, input_resolution: Sequence[int], num_heads: int, window: int, shift: int,
                 mlp_ratio: float = 4.0, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        from monai.networks.layers import DropPath

        super().__init__()
        if min(input_resolution) <= window:  # MIS-FM: one window covering the (small) grid, no shift
            window, shift = min(input_resolution), 0
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, grid: Tuple[int, int, int]) -> torch.Tensor:
        b, _, c = x.shape
        s, h, wd = grid
        w = self.window
        y = self.norm1(x).reshape(b, s, h, wd, c)
        pads = [(w - n % w) % w for n in (s, h, wd)]
        y = F.pad(y, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
        padded = y.shape[1:4]
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift,) * 3, dims=(1, 2, 3))
        mask = shift_mask(padded, w, self.shift, x.device) if self.shift else None
        y = window_reverse(self.attn(window_partition(y, w), mask), w, *padded)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift,) * 3, dims=(1, 2, 3))
        y = y[:, :s, :h, :wd].reshape(b, s * h * wd, c)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


def shift_mask(padded: Sequence[int], w: int, shift: int, device: torch.device) -> torch.Tensor:
    """Attention mask (0 / -100) keeping shifted windows from mixing regions: ``(nW, w^3, w^3)``."""
    img = torch.zeros((1, *padded, 1), device=device)
    cuts = (slice(0, -w), slice(-w, -shift), slice(-shift, None))
    cnt = 0
    for a in cuts:
        for bb in cuts:
            for cc in cuts:
                img[:, a, bb, cc, :] = cnt
                cnt += 1
    win = window_partition(img, w).squeeze(-1)  # (nW, w^3)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class BasicLayer(nn.Module):
    """``depth`` blocks alternating plain and shifted windows (shift ``window // 2``)."""

    def __init__(self, dim: int, input_resolution: Sequence[int], depth: int, num_heads: int, window: int,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([
            SwinBlock(dim, input_resolution, num_heads, window, 0 if i % 2 == 0 else window // 2,
                      drop=drop, attn_drop=attn_drop, drop_path=drop_path) for i in range(depth)])

    def forward(self, x: torch.Tensor, grid: Tuple[int, int, int]) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, grid)
        return x
