"""Memory estimates before a run, so a too-large patch or batch gives advice instead of an out-of-memory crash.

Training memory = parameters, gradients and AdamW state (16 bytes per optimised parameter, 4 per frozen one:
a frozen backbone, an EMA teacher) + the activations kept for backward. Activations are measured, not guessed:
one forward pass on a small probe input (meta device: shapes only) records the size of every module output
(what autograd keeps), which scales linearly with the number of voxels.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Tuple

import torch

from ..errors import ResourceError
from ..inference.resources import GB, available_gb


@dataclass
class MemoryEstimate:
    parameters_gb: float
    activations_gb: float

    @property
    def total_gb(self) -> float:
        return self.parameters_gb + self.activations_gb


def from_counts(parameters: int, bytes_per_voxel: float, voxels: int, amp: bool, frozen: int = 0) -> MemoryEstimate:
    """The one formula: 16 bytes per optimised parameter (weight, gradient, AdamW's two moments, float32), 4 per
    ``frozen`` one (the weight only: a frozen backbone, an EMA teacher), plus ``bytes_per_voxel``
    (`activation_bytes_per_voxel`) for each of the step's ``voxels`` (batch x what each sample sends through the
    network), 0.6 of that under autocast."""
    return MemoryEstimate((parameters * 16 + frozen * 4) / GB, bytes_per_voxel * voxels * (0.6 if amp else 1.0) / GB)


def parameter_counts(module: torch.nn.Module) -> Tuple[int, int]:
    """(optimised, frozen) parameter counts of ``module``: ``requires_grad`` or not (`from_counts`)."""
    optimised = frozen = 0
    for p in module.parameters():
        if p.requires_grad:
            optimised += p.numel()
        else:
            frozen += p.numel()
    return optimised, frozen


def probe_side(net: torch.nn.Module) -> int:
    """Side of the probe cube for `activation_bytes_per_voxel`: two of the network's size divisors (>= 16)."""
    return 2 * max(int(getattr(net, "size_divisor", 16)), 8)


def activation_bytes_per_voxel(net: torch.nn.Module, in_channels: int, side: int) -> float:
    """Bytes of module outputs per input voxel for a batch of one, measured on a ``side``^3 probe (float32).

    The probe runs on the meta device (only shapes are computed: SwinUNETR-B at 64^3 took 3.5 s for real,
    twice per fine-tune); a network whose forward cannot run there (a data-dependent step) is probed for
    real, in eval mode. ``net`` may itself have meta parameters (`hub.pretrained.structure_network`). Either way
    the network's own tensors are untouched (a forward in training mode moved batch-norm running statistics)."""
    try:
        return _output_bytes(net, in_channels, side, on_meta=True) / side**3
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return _output_bytes(net, in_channels, side, on_meta=False) / side**3


def _output_bytes(net: torch.nn.Module, in_channels: int, side: int, on_meta: bool) -> int:
    """Sum of the float32 sizes of every leaf module's outputs in one no-grad forward of a zero cube."""
    total = [0]

    def hook(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * 4
        elif isinstance(output, (list, tuple)):
            total[0] += sum(o.numel() * 4 for o in output if isinstance(o, torch.Tensor))

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad(), (_tensors_on_meta(net) if on_meta else _in_eval_mode(net)):
            device = next(net.parameters()).device
            net(torch.zeros(1, in_channels, side, side, side, device=device))
    finally:
        for h in handles:
            h.remove()
    return total[0]


@contextlib.contextmanager
def _in_eval_mode(net: torch.nn.Module) -> Iterator[None]:
    """Every module in eval mode while inside (a real probe must not move batch-norm running statistics), then
    each back in its own mode."""
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def _tensors_on_meta(net: torch.nn.Module) -> Iterator[None]:
    """Every parameter and buffer of ``net`` replaced by a meta tensor of its shape while inside, then put back.

    Swapped once per module slot (a tensor shared by two modules, or a module reachable under two names as in
    dynamic-network-architectures' decoder holding its encoder, is restored exactly; torch.func.functional_call
    left some of those on meta)."""
    slots = []
    for module in net.modules():  # each module once
        for table in (module._parameters, module._buffers):
            for name, tensor in table.items():
                if tensor is not None:
                    slots.append((table, name, tensor))
    try:
        for table, name, tensor in slots:
            meta = tensor.detach().to("meta")
            table[name] = torch.nn.Parameter(meta, tensor.requires_grad) if isinstance(tensor, torch.nn.Parameter) else meta
        yield
    finally:
        for table, name, tensor in slots:
            table[name] = tensor


def estimate_training(net: torch.nn.Module, in_channels: int, patch: Sequence[int], batch: int,
                      amp: bool,
                      optimised: Optional[torch.nn.Module] = None,
                      voxels_per_sample: Optional[int] = None) -> MemoryEstimate:
    """Memory of one training step with AdamW for ``batch`` patches of size ``patch`` through ``net``;
    ``optimised`` is the module whose parameters the optimiser holds (default ``net``; for pretraining, the
    SSL method with its heads and teacher); ``voxels_per_sample``: what the network sees per sample when that is
    more than one patch (multi-crop methods, `SSLMethod.forward_voxels`)."""
    per_voxel = activation_bytes_per_voxel(net, in_channels, probe_side(net))
    voxels = batch * (voxels_per_sample or patch[0] * patch[1] * patch[2])
    trained, frozen = parameter_counts(optimised or net)
    return from_counts(trained, per_voxel, voxels, amp, frozen)


def resident_weights_gb(module: torch.nn.Module, device: torch.device) -> float:
    """The part of an estimate already allocated: ``module``'s weights held on ``device``, which its free memory
    no longer counts (the auto preset fitted the estimate to the memory free before they were built)."""
    return sum(p.numel() * p.element_size() for p in module.parameters() if p.device.type == device.type) / GB


def check_training_fits(net: torch.nn.Module, in_channels: int, patch: Sequence[int], batch: int,
                        device: torch.device, amp: bool, margin: float = 0.9,
                        optimised: Optional[torch.nn.Module] = None, advice: Optional[str] = None,
                        voxels_per_sample: Optional[int] = None) -> MemoryEstimate:
    """Raise `ResourceError` with advice when one training step will not fit in ``device``'s free memory.

    ``advice`` replaces the default suggestion (a smaller ``--patch-size``, ``batch_size: 1``), e.g. for
    ``medssl pretrain``, whose patch is set in ``--config``."""
    est = estimate_training(net, in_channels, patch, batch, amp, optimised=optimised,
                            voxels_per_sample=voxels_per_sample)
    free = available_gb(device)
    if est.total_gb - resident_weights_gb(optimised or net, device) > margin * free:
        where = f"GPU {device}" if device.type == "cuda" else "this machine"
        smaller = [max(16, p // 2) for p in patch]
        advice = advice or f"use a smaller patch (--patch-size {' '.join(map(str, smaller))}), batch_size 1 in --config"
        raise ResourceError(
            f"training needs about {est.total_gb:.1f} GB (patch {list(patch)}, batch {batch}) but {where} has "
            f"{free:.1f} GB free; {advice}" + (", or --device cpu" if device.type == "cuda" else "")
        )
    return est
