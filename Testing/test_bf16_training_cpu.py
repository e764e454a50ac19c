"""bf16 training on the CPU, with the convolutions oneDNN's bf16 kernels get wrong in float32 (`bf16_convs`).

Found on an AMD Zen 4 (AVX-512-BF16, no AMX), torch 2.13 / oneDNN 3.12: the bf16 weight gradient of a 3D
convolution whose output depth is 2, or of a stride-2 one on an input with a side of 1
(``jit_bf16:avx512_core_bf16``, ``backward_weights``), differs on every call, by up to 1e37, or aborts the
process: the kernel reads memory it never wrote. The oracle tests of exact resume and DDP failed there (and one
resumed fine-tune saved NaN weights) while ``amp: auto`` trained in bf16 without the float32 convolutions. The
sweep below runs those shape classes, and their neighbours, through the training step's guard on the machine at
hand, in a child process (an abort must not take pytest with it): every weight gradient must then repeat and
agree with float32's.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medssl.inference import runtimes
from medssl.train.bf16_convs import conv3d_needs_float32, conv3d_output_shape, float32_where_bf16_is_unsound
from medssl.train.loop import _amp_dtype

CPU = torch.device("cpu")
SWEEP = Path(__file__).resolve().parents[1] / "benchmarks" / "bf16_conv_sweep.py"


def bf16_conv_calls(calls: int = 8):
    """(outputs, input gradients) of ``calls`` identical bf16 autocast passes of a 16->16 3x3x3 convolution on a
    (2, 16, 2, 2, 2) input (a shape whose weight gradient is unsound), with allocations in between."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(16, 16, 3, padding=1)
    x0 = torch.randn(2, 16, 2, 2, 2)
    outs, dxs = [], []
    for r in range(calls):
        _ = [torch.randn(997 * (r + 1)) for _ in range(3)]
        x = x0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        dxs.append(torch.autograd.grad(y.float().square().mean(), x)[0])  # no weight gradient asked for
        outs.append(y.detach().float())
    return outs, dxs


def test_bf16_forward_and_input_gradients_repeat_without_the_guard(one_thread):
    """What inference uses (bf16 autocast forward passes) needs no guard, nor does the input gradient."""
    for tensors in bf16_conv_calls():
        assert all(torch.isfinite(t).all() and torch.equal(t, tensors[0]) for t in tensors)


def test_every_swept_shape_trains_soundly_through_the_guard():
    child = subprocess.run([sys.executable, str(SWEEP), "--grid", "test", "--guarded"], capture_output=True,
                           text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    report = json.loads(child.stdout)
    assert report["cases"] >= 40 and report["bad"] == 0, report["bad_cases"]


@pytest.mark.parametrize("spatial, kernel, stride, padding, dilation", [
    ((7, 9, 11), (3, 3, 3), 1, 1, 1), ((7, 9, 11), (3, 3, 3), 2, 1, 1), ((8, 8, 8), (1, 3, 3), (1, 2, 2), (0, 1, 1), 1),
    ((32, 32, 32), (16, 16, 16), 16, 0, 1), ((9, 9, 9), (3, 3, 3), 1, "same", 2), ((9, 9, 9), (3, 3, 3), 1, "valid", 2),
    ((5, 6, 7), (3, 3, 3), 3, 2, 2)])
def test_output_shape_is_torchs(spatial, kernel, stride, padding, dilation):
    x, w = torch.empty(1, 2, *spatial, device="meta"), torch.empty(4, 2, *kernel, device="meta")
    real = torch.nn.functional.conv3d(x, w, None, stride, padding, dilation).shape[2:]
    assert conv3d_output_shape(spatial, kernel, stride, padding, dilation) == tuple(real)


@pytest.mark.parametrize("input_shape, weight_shape, stride, float32", [
    ((2, 16, 2, 64, 64), (16, 16, 3, 3, 3), 1, True),  # output depth 2
    ((2, 16, 4, 4, 4), (16, 16, 3, 3, 3), 2, True),  # stride 2 down to depth 2
    ((2, 16, 6, 1, 8), (16, 16, 3, 3, 3), 2, True),  # a side of 1: aborted the process unguarded
    ((2, 16, 4, 1, 8), (16, 16, 1, 3, 3), (1, 2, 2), True),
    ((2, 16, 2, 8, 8), (16, 16, 1, 3, 3), 1, False),  # a kernel of depth 1 at depth 2: sound
    ((2, 16, 3, 3, 5), (16, 16, 3, 3, 3), 1, False), ((2, 16, 48, 48, 48), (16, 1, 3, 3, 3), 1, False),
    ((2, 1, 96, 96, 96), (768, 1, 16, 16, 16), 16, False)])
def test_the_unsound_classes(input_shape, weight_shape, stride, float32):
    pad = tuple(k // 2 for k in weight_shape[2:]) if stride != 16 else 0
    assert conv3d_needs_float32(input_shape, weight_shape, stride, pad) is float32


def test_the_guard_moves_only_the_unsound_convolutions_and_computes_them_in_float32(one_thread):
    torch.manual_seed(0)
    deep, wide = torch.nn.Conv3d(4, 4, 3, padding=1), torch.nn.Conv3d(4, 4, 3, padding=1)
    up = torch.nn.ConvTranspose3d(4, 4, 2, stride=2)
    x_deep, x_wide = torch.randn(1, 4, 2, 6, 6), torch.randn(1, 4, 6, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16), float32_where_bf16_is_unsound(True) as mode:
        y_deep, y_wide = deep(x_deep), wide(x_wide)
        y_func = torch.nn.functional.conv3d(x_deep, deep.weight, deep.bias, padding=1)
        y_up = up(x_deep)
    assert (mode.seen, mode.moved) == (3, 2)  # the transposed convolution is another op, left to autocast
    assert y_deep.dtype == y_func.dtype == torch.float32 and y_wide.dtype == y_up.dtype == torch.bfloat16
    assert torch.allclose(y_deep, torch.nn.functional.conv3d(x_deep, deep.weight, deep.bias, padding=1), atol=1e-6)
    y_deep.sum().backward()
    assert deep.weight.grad.dtype == torch.float32 and torch.isfinite(deep.weight.grad).all()
    with float32_where_bf16_is_unsound(False) as inactive:
        assert inactive is None


@pytest.mark.parametrize("flags, trains_bf16, predicts_bf16", [
    ({"avx512_bf16", "amx_bf16", "amx_tile"}, True, True),  # AMX: bf16 everywhere
    ({"avx512_bf16"}, True, True),  # Zen 4: bf16, the unsound convolutions in float32
    ({"avx2", "fma"}, False, False)])
def test_amp_auto_trains_in_bf16_where_the_cpu_computes_it(monkeypatch, flags, trains_bf16, predicts_bf16):
    monkeypatch.setattr(runtimes, "cpu_flags", lambda path="/proc/cpuinfo": frozenset(flags))
    assert (_amp_dtype("auto", CPU) == torch.bfloat16) is trains_bf16
    assert (runtimes.choose_runtime("torch", CPU).precision == "bfloat16") is predicts_bf16
    assert _amp_dtype("off", CPU) is None and _amp_dtype("bf16", CPU) == torch.bfloat16  # asked for: given
