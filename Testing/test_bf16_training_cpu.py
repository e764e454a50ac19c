"""bf16 training on the CPU only where its gradients are right (`runtimes.cpu_trains_bf16`).

Found on an AMD Zen 4 (AVX-512-BF16, no AMX), torch 2.13 / oneDNN 3.12: the bf16 weight gradient of a 3x3x3
convolution whose output depth is 2 (``jit_bf16:avx512_core_bf16``, ``backward_weights``) differs on every call,
by up to 1e36, because the kernel reads memory it never wrote. The oracle tests of exact resume and DDP failed
there (and one resumed fine-tune saved NaN weights) while ``amp: auto`` trained in bf16. The check below runs that
convolution on the machine at hand: wherever its bf16 weight gradients are not reproducible, ``amp: auto`` must
train in float32; its forward pass and input gradient (all that inference uses) must be reproducible everywhere.
"""
from __future__ import annotations

import pytest
import torch

from medssl.inference import runtimes
from medssl.train.loop import _amp_dtype

CPU = torch.device("cpu")


def bf16_conv_calls(calls: int = 8):
    """(outputs, input gradients, weight gradients) of ``calls`` identical bf16 autocast passes of a 16->16
    3x3x3 convolution on a (2, 16, 2, 2, 2) input, with allocations in between that move the allocator around."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(16, 16, 3, padding=1)
    x0 = torch.randn(2, 16, 2, 2, 2)
    outs, dxs, dws = [], [], []
    for r in range(calls):
        _ = [torch.randn(997 * (r + 1)) for _ in range(3)]
        conv.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        y.float().square().mean().backward()
        outs.append(y.detach().float())
        dxs.append(x.grad.clone())
        dws.append(conv.weight.grad.clone())
    return outs, dxs, dws


def reproducible(tensors) -> bool:
    return all(torch.isfinite(t).all() and torch.equal(t, tensors[0]) for t in tensors)


def test_amp_auto_trains_in_bf16_on_this_cpu_only_if_its_weight_gradients_are_reproducible(one_thread):
    outs, dxs, dws = bf16_conv_calls()
    assert reproducible(outs) and reproducible(dxs)  # what inference (and the input gradient) uses
    if not reproducible(dws):
        assert _amp_dtype("auto", CPU) is None, "this CPU's bf16 weight gradients vary, yet amp: auto picks bf16"


@pytest.mark.parametrize("flags, trains_bf16, predicts_bf16", [
    ({"avx512_bf16", "amx_bf16", "amx_tile"}, True, True),  # AMX: bf16 everywhere
    ({"avx512_bf16"}, False, True),  # Zen 4: bf16 inference, float32 training
    ({"avx2", "fma"}, False, False)])
def test_bf16_training_needs_amx_while_inference_takes_avx512_bf16(monkeypatch, flags, trains_bf16, predicts_bf16):
    monkeypatch.setattr(runtimes, "cpu_flags", lambda path="/proc/cpuinfo": frozenset(flags))
    assert (_amp_dtype("auto", CPU) == torch.bfloat16) is trains_bf16
    assert (runtimes.choose_runtime("torch", CPU).precision == "bfloat16") is predicts_bf16
    assert _amp_dtype("off", CPU) is None and _amp_dtype("bf16", CPU) == torch.bfloat16  # asked for: given
