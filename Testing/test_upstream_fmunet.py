"""FMUNet (MIS-FM) weights compute what PyMIC's own ``FMUNet`` (PyPI PyMIC 0.6.2) computes on them.

PyMIC's ``pymic/net/net3d/fmunet.py`` is byte-identical to openmedlab/MIS-FM ``net/fmunet.py`` (@1506d65), the
code of the released ``fmunet_abk1k_volf.pt``. The reference runs in a child process
(``Testing/reference/pymic_fmunet.py``); medssl reads the same file as a user's file (``resolve_pretrained``:
PyMIC nesting, converter, architecture read from the shapes, checked load) and must give the same encoder
maps, decoder maps and the four deep-supervision outputs, relative error < 1e-4 each, on non-cubic inputs.
medssl works in (I, J, K) = PyMIC's (D, H, W) reversed, so inputs and maps are compared axis-reversed.
"""
from __future__ import annotations

import pytest
import torch

from helpers_backbones import fake_checkpoint
from upstream import assert_close, run_reference

# sha256 of openmedlab/MIS-FM @1506d65 net/fmunet.py (the released file's code); PyMIC 0.6.2 ships the same bytes
MISFM_FMUNET_SHA256 = "ec5d6ca2bbdcb9d3e0d940435d3a72c984780610f69eef90efc8b85fcb03c33e"


def medssl_net(path, num_classes: int):
    from medssl.hub.pretrained import resolve_pretrained
    from medssl.models import build_network

    source = resolve_pretrained(str(path))
    assert source.arch.backbone == "fmunet" and source.arch.decoder == "fmunet"
    net = build_network(source.arch, 1, num_classes)
    report = source.init_weights(net)
    assert not report.missing and not report.unexpected and not report.shape_mismatch, report.summary()
    return net.eval()


def compare(path, ref: dict, num_classes: int = 5) -> None:
    from medssl.models.layers.axes import reverse_spatial

    net = medssl_net(path, num_classes)
    x = reverse_spatial(ref["input"])  # (B, 1, D, H, W) -> (B, 1, I, J, K)
    with torch.no_grad():
        feats = net.encoder(x)
        decoded = net.decoder.decoder([reverse_spatial(f) for f in feats])  # runs in (D, H, W) like PyMIC
        outputs = [layer(d) for layer, d in zip(net.decoder.out_layers, decoded)]
        logits = net(x)
    assert len(feats) == len(ref["encoder"]) == 5 and len(decoded) == len(ref["decoder"]) == 4
    for level, (ours, theirs) in enumerate(zip(feats, ref["encoder"])):
        assert_close(reverse_spatial(ours), theirs, f"encoder {level}")
    for level, (ours, theirs) in enumerate(zip(decoded, ref["decoder"])):
        assert_close(ours, theirs, f"decoder {level}")
    for level, (ours, theirs) in enumerate(zip(outputs, ref["outputs"])):
        assert_close(ours, theirs, f"output {level}")
    assert_close(reverse_spatial(logits), ref["outputs"][0], "SegmentationNet logits")


def test_released_fmunet_structure_equals_pymic(tmp_path, one_thread):
    """The 47 M-parameter structure of ``fmunet_abk1k_volf.pt`` (res_mode 0), input 32 x 48 x 64 (D, H, W)."""
    path = fake_checkpoint("misfm_fmunet_volf")
    out = tmp_path / "reference.pt"
    run_reference("pymic-0.6.2", "pymic_fmunet.py", str(path), str(out), "--shape", "32", "48", "64")
    ref = torch.load(out, weights_only=True)
    assert ref["pymic"] == "0.6.2" and ref["sha256"] == MISFM_FMUNET_SHA256
    compare(path, ref)


@pytest.mark.parametrize("res_mode,shape", [(1, (8, 32, 48)), (2, (4, 48, 32))])
def test_in_plane_fmunet_equals_pymic(res_mode, shape, tmp_path, one_thread):
    """The in-plane resolution modes (1x3x3 kernels at the finest one or two levels), tiny, every tensor random."""
    path, out = tmp_path / "fmunet.pt", tmp_path / "reference.pt"
    run_reference("pymic-0.6.2", "pymic_fmunet.py", str(path), str(out), "--shape", *map(str, shape),
                  "--feature-chns", "4", "8", "16", "32", "64", "--res-mode", str(res_mode), "--batch", "2",
                  "--create", str(res_mode))
    compare(path, torch.load(out, weights_only=True))
