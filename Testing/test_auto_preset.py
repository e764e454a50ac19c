"""--preset auto: the recipe when it fits, else batch, then crop, then model size; workers within the cores."""
from __future__ import annotations

import pytest
import torch

from medssl.inference import resources
from medssl.train import auto_preset
from medssl.train.config import load_config
from medssl.train.pretrain import PretrainConfig, preset_name


def test_reductions_come_in_order_batch_patch_model():
    seen = [(c.backbone, c.batch, c.patch[0], c.method.get("base_size"), c.change)
            for c in auto_preset.candidates("voco", "resenc:small", 4, [96] * 3, {}, {"base_size": 64})]
    assert seen[:5] == [("resenc:small", 4, 96, None, ""), ("resenc:small", 2, 96, None, "batch 4 -> 2"),
                        ("resenc:small", 1, 96, None, "batch 4 -> 1"),
                        ("resenc:small", 1, 48, 32, "batch 4 -> 1, patch 96 -> 48"),
                        ("resenc:small", 1, 32, 32, "batch 4 -> 1, patch 96 -> 32")]
    assert seen[5] == ("resenc:tiny", 4, 96, None, "model resenc:tiny")  # the next size, from the recipe's batch


def _mae(backbone="resenc:small"):
    cfg = load_config(PretrainConfig, "pretrain", preset_name("mae3d", "auto"))
    cfg.backbone = backbone
    return cfg


def test_the_recipe_is_kept_when_it_fits(monkeypatch):
    monkeypatch.setattr(resources, "available_gb", lambda device: 1e6)
    cfg, note = auto_preset.fit_pretraining(_mae(), "mae3d", torch.device("cpu"))
    assert note is None and (cfg.batch_size, cfg.patch_size) == (8, [160, 160, 160])


def test_a_recipe_too_large_is_scaled_down_with_one_line(monkeypatch):
    monkeypatch.setattr(resources, "available_gb", lambda device: 2.0)
    cfg, note = auto_preset.fit_pretraining(_mae(), "mae3d", torch.device("cpu"))
    assert note.startswith("preset auto: the mae3d recipe (resenc:small, batch 8, patch 160) needs about ")
    assert "cpu has 2.0 GB free; scaled down: batch 8 -> 1" in note and cfg.batch_size == 1
    assert cfg.patch_size[0] < 160 and _mae().batch_size == 8  # the loaded recipe itself is untouched
    monkeypatch.setattr(resources, "available_gb", lambda device: 0.01)  # nothing fits: the recipe, refused later
    cfg, note = auto_preset.fit_pretraining(_mae("resenc:tiny"), "mae3d", torch.device("cpu"))
    assert note is None and cfg.batch_size == 8


def test_voco_counts_its_eleven_crops(monkeypatch):
    from types import SimpleNamespace

    from medssl.ssl import METHODS
    from medssl.ssl.base import method_config

    view = SimpleNamespace(cfg=method_config("voco", {}), patch_size=(96, 96, 96))
    assert METHODS.get("voco").forward_voxels(view) == 11 * 64 ** 3
    dino = SimpleNamespace(cfg=method_config("dino3d", {}), patch_size=(112, 112, 112))
    assert METHODS.get("dino3d").forward_voxels(dino) == 2 * 96 ** 3 + 8 * 48 ** 3


def test_workers_never_exceed_the_cores(monkeypatch):
    from medssl.inference import devices

    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert [auto_preset.worker_count(n) for n in (0, 1, 8)] == [0, 1, 1]
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert auto_preset.worker_count(8) == 0


