"""Released checkpoints of the four seed systems load into MedSSL exactly: for every fingerprint a random-valued
file with the real nesting and shapes is written, loaded through the catalog entry, and every backbone tensor
must arrive with its value. Also: one forward pass of each real-size family, multi-channel stems, class-count
changes, frozen encoders, family detection of bare files, the nnssl plan, and clear errors for bad files."""
from __future__ import annotations

import re
import time

import pytest
import torch
from helpers_backbones import (FINGERPRINT_IDS, fake_checkpoint, fingerprint, fingerprint_names, timed_load, write_fake,
                               write_fingerprint_fake)

from medssl.errors import CheckpointError, InputError
from medssl.hub import catalog
from medssl.hub.backbone_source import create_backbone
from medssl.hub.pretrained import read_checkpoint, resolve_pretrained, tensors_of
from medssl.models import build_network
from medssl.plan import NormSpec

# file key -> network key, written by hand from the fingerprints (independent of the converters)
KEY_PAIRS = {
    "3dino_vit_large": [("backbone.blocks.3.21.mlp.fc2.weight", "encoder.blocks.21.mlp.fc2.weight"),
                        ("backbone.blocks.0.5.ls1.gamma", "encoder.blocks.5.ls1.gamma"),
                        ("backbone.pos_embed", "encoder.pos_embed"), ("backbone.norm.bias", "encoder.norm.bias")],
    "nnssl_resencl_mae": [("encoder.stages.3.blocks.2.conv1.conv.weight", "encoder.stages.3.blocks.2.conv1.conv.weight"),
                          ("encoder.stem.convs.0.all_modules.1.bias", "encoder.stem.convs.0.norm.bias")],
    "voco_b_ssl_head": [("swinViT.layers3.0.blocks.1.attn.qkv.weight", "encoder.swinViT.layers3.0.blocks.1.attn.qkv.weight"),
                        ("swinViT.layers2.0.blocks.0.attn.relative_position_index",
                         "encoder.swinViT.layers2.0.blocks.0.attn.relative_position_index"),
                        ("encoder10.layer.conv2.conv.weight", "encoder.encoder10.layer.conv2.conv.weight")],
    "vocomni_b": [("decoder2.transp_conv.conv.weight", "decoder.decoder2.transp_conv.conv.weight"),
                  ("out.conv.conv.bias", "decoder.out.conv.conv.bias")],
    "misfm_pctnet_volf": [("pyramid_ct.convtrans_d3.trans.blocks.1.mlp.fc1.weight",
                           "decoder.pyramid_ct.convtrans_d3.trans.blocks.1.mlp.fc1.weight"),
                          ("pyramid_ct.convtrans_e4.trans.blocks.0.attn.relative_position_index",
                           "encoder.pyramid_ct.convtrans_e4.trans.blocks.0.attn.relative_position_index"),
                          ("embeddings.2.conv0.conv_conv.3.running_var", "encoder.embeddings.2.conv0.conv_conv.3.running_var")],
    "misfm_fmunet_volf": [("encoder.en_conv3.conv_list.1.3.weight", "encoder.encoder.en_conv3.conv_list.1.3.weight"),
                          ("out_layers.2.0.weight", "decoder.out_layers.2.0.weight")],
}
KEY_PAIRS["voco_l_ssl_head"] = KEY_PAIRS["voco_h_ssl_head"] = KEY_PAIRS["voco_b_ssl_head"]
# a small input for one forward pass of each real-size family (i, j, k); instance norm needs >1 voxel at the bottom
FORWARD = {"3dino_vit_large": (32, 32, 16), "nnssl_resencl_mae": (64, 64, 32), "voco_b_ssl_head": (64, 32, 32),
           "misfm_pctnet_volf": (32, 32, 16), "misfm_fmunet_volf": (32, 32, 16)}


def test_every_fingerprint_has_a_catalog_entry():
    assert set(fingerprint_names()) == set(FINGERPRINT_IDS)
    assert set(FINGERPRINT_IDS.values()) <= set(catalog.ids())


def load_fake(path, entry_id, in_channels=1, num_classes=None):
    entry = catalog.get_entry(entry_id)
    source = resolve_pretrained(str(path), catalog_id=entry_id, accept_licence=True)
    net = build_network(source.arch, in_channels, num_classes or entry.native_num_classes or 2)
    start = time.perf_counter()
    report = source.init_weights(net)
    return net, report, time.perf_counter() - start


