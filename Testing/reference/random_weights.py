"""Random values for every tensor of a reference network, so that each parameter shows in its output.

Used by the reference scripts in this folder (the upstream network is built by its authors' code, then
randomised here; medssl loads the same values). Initialisers leave LayerScale at 1e-5, biases and norms at
0/1 and BatchNorm statistics at 0/1, which would hide a wrong bias, a wrong norm or a skipped LayerScale:

* weights with two or more dimensions: N(0, 1 / fan_in) (``fan_in = prod(shape[1:])``, activations stay O(1));
* norm layers (Batch/Instance/Layer/Group): weight 1 + N(0, 0.2^2), bias N(0, 0.2^2), running mean
  N(0, 0.2^2), running variance U(0.5, 1.5); PReLU slopes U(0.05, 0.5);
* other parameters (biases, LayerScale gammas, class/mask tokens, position embeddings, relative-position
  bias tables): N(0, 0.5^2) for tokens and tables, N(0, 0.2^2) for biases and gammas;
* integer buffers (relative-position indices, ``num_batches_tracked``) are kept.

``fp16_grid=True`` rounds every value to the nearest float16 number (still stored as float32), so a golden
file can keep the weights as float16 without losing a bit.
"""
from __future__ import annotations

import math

import torch
from torch import nn

NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
TOKENS = ("cls_token", "mask_token", "pos_embed", "relative_position_bias_table")


def _normal(t: torch.Tensor, std: float, g: torch.Generator, mean: float = 0.0) -> None:
    t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64).mul(std).add(mean).to(t.dtype))


def _uniform(t: torch.Tensor, lo: float, hi: float, g: torch.Generator) -> None:
    t.copy_((torch.rand(t.shape, generator=g, dtype=torch.float64) * (hi - lo) + lo).to(t.dtype))


def _fill(module: nn.Module, name: str, t: torch.Tensor, g: torch.Generator) -> None:
    if not t.is_floating_point():
        return
    if isinstance(module, NORMS):
        if name == "running_var":
            _uniform(t, 0.5, 1.5, g)
        else:
            _normal(t, 0.2, g, 1.0 if name == "weight" else 0.0)
    elif isinstance(module, nn.PReLU):
        _uniform(t, 0.05, 0.5, g)
    elif name in TOKENS:
        _normal(t, 0.5, g)
    elif t.dim() >= 2:
        _normal(t, 1.0 / math.sqrt(max(1, t[0].numel())), g)
    else:
        _normal(t, 0.2, g)


@torch.no_grad()
def randomize_(net: nn.Module, seed: int, fp16_grid: bool = False) -> nn.Module:
    """Overwrite every floating tensor of ``net`` (parameters and buffers, in module order) in place."""
    g = torch.Generator().manual_seed(seed)
    for module in net.modules():
        for name, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            _fill(module, name, t, g)
            if fp16_grid and t.is_floating_point():
                t.copy_(t.half().to(t.dtype))
    return net
