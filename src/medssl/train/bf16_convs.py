"""bf16 autocast training on a CPU: the 3D convolutions oneDNN's bf16 kernels get wrong run in float32.

On an AVX-512-BF16 CPU without AMX (AMD Zen 4; torch 2.13, oneDNN 3.12) the bf16 weight gradient of a 3D
convolution (``jit_bf16:avx512_core_bf16``, ``backward_weights``) is computed from memory the kernel never wrote
for two classes of shapes. `benchmarks/bf16_conv_sweep.py` (2026-12-04; every side of 1-24 for kernels 3, 1x3x3,
3x3x1, 2, 4 with strides 1, 2, 1x2x2, and transposed 2/2; 16-64 channels, batch 1-2; 1682 shapes) found 269
wrong, 54 of which abort the process ("double free or corruption"), all of them in these classes:

- an output depth of 2 with a kernel deeper than 1 (e.g. ``(2, 16, 2, 64, 64)``, stride 1): a different gradient
  on every call, up to 1e37 or NaN, for every height and width tried;
- a stride of 2 on an input whose height or width is 1 (e.g. ``(2, 16, 8, 1, 8)``, kernel 3 or 1x3x3): wrong,
  NaN, or the abort.

Every other shape agreed with float32 (relative error of the weight gradient < 0.05) and repeated bit for bit;
transposed convolutions and kernels of 2 or 4 with their own stride were right throughout, and so were, for all
1682 shapes, the bf16 forward pass (inference; 1 and 2 threads) and the input gradient alone (``--what``). So
under bf16 autocast on the CPU the training step runs inside `float32_where_bf16_is_unsound`: a ``torch.conv3d`` call
whose input or output has a side of 1, or whose output depth is at most 2 with a kernel deeper than 1, computes
in float32 (its forward, input and weight gradients); every other operation is left to autocast. Those tensors
are the deepest stages' few voxels, so the step keeps bf16's speed; through the guard all 1682 shapes are right,
on 1 and 2 threads. The rule is applied on every CPU, AMX included (there the kernels are others and were right),
so that one code path is what the tests check; ``Testing/test_bf16_training_cpu.py`` sweeps the classes through
it on the machine it runs on.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, Sequence, Tuple

import torch
from torch.overrides import TorchFunctionMode


def _triple(value: Any) -> Tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    value = tuple(int(v) for v in value)
    return value if len(value) == 3 else (value[0],) * 3


def conv3d_output_shape(spatial: Sequence[int], kernel: Sequence[int], stride: Any = 1, padding: Any = 0,
                        dilation: Any = 1) -> Tuple[int, int, int]:
    """Output ``(D, H, W)`` of ``torch.conv3d`` on an input of ``spatial`` sides (``padding`` an int, a triple,
    ``"same"`` or ``"valid"``), by the formula in ``torch.nn.Conv3d``'s documentation."""
    stride, dilation = _triple(stride), _triple(dilation)
    if padding == "same":
        return tuple(int(s) for s in spatial)
    pad = (0, 0, 0) if padding == "valid" else _triple(padding)
    return tuple((int(n) + 2 * p - d * (int(k) - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(spatial, kernel, stride, pad, dilation))


def conv3d_needs_float32(input_shape: Sequence[int], weight_shape: Sequence[int], stride: Any = 1,
                         padding: Any = 0, dilation: Any = 1) -> bool:
    """Whether ``torch.conv3d`` on an ``(N, C, D, H, W)`` input with an ``(O, C/g, kD, kH, kW)`` weight is in a
    shape class whose bf16 weight gradient is unsound on AVX-512-BF16 (module docstring)."""
    spatial, kernel = tuple(input_shape[2:]), tuple(weight_shape[2:])
    out = conv3d_output_shape(spatial, kernel, stride, padding, dilation)
    return min(spatial) == 1 or min(out) == 1 or (kernel[0] > 1 and out[0] <= 2)


_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


class _Float32SmallConvs(TorchFunctionMode):
    """Runs ``torch.conv3d`` (what ``nn.Conv3d`` and ``F.conv3d`` call) in float32 where `conv3d_needs_float32`;
    counts how many calls it moved (``moved``) and saw (``seen``)."""

    def __init__(self) -> None:
        super().__init__()
        self.moved = self.seen = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not torch.conv3d:
            return func(*args, **kwargs)
        named: Dict[str, Any] = {**dict(zip(_CONV_ARGS, args)), **kwargs}
        self.seen += 1
        x, w = named["input"], named["weight"]
        if x.dim() != 5 or not conv3d_needs_float32(x.shape, w.shape, named.get("stride", 1),
                                                    named.get("padding", 0), named.get("dilation", 1)):
            return func(*args, **kwargs)
        self.moved += 1
        bias = named.get("bias")
        named.update(input=x.float(), weight=w.float(), bias=None if bias is None else bias.float())
        with torch.autocast(x.device.type, enabled=False):
            return func(**{k: named[k] for k in _CONV_ARGS if k in named})


@contextlib.contextmanager
def float32_where_bf16_is_unsound(active: bool) -> Iterator[_Float32SmallConvs | None]:
    """Context for a training step's forward pass: with ``active`` (bf16 autocast on a CPU), the convolutions of
    the unsound shape classes compute in float32; autograd then records their float32 kernels for the backward
    pass. Inactive, it changes nothing. Activation checkpointing recomputes a segment in the backward pass, where
    autograd's engine does not carry Python's torch-function modes (tried, torch 2.13): a checkpointed moved
    convolution would come back in bf16 and ``torch.utils.checkpoint`` stops with a CheckpointError (the dtypes
    differ), so it fails loudly, never silently; no network here checkpoints a convolution (SwinUNETR's
    ``use_checkpoint`` covers its attention blocks)."""
    if not active:
        yield None
        return
    with _Float32SmallConvs() as mode:
        yield mode
