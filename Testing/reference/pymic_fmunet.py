"""Reference outputs of an FMUNet (MIS-FM) checkpoint from PyMIC's own ``FMUNet`` (PyPI PyMIC 0.6.2).

PyMIC's ``pymic/net/net3d/fmunet.py`` is byte-identical to MIS-FM's ``net/fmunet.py`` (openmedlab/MIS-FM
@1506d65), the code that trained ``fmunet_abk1k_volf.pt``. Run in its own process with PyMIC first on
``sys.path`` (the test puts the wheel's folder there; PyMIC is not a project dependency)::

    python pymic_fmunet.py CHECKPOINT OUT.pt --shape D H W [--feature-chns 32 64 128 256 512] [--res-mode 0]
        [--depth 2] [--class-num 5] [--batch 1] [--seed 0] [--create SEED]

``--create SEED`` first writes CHECKPOINT in PyMIC's nesting (``{"iteration", "model_state_dict"}``) from the
network PyMIC builds, every tensor randomised (``random_weights.py``). Writes ``{"pymic": version, "sha256": of
PyMIC's fmunet.py, "input": (B, 1, D, H, W), "encoder": [x0 .. x4], "decoder": [d0 .. d3], "outputs": [out0 ..
out3]}``: the encoder and decoder maps exactly as ``FMUNet.forward`` computes them, and the four outputs of its
deep supervision (``out_layers[i](d_i)``; ``outputs[0]`` is the prediction), in PyMIC's (D, H, W) order.
"""
from __future__ import annotations

import argparse

import torch


def build(args):
    from pymic.net.net3d.fmunet import FMUNet

    params = {"in_chns": 1, "class_num": args.class_num, "feature_chns": args.feature_chns, "dropout": 0.2,
              "res_mode": args.res_mode, "depth": args.depth, "multiscale_pred": True}
    return FMUNet(params)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--shape", type=int, nargs=3, required=True)
    ap.add_argument("--feature-chns", type=int, nargs=5, default=[32, 64, 128, 256, 512])
    ap.add_argument("--res-mode", type=int, default=0)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--class-num", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--create", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import hashlib
    from importlib.metadata import version
    from pathlib import Path

    import pymic.net.net3d.fmunet as module

    net = build(args)
    if args.create is not None:
        from random_weights import randomize_

        randomize_(net, args.create)
        torch.save({"iteration": 0, "model_state_dict": net.state_dict()}, args.checkpoint)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["model_state_dict"]
    net.load_state_dict(state, strict=True)
    net.eval()
    x = torch.randn(args.batch, 1, *args.shape, generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        encoder = net.encoder(net.project(x))
        decoder = net.decoder(encoder)
        outputs = [layer(d) for layer, d in zip(net.out_layers, decoder)]
        whole = net(x)  # stage 'train' + multiscale_pred: the list of the four outputs
    assert all(torch.equal(a, b) for a, b in zip(whole, outputs)), "FMUNet.forward differs from its parts"
    digest = hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()
    torch.save({"pymic": version("PyMIC"), "sha256": digest, "input": x, "encoder": encoder,
                "decoder": decoder, "outputs": outputs}, args.out)


if __name__ == "__main__":
    main()
