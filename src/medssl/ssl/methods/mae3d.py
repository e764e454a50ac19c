"""Masked autoencoding in 3-D: dense masked input for CNNs, token dropping for ViTs.

- CNN (any backbone with a dense decoder, e.g. ResEnc + U-Net decoder): the recipe of Wald et al.,
  "Revisiting MAE pre-training for 3D medical image segmentation" (CVPR 2025, nnssl ``BaseMAETrainer``),
  re-implemented from the paper: 75 % of the 16^3-voxel blocks of a 160^3 crop are set to zero, the whole
  encoder-decoder reconstructs the crop (one output channel) and the loss is the mean squared error on the
  masked voxels only; optionally against a target z-scored per block (MAE ``norm_pix_loss``). Views: random
  crops with nnssl's spatial augmentation (rotation +-30 degrees and scaling 0.7-1.4, each with p = 0.2;
  mirroring).
- ViT (``vit3d``): MAE (He et al., CVPR 2022) for 3-D patches, re-implemented from the paper (the MAE code is
  CC BY-NC): 75 % of the patch tokens are dropped, the encoder sees the visible 25 %, a light transformer
  decoder (`..heads.TokenDecoder`) predicts the voxels of every patch, MSE on the dropped ones.

Only the encoder is exported by default (nnssl fine-tunes the encoder with a fresh decoder); with
``export_decoder: true`` the CNN decoder is exported too (its 1-channel output layer is re-initialised by
fine-tuning).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ...data.volumes import VolumeSet
from ...io.settings import require_fields
from ...errors import InputError
from ...models.registry import BACKBONES
from ...models.segmentation import build_network
from ..base import METHODS, SSLMethod, check_input_size, prefixed
from ..batches import pick_volume
from ..heads import TokenDecoder
from ..losses.reconstruction import from_blocks, masked_mse, normalize_blocks, to_blocks
from ..masking import exact_mask, expand_blocks, keep_indices
from ..views import random_centre, random_rotation, sample_view


@dataclass
class MAE3DConfig:
    """nnssl ``BaseMAETrainer`` recipe (crop = the plan's patch size, 160^3 in the recipe)."""

    mask_ratio: float = 0.75
    block: int = 16  # CNN masking block side in voxels; ViTs mask whole patch tokens
    norm_target: bool = False
    p_rotation: float = 0.2
    max_rotation: float = 30.0
    p_scale: float = 0.2
    scale: Tuple[float, float] = (0.7, 1.4)
    p_mirror: float = 0.5
    decoder_dim: int = 512  # ViT decoder (MAE "dec512d8b")
    decoder_depth: int = 8
    decoder_heads: int = 16
    export_decoder: bool = False
    crop_size: Optional[List[int]] = None  # default: the plan's patch size

    def __post_init__(self) -> None:
        require_fields(self, positive=("block", "decoder_dim", "decoder_depth", "decoder_heads", "crop_size"),
                       ranges=("scale",), fractions=("mask_ratio",))


@dataclass
class MAEViews:
    """Augmented crops and their block masks (True = masked)."""

    cfg: MAE3DConfig
    crop: Tuple[int, int, int]
    block: int

    def batch(self, volumes: VolumeSet, rng: np.random.Generator, batch_size: int) -> Dict[str, torch.Tensor]:
        """{"image": (B, 1, *crop), "mask": (B, gi, gj, gk) bool}."""
        grid = tuple(c // self.block for c in self.crop)
        images = [self._crop(volumes, rng) for _ in range(batch_size)]
        masks = [torch.from_numpy(exact_mask(rng, int(np.prod(grid)), self.cfg.mask_ratio).reshape(grid))
                 for _ in range(batch_size)]
        return {"image": torch.stack(images), "mask": torch.stack(masks)}

    def _crop(self, volumes: VolumeSet, rng: np.random.Generator) -> torch.Tensor:
        c, v = self.cfg, pick_volume(volumes, rng)
        m = random_rotation(rng, c.max_rotation) if rng.random() < c.p_rotation else np.eye(3)
        if rng.random() < c.p_scale:
            m = m * rng.uniform(*c.scale)
        for axis in range(3):
            if rng.random() < c.p_mirror:
                m[:, axis] = -m[:, axis]
        extent = np.abs(m) @ np.asarray(self.crop, float)
        centre = random_centre(rng, extent, volumes.boxes[v])
        return sample_view(volumes.arrays[v], centre, m, self.crop)


@METHODS.register("mae3d")
class MAE3D(SSLMethod):
    """``forward({"image", "mask"})`` -> {"loss": masked MSE}; see the module docstring."""

    Config = MAE3DConfig

    def __init__(self, arch, cfg: MAE3DConfig, patch_size) -> None:
        super().__init__(arch, cfg, patch_size)
        self.crop = tuple(int(c) for c in (cfg.crop_size or patch_size))
        self.tokens = BACKBONES.get(arch.backbone).tokens
        if self.tokens:
            self.encoder = BACKBONES.get(arch.backbone).build(1, **arch.backbone_kwargs)
            p = self.encoder.patch_size
            self.block = p
            self.decoder = TokenDecoder(self.encoder.embed_dim, p ** 3, cfg.decoder_dim, cfg.decoder_depth,
                                        cfg.decoder_heads)
        else:
            self.net = build_network(arch, 1, 1)
            self.block = cfg.block
        if any(c % self.block for c in self.crop):
            raise InputError(f"mae3d: the crop {list(self.crop)} must be a multiple of the mask block {self.block}")
        check_input_size(self.encoder if self.tokens else self.net.encoder, self.crop, "mae3d crop", self.tokens)
        self.exports_decoder = cfg.export_decoder and not self.tokens

    def view_maker(self) -> MAEViews:
        return MAEViews(self.cfg, self.crop, self.block)

    def _target(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, V)`` block rows of ``x`` (normalised per block when ``norm_target``)."""
        rows = to_blocks(x, (self.block,) * 3)
        return normalize_blocks(rows) if self.cfg.norm_target else rows

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        x, mask = batch["image"], batch["mask"]
        grid = tuple(mask.shape[1:])
        if self.tokens:
            flat = mask.flatten(1)
            keep = keep_indices(flat)
            visible = self.encoder.forward_tokens(x, keep=keep)["patch"]
            pred = self.decoder(visible, keep, grid)
            return {"loss": masked_mse(pred, self._target(x), flat.unsqueeze(-1))}
        voxels = expand_blocks(mask, (self.block,) * 3)
        pred = self.net(x * (~voxels).to(x.dtype))
        target = x if not self.cfg.norm_target else from_blocks(self._target(x), (self.block,) * 3, grid)
        return {"loss": masked_mse(pred, target, voxels)}

    def activation_network(self) -> Optional[torch.nn.Module]:
        """ViT: the encoder on the visible tokens and the token decoder on all (`VisibleTokensProbe`); the plan's
        network, probed before, has UNETR's full-resolution decoder, which MAE never runs. CNN: the plan's network
        (None), as ``self.net`` is built like it."""
        return VisibleTokensProbe(self.encoder, self.decoder, self.cfg.mask_ratio) if self.tokens else None

    def export_state(self) -> Dict[str, torch.Tensor]:
        if self.tokens:
            return prefixed(self.encoder.state_dict(), "encoder.")
        state = self.net.state_dict()
        keep = ("encoder.", "decoder.") if self.exports_decoder else ("encoder.",)
        return prefixed({k: v for k, v in state.items() if k.startswith(keep)}, "")


class VisibleTokensProbe(torch.nn.Module):
    """``forward(x: (B, 1, I, J, K))``: MAE's ViT path without the loss, for the training-memory probe
    (`train.memory`): the first ``1 - mask_ratio`` of the tokens through the encoder, every token through the
    decoder. Holds the method's own encoder and decoder (not copies)."""

    def __init__(self, encoder: torch.nn.Module, decoder: torch.nn.Module, mask_ratio: float) -> None:
        super().__init__()
        self.encoder, self.decoder, self.mask_ratio = encoder, decoder, float(mask_ratio)
        self.size_divisor = encoder.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = tuple(int(s) // self.encoder.patch_size for s in x.shape[2:])
        n = int(np.prod(grid))
        visible = max(1, int(round(n * (1 - self.mask_ratio))))
        keep = torch.arange(visible, device=x.device).expand(x.shape[0], visible)
        return self.decoder(self.encoder.forward_tokens(x, keep=keep)["patch"], keep, grid)
