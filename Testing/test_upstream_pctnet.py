"""PCT-Net (MIS-FM) weights compute what MIS-FM's own ``PCTNet`` computes: golden outputs from its ``net`` code.

MIS-FM is not installable, so ``Testing/reference/golden_pctnet.py`` ran openmedlab/MIS-FM's ``PCTNet`` (tiny,
resolution_mode 1 as released, every tensor random) from a checkout and kept only numbers in
``Testing/data/golden/pctnet_misfm.*`` (commit and config in the JSON). Here the weights are written in PyMIC's
nesting (``{"iteration", "model_state_dict"}``) and read by medssl as a user's file (``resolve_pretrained``:
converter, architecture read from the shapes, checked load, the whole network); every encoder map, the
decoder maps and the four outputs (prediction and deep supervision) must agree to < 1e-4 relative on the
non-cubic input, for the released resolution_mode 1 and, same weights, resolution_mode 2. medssl works in (I, J, K) = MIS-FM's (D, H, W) reversed.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from upstream import assert_close

GOLDEN = Path(__file__).resolve().parent / "data" / "golden" / "pctnet_misfm"
sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))
from golden_io import load  # noqa: E402


@pytest.fixture(scope="module")
def golden():
    return load(GOLDEN)


def medssl_net(golden, tmp_path, **override):
    """medssl's PCT-Net from the golden weights in the released file's nesting.

    A PCT-Net file does not record MIS-FM's ``input_size`` (the pretraining patch; it decides which Swin
    stages shift their windows), so the test sets the golden config's one, as a user of the released file
    gets the released [64, 128, 128] from the catalog preset.
    """
    from medssl.hub.pretrained import resolve_pretrained
    from medssl.models import build_network

    path = tmp_path / "pctnet_ct10k_volf.pt"
    torch.save({"iteration": 0, "model_state_dict": golden["weights"]}, path)
    source = resolve_pretrained(str(path))
    config, kwargs = golden["meta"]["config"], source.arch.backbone_kwargs
    assert source.arch.decoder == "pctnet" and kwargs["resolution_mode"] == config["resolution_mode"]
    for key in ("feature_chns", "depths", "num_heads"):
        assert kwargs[key] == config[key], key
    assert kwargs["window_sizes"] == [3, 3, 2]  # read from the bias tables: 1/16 shrunk to its 2x2x3 grid
    arch = dataclasses.replace(source.arch, backbone_kwargs={**kwargs, "input_size": config["input_size"], **override})
    net = build_network(arch, 1, config["class_num"])
    report = source.init_weights(net)
    assert not report.missing and not report.unexpected and not report.shape_mismatch, report.summary()
    return net.eval()


def test_golden_file_names_its_upstream(golden):
    meta = golden["meta"]
    assert meta["upstream"] == "https://github.com/openmedlab/MIS-FM" and len(meta["commit"]) == 40
    assert meta["config"]["resolution_mode"] == 1
    assert any(k.endswith("relative_position_index") for k in golden["weights"])


@pytest.mark.parametrize("case", ["noncubic", "mode2"])
def test_pctnet_equals_misfm(case, golden, tmp_path, one_thread):
    """Released resolution_mode 1; ``mode2``: the same weights as resolution_mode 2 (in-plane stem and head)."""
    from medssl.models.layers.axes import reverse_spatial

    net = medssl_net(golden, tmp_path, **(golden["meta"]["mode2"] if case == "mode2" else {}))
    x, ref = golden["inputs"][case], golden["outputs"][case]
    dec = net.decoder
    with torch.no_grad():
        feats = net.encoder(reverse_spatial(x))
        logits = net(reverse_spatial(x))
        x0, x1, e2, e3, e4 = [reverse_spatial(f) for f in feats]  # MIS-FM's (D, H, W) from here on
        p = dec.pyramid_ct
        d3 = p.convtrans_d3(p.up4(e3, e4))
        d2 = p.convtrans_d2(p.up3(e2, d3))
        head = dec.pred_heads[dec.resolution_mode]
        d1 = head.conv1(head.up2(x1, d2))
        deep = [head.out_conv1(d1), p.out_conv2(d2), p.out_conv3(d3)]
    for level, (ours, theirs) in enumerate(zip(feats, ref["encoder"])):
        assert_close(reverse_spatial(ours), theirs, f"encoder {level}")
    assert_close(d3, ref["decoder"][0], "decoder d3")
    assert_close(d2, ref["decoder"][1], "decoder d2")
    assert_close(reverse_spatial(logits), ref["outputs"][0], "prediction")
    for level, (ours, theirs) in enumerate(zip(deep, ref["outputs"][1:]), start=1):
        assert_close(ours, theirs, f"deep-supervision output {level}")


def test_pctnet_builds_misfm_relative_position_index(golden):
    """A network built by medssl (nothing loaded) has MIS-FM's own index buffers, shrunk window included."""
    from medssl.models.backbones.pctnet import convert_misfm_pctnet
    from medssl.models import build_network, resolve_arch

    config = golden["meta"]["config"]
    kwargs = {k: config[k] for k in ("feature_chns", "depths", "num_heads", "window_sizes", "input_size",
                                     "resolution_mode")}
    net = build_network(resolve_arch("pctnet", "pctnet", kwargs), 1, config["class_num"])
    own = net.state_dict()
    theirs = {k: v for k, v in convert_misfm_pctnet(golden["weights"]).items() if k.endswith("relative_position_index")}
    assert len(theirs) == 10
    for key, index in theirs.items():
        assert torch.equal(own[key], index), key