def test_the_runs_own_memory_check_counts_every_crop_as_auto_does(monkeypatch):
    """`pretrain.check_memory` (the refusal before a run starts, whatever the preset) estimated one patch per
    volume: 5.96 GB for a VoCo run that took 17.0 GB (auto's estimate 17.4 GB), so ``--preset recipe`` (34 GB)
    started on a 23 GB machine. It now counts the method's crops, as `auto_preset` does, and refuses in time."""
    from types import SimpleNamespace

    import pytest

    from medssl.errors import ResourceError
    from medssl.events import ListSink
    from medssl.models import build_network, resolve_arch
    from medssl.ssl import build_method
    from medssl.train.pretrain import check_memory

    patch = [64, 64, 64]
    arch = resolve_arch("resenc", "unet", {"preset": "test"})
    ssl = build_method("voco", arch, {}, patch)  # base crops of 64: 11 x 64^3 voxels a volume
    net = build_network(arch, 1, 2)
    plan, cfg = SimpleNamespace(num_channels=1, patch_size=patch), SimpleNamespace(loop=SimpleNamespace(amp="off"),
                                                                                    batch_size=2)
    monkeypatch.setattr(auto_preset.memory, "available_gb", lambda device: 1e6)
    sink = ListSink()
    check_memory(net, ssl, plan, cfg, torch.device("cpu"), sink)
    logged = float(sink.of("log")[-1]["message"].split()[3])
    cand = auto_preset.Candidate("resenc:test", 2, patch, {})
    auto = auto_preset._estimate_gb("voco", cand, 1, False, {})
    one_patch = auto_preset.memory.estimate_training(net, 1, patch, 2, False, optimised=ssl).total_gb
    assert logged == pytest.approx(auto, rel=0.05) and logged > 1.5 * one_patch, (logged, auto, one_patch)
    monkeypatch.setattr(auto_preset.memory, "available_gb", lambda device: (one_patch + auto) / 2 / 0.9)
    with pytest.raises(ResourceError, match="training needs about") as refused:
        check_memory(net, ssl, plan, cfg, torch.device("cpu"), ListSink())
    assert "--preset auto" not in str(refused.value)  # auto itself found nothing smaller that fits
    assert "free; use --batch-size 1 or a smaller patch_size in --config" in str(refused.value)
    with pytest.raises(ResourceError, match=r"; use --preset auto \(the default: the recipe scaled down to fit\), or "
                                            r"--batch-size 1"):
        check_memory(net, ssl, plan, cfg, torch.device("cpu"), ListSink(), auto=False)  # --preset recipe


VIT_METHODS = {  # tiny settings of the two ViT methods
    "dino3d": {"global_size": 32, "local_size": 16, "n_local": 2, "dino_prototypes": 64, "ibot_prototypes": 64,
               "head_hidden": 32, "head_bottleneck": 16},
    "mae3d": {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2},
}


@pytest.mark.parametrize("method", sorted(VIT_METHODS))
def test_vit_methods_estimate_what_they_run_not_the_plans_decoder(method, monkeypatch):
    """DINO runs the student's ViT and its heads, MAE the ViT on the visible tokens and a token decoder; neither
    runs the plan's UNETR decoder, whose full-resolution convolutions the probe counted (DINO, ViT-L: 2098 against
    654 bytes a voxel; a step estimated at 17.0 GB peaked at 8.4 GB). The run's own check and ``--preset auto``
    probe the same modules, the method's own."""
    from types import SimpleNamespace

    from medssl.events import ListSink
    from medssl.models import build_network, resolve_arch
    from medssl.ssl import build_method
    from medssl.train.pretrain import check_memory

    arch = resolve_arch("vit3d", "unetr", {"preset": "test"})
    ssl = build_method(method, arch, VIT_METHODS[method], [32, 32, 32])
    probed = ssl.activation_network()
    own = {id(t) for t in ssl.parameters()}
    assert probed is not None and {id(t) for t in probed.parameters()} <= own
    net = build_network(arch, 1, 2)
    batch = 1000  # GBs of activations: the log line's two decimals are enough
    plan, cfg = SimpleNamespace(num_channels=1, patch_size=[32] * 3), SimpleNamespace(loop=SimpleNamespace(amp="off"),
                                                                                      batch_size=batch)
    monkeypatch.setattr(auto_preset.memory, "available_gb", lambda device: 1e6)
    sink = ListSink()
    check_memory(net, ssl, plan, cfg, torch.device("cpu"), sink)
    logged = float(sink.of("log")[-1]["message"].split()[3])
    cand = auto_preset.Candidate("vit3d:test", batch, [32] * 3, VIT_METHODS[method])
    auto = auto_preset._estimate_gb(method, cand, 1, False, {})
    whole = auto_preset.memory.estimate_training(net, 1, [32] * 3, batch, False, optimised=ssl,
                                                 voxels_per_sample=ssl.forward_voxels())
    per_voxel = auto_preset.memory.activation_bytes_per_voxel(probed, 1, 32)
    assert logged == pytest.approx(auto, rel=0.02) and logged < 0.8 * whole.total_gb, (logged, auto, whole)
    voxels = ssl.forward_voxels() * batch
    assert logged == pytest.approx(whole.parameters_gb + per_voxel * voxels / auto_preset.memory.GB, rel=0.02)


def test_the_cnn_mae_estimates_the_plans_network():
    from medssl.models import resolve_arch
    from medssl.ssl import build_method

    assert build_method("mae3d", resolve_arch("resenc", "unet", {"preset": "test"}), {}, [32] * 3
                        ).activation_network() is None
