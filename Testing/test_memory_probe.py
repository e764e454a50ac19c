"""The activation probe of the training-memory estimate (`train.memory.activation_bytes_per_voxel`) runs on the
meta device: it must measure what a real forward measures, for every registered family, leave the network's own
tensors in place, and fall back to a real forward where a network's code needs values."""
from __future__ import annotations

import pytest
import torch

from medssl.hub.backbone_source import default_decoder
from medssl.hub.pretrained import structure_network
from medssl.models import BACKBONES, build_network, resolve_arch
from medssl.train import memory


@pytest.mark.parametrize("name", BACKBONES.names())
def test_the_meta_probe_measures_what_a_real_forward_measures(name):
    arch = resolve_arch(name, default_decoder(name), {"preset": "test"})
    net = build_network(arch, 2, 3)
    side = memory.probe_side(net)
    own = {k: (t, t.clone()) for k, t in net.state_dict(keep_vars=True).items()}
    on_meta = memory._output_bytes(net, 2, side, on_meta=True)
    after = net.state_dict(keep_vars=True)  # the same tensor objects, with the same values, on the CPU
    assert all(after[k] is t and t.device.type == "cpu" and torch.equal(t, copy) for k, (t, copy) in own.items())
    assert on_meta == memory._output_bytes(net, 2, side, on_meta=False) > 0
    after = net.state_dict(keep_vars=True)  # the real probe (eval mode) leaves batch-norm statistics as they were
    assert all(torch.equal(after[k], copy) for k, (_, copy) in own.items()) and net.training
    assert memory.activation_bytes_per_voxel(structure_network(arch, 2, 3), 2, side) == on_meta / side**3


class ReadsAValue(torch.nn.Module):
    """A network whose forward needs a tensor's value (cannot run on the meta device)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y * 2 if float(y.abs().sum()) >= 0 else y


def test_a_network_that_reads_values_is_probed_for_real():
    net = ReadsAValue()
    with pytest.raises((RuntimeError, NotImplementedError)):
        memory._output_bytes(net, 1, 8, on_meta=True)
    assert memory.activation_bytes_per_voxel(net, 1, 8) == 4 * 4  # the conv's 4 float32 channels per voxel
    assert net.conv.weight.device.type == "cpu"


def test_a_frozen_backbone_counts_its_weights_only(monkeypatch):
    """Frozen parameters (a frozen backbone, an EMA teacher) have no gradient and no AdamW moments: 4 bytes each
    instead of 16; fine-tuning's auto preset sees the difference."""
    from medssl.train import auto_preset

    net = build_network(resolve_arch("resenc", "unet", {"preset": "test"}), 1, 2)
    patch = (32, 32, 32)
    trained = memory.estimate_training(net, 1, patch, 2, amp=False)
    encoder = sum(p.numel() for p in net.encoder.parameters())
    for p in net.encoder.parameters():
        p.requires_grad_(False)
    frozen = memory.estimate_training(net, 1, patch, 2, amp=False)
    assert memory.parameter_counts(net)[1] == encoder > 0
    assert abs((trained.parameters_gb - frozen.parameters_gb) * memory.GB - 12 * encoder) < 1
    assert frozen.activations_gb == trained.activations_gb
    budget = (frozen.total_gb + trained.total_gb) / 2 / auto_preset.MARGIN  # frozen fits, trained does not
    monkeypatch.setattr(auto_preset.resources, "available_gb", lambda device: budget)
    assert auto_preset.fit_finetuning(net, 1, list(patch), 2, torch.device("cpu"), False)[2] is None
    for p in net.encoder.parameters():
        p.requires_grad_(True)
    assert auto_preset.fit_finetuning(net, 1, list(patch), 2, torch.device("cpu"), False)[2] is not None  # scaled


def test_the_check_after_building_does_not_count_the_built_weights_twice(monkeypatch):
    """`--preset auto` fits the estimate to the memory free before the network exists; the check after building
    sees that memory less the weights now held, which are part of the estimate (a bare dino3d run: fitted to
    17.0 of 22.7 GB free, then refused at 18.8 GB free)."""
    from medssl.errors import ResourceError

    net = build_network(resolve_arch("resenc", "unet", {"preset": "test"}), 1, 2)
    est = memory.estimate_training(net, 1, (32, 32, 32), 1, amp=False)
    weights = memory.resident_weights_gb(net, torch.device("cpu"))
    assert abs(weights * memory.GB - 4 * sum(p.numel() for p in net.parameters())) < 1
    free_after_building = (est.total_gb - weights / 2) / 0.9  # fits once the held weights are counted as held
    monkeypatch.setattr(memory, "available_gb", lambda device: free_after_building)
    memory.check_training_fits(net, 1, (32, 32, 32), 1, torch.device("cpu"), amp=False)
    monkeypatch.setattr(memory, "available_gb", lambda device: (est.total_gb - 2 * weights) / 0.9)
    with pytest.raises(ResourceError, match="training needs about"):
        memory.check_training_fits(net, 1, (32, 32, 32), 1, torch.device("cpu"), amp=False)
