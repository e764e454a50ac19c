"""Heads used only during pretraining (never exported): DINO prototypes, VoCo projector, MAE token decoder.

- `DINOHead`: ported from DINOv2 (facebookresearch/dinov2 ``dinov2/layers/dino_head.py``, Apache-2.0):
  an MLP (GELU) to an L2-normalised bottleneck, then a weight-normalised linear layer onto the prototypes,
  ``W = g * v / ||v||`` per prototype, with the gain ``g`` starting at 1 and trained (DINOv2 fills
  ``weight_g`` with 1 but leaves it trainable, and weight-decayed). The weight norm is written out instead of
  the deprecated ``torch.nn.utils.weight_norm``; the function is the same.
- `ProjectionHead`: VoCo's 3-layer projector (Luffy03/Large-Scale-Medical ``projection_head``, Apache-2.0):
  Linear-BN-ReLU twice, then Linear; BatchNorm without affine and without running statistics.
- `TokenDecoder`: the MAE decoder (He et al., CVPR 2022), re-implemented from the paper for 3-D patches:
  embed visible tokens, insert a mask token at the dropped positions, add fixed 3-D sin-cos positions, a few
  transformer blocks, then a linear layer to the ``p^3`` voxels of every patch.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..models.layers.vit import Block, init_vit_weights


class DINOHead(nn.Module):
    """``x: (N, in_dim)`` -> prototype scores ``(N, out_dim)``."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 nlayers: int = 3) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (max(nlayers, 1) - 1) + [bottleneck_dim]
        layers: List[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.apply(init_vit_weights)
        self.weight_v = nn.Parameter(nn.Linear(bottleneck_dim, out_dim, bias=False).weight.detach().clone())
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))  # (out_dim, 1), as weight_norm's dim=0 gain

    def forward(self, x: torch.Tensor, freeze_last: bool = False) -> torch.Tensor:
        """``freeze_last``: no gradient reaches the prototypes or their gains (DINOv2's
        ``cancel_gradients_last_layer`` during the first epoch)."""
        x = F.normalize(self.mlp(x), dim=-1, eps=1e-6 if x.dtype == torch.float16 else 1e-12)
        w = self.weight_g * F.normalize(self.weight_v, dim=1)
        return F.linear(x, w.detach() if freeze_last else w)


class ProjectionHead(nn.Module):
    """``x: (N, in_dim)`` -> ``(N, out_dim)`` (VoCo projector; needs N > 1 in training)."""

    def __init__(self, in_dim: int, hidden_dim: int = 1024, out_dim: int = 1024) -> None:
        super().__init__()

        def norm() -> nn.Module:
            return nn.BatchNorm1d(hidden_dim, affine=False, track_running_stats=False)

        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), norm(), nn.ReLU(inplace=True),
                                 nn.Linear(hidden_dim, hidden_dim), norm(), nn.ReLU(inplace=True),
                                 nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def pooled_features(feats: Sequence[torch.Tensor], which: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Global average pool of feature maps ``[(B, C_s, ...)]`` concatenated -> ``(B, sum C_s)`` (VoCo)."""
    chosen = [feats[i] for i in which] if which is not None else list(feats)
    return torch.cat([f.float().mean(dim=tuple(range(2, f.dim()))) for f in chosen], dim=1)


def sincos_3d(grid: Sequence[int], dim: int) -> torch.Tensor:
    """Fixed 3-D sine-cosine position embedding ``(gi*gj*gk, dim)``: a third of the channels per axis
    (MAE's 2-D sin-cos extended to three axes; channels beyond ``6 * (dim // 6)`` are zero)."""
    per_axis = dim // 6 * 2
    omega = 1.0 / 10000 ** (torch.arange(per_axis // 2, dtype=torch.float64) / max(per_axis // 2, 1))
    coords = torch.meshgrid(*[torch.arange(g, dtype=torch.float64) for g in grid], indexing="ij")
    parts = []
    for c in coords:
        angles = c.reshape(-1, 1) * omega[None]
        parts += [torch.sin(angles), torch.cos(angles)]
    emb = torch.cat(parts, dim=1)
    return F.pad(emb, (0, dim - emb.shape[1])).float()


class TokenDecoder(nn.Module):
    """MAE decoder: visible tokens ``(B, M, D)`` + restore order -> voxels per patch ``(B, N, p^3 * C)``."""

    def __init__(self, embed_dim: int, patch_voxels: int, dim: int = 128, depth: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, 4.0, init_values=None) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pred = nn.Linear(dim, patch_voxels)
        self.dim = dim
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(init_vit_weights)

    def forward(self, visible: torch.Tensor, keep: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """``keep: (B, M)`` token indices of ``visible``; ``grid``: token grid (N = gi*gj*gk)."""
        b = visible.shape[0]
        n = int(grid[0] * grid[1] * grid[2])
        src = self.embed(visible)  # under autocast: the autocast dtype
        x = self.mask_token.expand(b, n, -1).to(src.dtype).clone()
        x = x.scatter(1, keep.unsqueeze(-1).expand(-1, -1, self.dim), src)
        x = x + sincos_3d(grid, self.dim).to(x)[None]
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))