@pytest.mark.parametrize("name", sorted(FINGERPRINT_IDS))
def test_released_checkpoint_loads_exactly(name, tmp_path):
    entry_id = FINGERPRINT_IDS[name]
    if name == "voco_h_ssl_head":  # 4.6 GB of random values otherwise (VoCo-B checks the same converter on those)
        path = write_fingerprint_fake(fingerprint(name), tmp_path / "fake.pt", constant=True)
    else:
        path = fake_checkpoint(name)
    net, report, _, _ = timed_load(str(path), entry_id, catalog_id=entry_id)  # prints the load time (-s)
    file_sd = tensors_of(read_checkpoint(path), path)
    own = net.state_dict()
    assert not [k for k in report.missing if k.startswith("encoder.")]
    assert not report.shape_mismatch
    backbone_keys = [k for k in own if k.startswith("encoder.")]
    assert backbone_keys and set(backbone_keys) <= set(report.loaded) | _aliases(net, report.loaded)
    for file_key, net_key in KEY_PAIRS[name]:
        assert net_key in report.loaded and torch.equal(own[net_key], file_sd[file_key]), file_key
    entry = catalog.get_entry(entry_id)
    for k in report.unexpected:
        assert catalog.matches(k, entry.allowed_unexpected), k
    _assert_values_equal(net, file_sd, entry.converter)
    if name in FORWARD:
        with torch.no_grad():
            y = net.eval()(torch.randn(1, 1, *FORWARD[name]))
        assert y.shape[2:] == FORWARD[name] and torch.isfinite(y).all()


def _aliases(net, loaded):
    params = net.state_dict(keep_vars=True)
    ids = {id(params[k]) for k in loaded}
    return {k for k, v in params.items() if id(v) in ids}


def _assert_values_equal(net, file_sd, converter_name):
    from medssl.hub.converters import CONVERTERS

    own = net.state_dict()
    for key, value in CONVERTERS[converter_name](file_sd).items():
        if key in own:
            assert torch.equal(own[key], value), key


def test_gpu_saved_file_with_all_optional_entries_loads():
    path = fake_checkpoint("nnssl_resencl_mae", with_optional=True, device_tag="cuda:0")
    net, report, _ = load_fake(path, "openmind_resencl_mae")
    assert len(report.loaded) == 448 and not [k for k in report.missing if k.startswith("encoder.")]
    assert {"optimizer_state", "logging", "current_epoch"} <= set(read_checkpoint(path))


@pytest.mark.parametrize("name", ["nnssl_resencl_mae", "voco_b_ssl_head", "vocomni_b", "misfm_pctnet_volf",
                                  "misfm_fmunet_volf"])
def test_bare_file_is_read_like_its_catalog_entry(name):
    entry = catalog.get_entry(FINGERPRINT_IDS[name])
    source = resolve_pretrained(str(fake_checkpoint(name)))
    named = resolve_pretrained(str(fake_checkpoint(name)), catalog_id=entry.id)
    assert source.provenance["read_like"] == entry.id and source.arch == named.arch
    assert source.plan_defaults == named.plan_defaults and source.plan_defaults.origin.startswith(f"catalog entry {entry.id}")
    assert source.plan_defaults.orientation == entry.plan_defaults["orientation"]


@pytest.mark.parametrize("name,stem", [  # VoCo's own rule (a fresh first layer): test_recipes.py
    ("nnssl_resencl_mae", ["encoder.stem.convs.0.conv.weight"]),
    ("misfm_pctnet_volf", [f"encoder.embeddings.{m}.proj.weight" for m in range(3)]),
    ("misfm_fmunet_volf", ["encoder.project.weight"])])
def test_more_input_channels_repeat_and_scale_the_stem(name, stem):
    entry_id = FINGERPRINT_IDS[name]
    path = fake_checkpoint(name)
    net, report, _ = load_fake(path, entry_id, in_channels=3)
    from medssl.hub.converters import CONVERTERS

    conv = CONVERTERS[catalog.get_entry(entry_id).converter](tensors_of(read_checkpoint(path), path))
    own = net.state_dict()
    for key in stem:
        assert key in report.loaded and own[key].shape[1] == 3
        assert torch.allclose(own[key], conv[key].repeat(1, 3, 1, 1, 1) / 3)
    assert not [k for k in report.missing if k.startswith("encoder.")]


def test_repeated_stem_gives_the_same_features_for_identical_channels():
    path = fake_checkpoint("misfm_fmunet_volf")
    one, _, _ = load_fake(path, "misfm_fmunet_abd1k", in_channels=1)
    three, _, _ = load_fake(path, "misfm_fmunet_abd1k", in_channels=3)
    x = torch.randn(1, 1, 32, 16, 16)
    with torch.no_grad():
        assert torch.allclose(one.eval()(x), three.eval()(x.repeat(1, 3, 1, 1, 1)), atol=1e-4)


