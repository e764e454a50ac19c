"""The seed systems' fine-tuning recipes are the default for their backbones (and are what training runs)."""
from __future__ import annotations

import json

import pytest
import torch

from helpers_backbones import fake_checkpoint, fingerprint, write_fingerprint_fake
from medssl_test_utils import ITK_DATA, require


def test_every_catalog_entry_names_a_recipe_that_loads():
    from medssl.hub import catalog
    from medssl.hub.recipes import get_recipe
    from medssl.train.config import FinetuneConfig, load_config

    expected = {"vit3d": "3dino", "swin_unetr": "voco", "resenc": "nnssl", "pctnet": "misfm", "fmunet": "misfm"}
    for entry in catalog.entries().values():
        assert entry.recipe == expected[entry.family], entry.id
        load_config(FinetuneConfig, "finetune", "quick", recipe=get_recipe(entry.recipe).finetune)


def test_recipe_sits_between_preset_and_user_settings(tmp_path):
    from medssl.hub.recipes import get_recipe
    from medssl.train.config import FinetuneConfig, load_config
    from medssl.train.optim import lr_factor, warmup_steps

    voco = get_recipe("voco").finetune
    cfg = load_config(FinetuneConfig, "finetune", "quick", recipe=voco)
    assert cfg.loop.steps == 250 and cfg.loop.lr == 3e-4 and cfg.loop.schedule == "cosine"  # steps: the preset's
    assert warmup_steps(cfg.loop) == 5  # 2 % of 250
    user = tmp_path / "mine.yaml"
    user.write_text("loop:\n  lr: 0.01\n  warmup_steps: 7\n")
    cfg = load_config(FinetuneConfig, "finetune", "quick", str(user), {"loop": {"steps": 40}}, recipe=voco)
    assert (cfg.loop.lr, cfg.loop.steps, warmup_steps(cfg.loop)) == (0.01, 40, 7)  # --config and flags win
    assert cfg.loop.optimizer == "adamw"  # what the user did not set stays the recipe's
    misfm = load_config(FinetuneConfig, "finetune", "quick", recipe=get_recipe("misfm").finetune).loop
    assert lr_factor(125, 250, 0, "poly", misfm.poly_power) == pytest.approx(0.5 ** 0.8)


def test_voco_extra_input_channels_start_from_a_fresh_first_layer(one_thread):
    """VoCo's fine-tuning copies name-and-shape matches only: with 2 channels the input layers stay fresh."""
    from medssl.hub.pretrained import resolve_pretrained
    from medssl.models import build_network

    path = fake_checkpoint("voco_b_ssl_head")
    source = resolve_pretrained(str(path), catalog_id="voco_b")
    torch.manual_seed(0)
    net = build_network(source.arch, 2, 3)
    report = source.init_weights(net)
    fresh = {"encoder.swinViT.patch_embed.proj.weight", "encoder.encoder1.layer.conv1.conv.weight",
             "encoder.encoder1.layer.conv3.conv.weight"}
    assert set(report.shape_mismatch) == fresh
    file_sd, own = torch.load(path, weights_only=True), net.state_dict()
    assert all(torch.equal(own["encoder." + k], v) for k, v in file_sd.items() if "encoder." + k not in fresh)
    first = own["encoder.swinViT.patch_embed.proj.weight"]
    repeated = file_sd["swinViT.patch_embed.proj.weight"].repeat(1, 2, 1, 1, 1) / 2
    assert not torch.allclose(first, repeated)


FAMILY_CASES = [  # (fingerprint, catalog id, recipe, optimizer, frozen encoder); VoCo and OpenMind: the
    # fine-tunes from their fakes in test_weights_cli.py check their recipes
    ("3dino_vit_large", "3dino_vit_l", "3dino", "adamw", True),
    ("misfm_pctnet_volf", "misfm_pctnet_ct10k", "misfm", "adam", False),
]


@pytest.mark.parametrize("name,entry_id,recipe,optimizer,frozen", FAMILY_CASES)
def test_short_finetune_from_each_family_uses_its_recipe(name, entry_id, recipe, optimizer, frozen, tmp_path,
                                                        one_thread):
    from medssl import finetune
    from medssl.hub.package import load_package
    from medssl.train.checkpoint import load_checkpoint

    image = require(ITK_DATA / "KmeansTest_T1UCharRaw.nii.gz")
    labels = ITK_DATA / "KmeansTest_T1KmeansPrelimSegmentation.nii.gz"
    if name == "3dino_vit_large":  # 1.4 GB of random values otherwise: one value per large tensor
        path = write_fingerprint_fake(fingerprint(name), tmp_path / "3dino.pth", constant=True)
    else:
        path = fake_checkpoint(name)
    overrides = {"spacing": [4, 4, 4], "patch_size": [32, 32, 32], "batch_size": 1,
                 "loop": {"steps": 1, "checkpoint_every": 1, "validate_every": 1}}  # one 1.4 GB checkpoint (ViT-L)
    out = finetune([str(image)], [str(labels)], tmp_path / "m", backbone=str(path), overrides=overrides,
                   device="cpu", accept_licence=True)
    plan, net, meta = load_package(out)
    assert meta["recipe"]["name"] == recipe and meta["recipe"]["source"]
    loop = meta["training"]["loop"]
    assert loop["optimizer"] == optimizer and meta["training"]["freeze_backbone"] is frozen
    groups = load_checkpoint(out / "training" / "checkpoint_last.pt", "run")["optimizer"]["param_groups"]
    if optimizer == "sgd":
        assert groups[0]["nesterov"] and groups[0]["momentum"] == 0.99
    else:
        assert groups[0]["decoupled_weight_decay"] is (optimizer == "adamw")
    assert json.loads((out / "metadata.json").read_text())["recipe"]["settings"]


def test_3dino_head_merges_channels_also_for_one_channel():
    """3DINO's UNETRHead builds Linear(D, D) + GELU per skip for any channel count; packages without the
    setting (written before) keep identity merges for one channel and still build."""
    from medssl.hub import catalog
    from medssl.models import build_network, resolve_arch

    entry = catalog.get_entry("3dino_vit_l")
    arch = resolve_arch("vit3d", "unetr", {"preset": "test"}, entry.arch["decoder_kwargs"])
    net = build_network(arch, 1, 2)
    d = net.encoder.embed_dim
    for merge in net.decoder.channel_merge:
        assert isinstance(merge[0], torch.nn.Conv3d) and tuple(merge[0].weight.shape) == (d, d, 1, 1, 1)
        assert isinstance(merge[1], torch.nn.GELU)
    tokens = torch.randn(1, d, 2, 2, 2)
    linear = torch.nn.functional.linear(tokens.flatten(2).transpose(1, 2), merge[0].weight[:, :, 0, 0, 0], merge[0].bias)
    expected = torch.nn.functional.gelu(linear).transpose(1, 2).reshape(tokens.shape)  # 3DINO: act(Linear(tokens))
    assert torch.allclose(merge(tokens), expected, atol=1e-5)
    old = build_network(resolve_arch("vit3d", "unetr", {"preset": "test"}), 1, 2)
    assert all(isinstance(m, torch.nn.Identity) for m in old.decoder.channel_merge)
