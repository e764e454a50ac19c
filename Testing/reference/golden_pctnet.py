"""Golden outputs of MIS-FM's own PCT-Net (openmedlab/MIS-FM ``net/pct_net.py``) on random weights, tiny config.

MIS-FM is not on PyPI: this script imports its ``net`` package from a checkout given on the command line and
keeps only numbers::

    git --git-dir=<mirror of github.com/openmedlab/MIS-FM> worktree add /tmp/misfm HEAD
    python Testing/reference/golden_pctnet.py /tmp/misfm [--out Testing/data/golden/pctnet_misfm]

Stubbed: ``timm.models.layers`` (imported by ``net/transformer.py``; timm needs torchvision, which the project
does not install) with ``to_3tuple`` (as timm's), ``trunc_normal_`` (torch's; initial values are overwritten
here) and a ``DropPath`` that is the identity in eval mode (as timm's) and refuses training mode.

The network is ``PCTNet`` with the released settings (``demo/pctnet_pretrain.cfg``: resolution_mode 1, i.e.
stem scale (2, 4, 4) for thick slices, ``multiscale_pred``, depths 2/2/2, dropout [0, 0, .2, .2, .2], class_num
5 of Volume Fusion), only smaller: feature_chns [4, 8, 16, 32, 64], heads [2, 4, 8], windows [3, 3, 3],
input_size [16, 32, 48] (D, H, W), so the token grids 8x8x12, 4x4x6 and 2x2x3 take every path of
``net/transformer.py``: padding to whole windows, shifted windows with their mask, PCT-Net's relative-position
strides (3w-1, 2w-1, 1) and, at 1/16, a window shrunk to the grid's smallest side (2, no shift). Every tensor
(BatchNorm statistics and PReLU slopes included) is random (``random_weights.py``); MIS-FM asserts that the
input equals ``input_size``, so there is one non-cubic input. The same weights also run as resolution_mode 2
(in-plane stem and head, ``embeddings[2]``/``pred_heads[2]``) on an 8 x 32 x 48 input, whose token grids are
the same (case ``mode2``). Outputs: the maps medssl's encoder
returns (``embeddings[1]``: x0, x1; ``pyramid_ct``: e2, e3, e4), the decoder maps d3, d2 and the four
outputs of ``PCTNet.forward`` (prediction + deep supervision), all in MIS-FM's (D, H, W) order.
"""
from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
CONFIG = {"in_chns": 1, "class_num": 5, "input_size": [16, 32, 48], "feature_chns": [4, 8, 16, 32, 64],
          "dropout": [0, 0, 0.2, 0.2, 0.2], "depths": [2, 2, 2], "num_heads": [2, 4, 8], "window_sizes": [3, 3, 3],
          "resolution_mode": 1, "multiscale_pred": True}
BATCH, SEED = 1, 5
MODE2_INPUT = [8, 32, 48]  # resolution_mode 2 (stem (1, 4, 4)) with the same token grids, so the same weights


class _EvalDropPath(nn.Module):
    """timm's DropPath in eval mode (the identity); the golden outputs are eval-mode outputs only."""

    def __init__(self, drop_prob: float = 0.0, *args, **kwargs) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.drop_prob > 0:
            raise RuntimeError("the timm stub supports eval mode only")
        return x


def _to_3tuple(x):
    from collections.abc import Iterable

    return tuple(x) if isinstance(x, Iterable) and not isinstance(x, str) else (x, x, x)


def stub_timm() -> None:
    layers = types.ModuleType("timm.models.layers")
    layers.DropPath, layers.to_3tuple, layers.trunc_normal_ = _EvalDropPath, _to_3tuple, nn.init.trunc_normal_
    timm, models = types.ModuleType("timm"), types.ModuleType("timm.models")
    timm.models, models.layers = models, layers
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})


def outputs_of(net, x: torch.Tensor) -> dict:
    mode = net.resolution_mode
    x0, x1, x2 = net.embeddings[mode](x)
    p = net.pyramid_ct
    e2 = p.convtrans_e2(x2)
    e3 = p.convtrans_e3(p.down3(e2))
    e4 = p.convtrans_e4(p.down4(e3))
    d3 = p.convtrans_d3(p.up4(e3, e4))
    d2 = p.convtrans_d2(p.up3(e2, d3))
    whole = net(x)
    assert torch.equal(p(x2)[0], d2), "PyramidConvTrans.forward differs from its parts"
    return {"encoder": [x0, x1, e2, e3, e4], "decoder": [d3, d2], "outputs": list(whole)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkout", type=Path)
    ap.add_argument("--out", type=Path, default=HERE.parent / "data" / "golden" / "pctnet_misfm")
    args = ap.parse_args()
    stub_timm()
    sys.path.insert(0, str(args.checkout))
    sys.path.insert(0, str(HERE))
    from golden_io import save, upstream_commit
    from net.pct_net import PCTNet
    from random_weights import randomize_

    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = randomize_(PCTNet(dict(CONFIG)), SEED, fp16_grid=True).eval()
    g = torch.Generator().manual_seed(SEED + 1)
    x = torch.randn(BATCH, 1, *CONFIG["input_size"], generator=g).half().float()
    mode2 = PCTNet({**CONFIG, "resolution_mode": 2, "input_size": MODE2_INPUT})
    mode2.load_state_dict(net.state_dict(), strict=True)
    x2 = torch.randn(BATCH, 1, *MODE2_INPUT, generator=g).half().float()
    with torch.no_grad():
        outputs = {"noncubic": outputs_of(net, x), "mode2": outputs_of(mode2.eval(), x2)}
    meta = {"upstream": "https://github.com/openmedlab/MIS-FM", "commit": upstream_commit(args.checkout),
            "licence": "Apache-2.0", "class": "net.pct_net.PCTNet", "config": CONFIG, "seed": SEED,
            "mode2": {"resolution_mode": 2, "input_size": MODE2_INPUT},
            "axis_order": "(B, C, D, H, W): SimpleITK array order, medssl's (I, J, K) reversed",
            "stubbed": "timm.models.layers (DropPath eval-mode identity, to_3tuple, trunc_normal_)",
            "released_nesting": "PyMIC {'iteration': int, 'model_state_dict': state, 'optimizer_state_dict'}",
            "script": "Testing/reference/golden_pctnet.py"}
    save(args.out, net.state_dict(), {"noncubic": x, "mode2": x2}, outputs, meta)
    print(f"wrote {args.out}.safetensors ({args.out.with_suffix('.safetensors').stat().st_size} bytes)")


if __name__ == "__main__":
    main()