@pytest.mark.parametrize("name,classes", [("vocomni_b", 4), ("misfm_fmunet_volf", 3), ("misfm_pctnet_volf", 2)])
def test_output_layers_are_reinitialised_when_class_count_differs(name, classes):
    entry = catalog.get_entry(FINGERPRINT_IDS[name])
    net, report, _ = load_fake(fake_checkpoint(name), entry.id, num_classes=classes)
    assert report.shape_mismatch and all(catalog.matches(k, entry.class_keys) for k in report.shape_mismatch)
    assert set(report.missing) == set(report.shape_mismatch)
    assert all(k.startswith("decoder.") for k in report.shape_mismatch)


@pytest.mark.parametrize("name", ["misfm_pctnet_volf", "misfm_fmunet_volf"])
def test_frozen_encoder_is_the_pretrained_backbone(name):
    net, report, _ = load_fake(fake_checkpoint(name), FINGERPRINT_IDS[name], num_classes=2)
    backbone = {k for k in report.loaded if k.startswith("encoder.")}
    assert backbone and {f"encoder.{n}" for n, _ in net.encoder.named_parameters()} <= backbone
    for p in net.encoder.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    shape = (32, 16, 16)  # smallest input with more than one voxel per channel at the bottleneck
    x, y = torch.randn(1, 1, *shape), torch.randint(0, 2, (1, *shape))
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    after = net.state_dict()
    params = dict(net.named_parameters())
    assert all(torch.equal(after[k], before[k]) for k in params if k.startswith("encoder."))
    assert any(not torch.equal(after[k], before[k]) for k in params if k.startswith("decoder."))


def test_nnssl_adaptation_plan_sets_the_plan_defaults(tmp_path):
    def edit(ckpt):
        cfg = ckpt["nnssl_adaptation_plan"]["pretrain_plan"]["configurations"].pop("onemmiso")
        cfg.update(spacing=[1.5, 0.8, 0.7], normalization_schemes=["ZScoreNormalization"], use_mask_for_norm=[True])
        ckpt["nnssl_adaptation_plan"]["pretrain_plan"]["configurations"]["custom_name"] = cfg
        ckpt["nnssl_adaptation_plan"]["recommended_downstream_patchsize"] = (96, 128, 160)

    path = write_fake("nnssl_resencl_mae", tmp_path / "checkpoint_final.pth", edit=edit)
    for spec, cid in ((str(path), None), (str(path), "openmind_resencl_mae")):
        d = resolve_pretrained(spec, catalog_id=cid).plan_defaults
        assert d.spacing == (0.7, 0.8, 1.5) and d.patch_size == (160, 128, 96)  # (k, j, i) -> (i, j, k)
        assert d.normalization == (NormSpec("zscore", {"per_image": True, "nonzero": True}),)
        assert d.orientation == "RAS" and "nnssl adaptation plan" in d.origin


def test_wrong_family_is_refused_clearly():
    voco = str(fake_checkpoint("voco_b_ssl_head"))
    with pytest.raises(CheckpointError, match="does not look like a vit3d checkpoint .*swin_unetr"):
        resolve_pretrained(voco, catalog_id="3dino_vit_l")
    with pytest.raises(CheckpointError, match="does not look like a pctnet checkpoint"):
        create_backbone("pctnet", checkpoint=voco)


def test_checkpoint_that_loads_nothing_never_passes(tmp_path):
    torch.save({"state_dict": {"some.other.weight": torch.zeros(3)}}, tmp_path / "foreign.pt")
    source = resolve_pretrained(str(tmp_path / "foreign.pt"), catalog_id="voco_b")
    net = build_network(source.arch, 1, 2)
    with pytest.raises(CheckpointError, match=r"does not look like a swin_unetr checkpoint: 145 of 145 backbone tensors"):
        source.init_weights(net)


def test_partial_checkpoint_names_the_missing_backbone_tensors(tmp_path):
    def edit(ckpt):
        for k in [k for k in ckpt["network_weights"] if k.startswith("encoder.stages.5.")]:
            del ckpt["network_weights"][k]

    source = resolve_pretrained(str(write_fake("nnssl_resencl_mae", tmp_path / "c.pth", edit=edit)),
                                catalog_id="openmind_resencl_mae")
    with pytest.raises(CheckpointError, match=r"resenc checkpoint: \d+ of \d+ backbone tensors missing .*stages\.5"):
        source.init_weights(build_network(source.arch, 1, 2))


