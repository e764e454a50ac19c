"""VoCo / VoComni weights compute what MONAI 1.3.0's SwinUNETR (VoCo's pinned version) computes on them.

The reference runs MONAI 1.3.0's own code in a child process (``Testing/reference/monai13_swin.py``) on a
random-valued file with the exact structure of the released one; medssl builds the network from the catalog
entry and loads the same file. Non-cubic inputs, relative error < 1e-4 per feature map.
"""
from __future__ import annotations

import pytest
import torch

from helpers_backbones import fake_checkpoint
from upstream import assert_close, finish_reference, start_reference

SHAPE = (32, 64, 96)  # non-cubic, every side a multiple of 32 (2x3 voxels at the 1/32 bottleneck)


def medssl_outputs(entry_id: str, path, num_classes: int = 2):
    from medssl.hub.pretrained import resolve_pretrained
    from medssl.models import build_network

    source = resolve_pretrained(str(path), catalog_id=entry_id, accept_licence=True)
    net = build_network(source.arch, 1, num_classes)
    source.init_weights(net)
    return net.eval()


def compare(entry_id: str, path, feature_size: int, tmp_path, whole_net: bool = False) -> None:
    out = tmp_path / "reference.pt"
    child = start_reference("monai-1.3.0", "monai13_swin.py", str(path), str(out), "--feature-size",
                            str(feature_size), "--shape", *map(str, SHAPE))  # runs while medssl computes its side
    x = torch.randn(1, 1, *SHAPE, generator=torch.Generator().manual_seed(0))  # the script's input (--seed 0)
    net = medssl_outputs(entry_id, path, num_classes=21 if whole_net else 2)
    with torch.no_grad():
        features = net.encoder(x)
        logits = net(x) if whole_net else None
    finish_reference(child)
    ref = torch.load(out, weights_only=True)
    assert ref["monai"] == "1.3.0" and torch.equal(ref["input"], x)
    assert len(features) == len(ref["features"]) == 6
    for level, (ours, theirs) in enumerate(zip(features, ref["features"])):
        assert_close(ours, theirs, f"{entry_id} feature map {level}")
    if whole_net:
        assert_close(logits, ref["logits"], f"{entry_id} logits")


@pytest.mark.parametrize("name,entry_id,feature_size", [("voco_b_ssl_head", "voco_b", 48),
                                                        ("voco_l_ssl_head", "voco_l", 96)])
def test_voco_encoder_equals_monai_1_3(name, entry_id, feature_size, tmp_path, one_thread):
    compare(entry_id, fake_checkpoint(name), feature_size, tmp_path)


def test_vocomni_b_whole_network_equals_monai_1_3(tmp_path, one_thread):
    compare("vocomni_b", fake_checkpoint("vocomni_b"), 48, tmp_path, whole_net=True)


def test_default_swin_unetr_keeps_monai_1_5_merging():
    """Random-init SwinUNETR (trained with medssl on MONAI >= 1.5) keeps the all-eight layout; VoCo ids do not."""
    from medssl.hub import catalog
    from medssl.models.backbones.swin_unetr import resolve_kwargs

    assert resolve_kwargs("B")["patch_merging"] == "monai-1.5"
    swin = [e for e in catalog.entries().values() if e.family == "swin_unetr"]
    assert len(swin) == 6
    for entry in swin:
        assert entry.arch["backbone_kwargs"]["patch_merging"] == "monai-1.3", entry.id