def test_truncated_unsafe_and_foreign_files_give_clear_errors(tmp_path):
    import argparse

    small = fake_checkpoint("misfm_fmunet_volf").read_bytes()
    (tmp_path / "cut.pt").write_bytes(small[: len(small) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        resolve_pretrained(str(tmp_path / "cut.pt"), catalog_id="misfm_fmunet_abd1k")
    torch.save({"model_state_dict": {"project.weight": torch.zeros(1)}, "args": argparse.Namespace(a=1)},
               tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError, match=r"could run code when loaded \(it contains argparse.Namespace\)"):
        read_checkpoint(tmp_path / "unsafe.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="no tensor dictionary"):
        resolve_pretrained(str(tmp_path / "list.pt"))
    with pytest.raises(InputError, match="neither an architecture .* nor an existing checkpoint file"):
        resolve_pretrained(str(tmp_path / "missing.pt"))
    import gzip

    (tmp_path / "scan.nii.gz").write_bytes(gzip.compress(b"\x5c\x01" + bytes(346)))  # an image given as weights
    with pytest.raises(CheckpointError, match=r"scan\.nii\.gz is not a PyTorch checkpoint \(a gzip file, e\.g\. an image\)"):
        read_checkpoint(tmp_path / "scan.nii.gz")


def test_create_backbone_returns_the_loaded_encoder():
    path = fake_checkpoint("misfm_pctnet_volf")
    enc = create_backbone("misfm_pctnet_ct10k", checkpoint=str(path), in_channels=1)
    file_sd = tensors_of(read_checkpoint(path), path)
    assert torch.equal(enc.state_dict()["pyramid_ct.convtrans_e3.trans.blocks.1.attn.qkv.weight"],
                       file_sd["pyramid_ct.convtrans_e3.trans.blocks.1.attn.qkv.weight"])
    assert re.match(r"PCTNetEncoder", type(enc).__name__)


def _tiny_encoder_state(name: str) -> dict:
    arch_kwargs = {"preset": "test"}
    from medssl.models import resolve_arch

    net = build_network(resolve_arch(name, {"vit3d": "unetr", "swin_unetr": "swin_unetr"}[name], arch_kwargs), 1, 2)
    return {k[len("encoder."):]: v for k, v in net.state_dict().items() if k.startswith("encoder.")}


def test_vit_blocks_load_chunked_or_plain(tmp_path):
    state = _tiny_encoder_state("vit3d")
    chunked = {"backbone." + re.sub(r"^blocks\.(\d+)\.", lambda m: f"blocks.{int(m[1]) // 2}.{m[1]}.", k): v
               for k, v in state.items()}
    head = {"dino_head.last_layer.weight_g": torch.ones(8, 1), "backbone.mask_token": torch.zeros(1, 32)}
    torch.save({"teacher": {**chunked, **head}, "epoch": 3}, tmp_path / "chunked.pth")
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "plain.pth")
    for file in ("chunked.pth", "plain.pth"):
        source = resolve_pretrained(str(tmp_path / file), catalog_id="vit3d", accept_licence=True)
        assert source.arch.backbone_kwargs["depth"] == 4 and source.arch.backbone_kwargs["img_size"] == 32
        net = build_network(source.arch, 1, 2)
        report = source.init_weights(net)
        own = net.state_dict()
        assert all(torch.equal(own["encoder." + k], v) for k, v in state.items()), file
        assert set(report.unexpected) == ({"dino_head.last_layer.weight_g", "backbone.mask_token"}
                                          if file == "chunked.pth" else set())


def test_voco_pretraining_layout_and_old_names_load(tmp_path):
    state = _tiny_encoder_state("swin_unetr")
    renamed = {("module.backbone." + k).replace("swinViT.", "swin_vit."): v for k, v in state.items()}
    heads = {"student.mlp.0.weight": torch.zeros(4, 4), "teacher.mlp.0.weight": torch.zeros(4, 4)}
    torch.save({"state_dict": {**renamed, **heads}, "epoch": 7}, tmp_path / "voco_ssl.pt")
    source = resolve_pretrained(str(tmp_path / "voco_ssl.pt"))
    assert source.provenance["read_like"] == "voco_b" and source.arch.backbone_kwargs["feature_size"] == 12
    net = build_network(source.arch, 1, 2)
    report = source.init_weights(net)
    assert sorted(report.unexpected) == sorted(heads) and len(report.loaded) == len(state)


def test_another_decoder_leaves_the_pretrained_decoder_unused():
    from medssl.hub.pretrained import Policy, problems

    path = fake_checkpoint("vocomni_b")
    source = tensors_of(read_checkpoint(path), path)
    net = build_network(resolve_pretrained(str(path), catalog_id="vocomni_b").arch, 1, 21)
    own = net.state_dict(keep_vars=True)
    same = Policy(catalog.get_entry("vocomni_b"))
    report, to_load, unused_ok = same.match(own, source)
    assert len(report.loaded) == 167 and not unused_ok and not problems(own, report, same, "x", unused_ok)
    other = Policy(catalog.get_entry("vocomni_b"), decoder_changed=True)
    report, to_load, unused_ok = other.match(own, source)
    assert len(report.loaded) == 145 and all(k.startswith("encoder.") for k in to_load)
    assert sorted(report.unexpected) == sorted(unused_ok) and len(unused_ok) == 22
    assert problems(own, report, other, "x", unused_ok) == []
    assert problems(own, report, same, "x", unused_ok)  # the entry's own decoder must load
