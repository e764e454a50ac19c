"""Reference features of VoCo / VoComni weights from MONAI 1.3.0's own ``SwinUNETR`` (the version VoCo pins).

Run in its own process with MONAI 1.3.0 first on ``sys.path`` (the test puts the wheel's folder there; the
project's MONAI 1.6.1 would compute another patch merging)::

    python monai13_swin.py CHECKPOINT OUT.pt --feature-size 48 --out-channels 21 --shape 64 96 128 [--seed 0]

Writes ``{"monai": version, "features": [enc0, enc1, enc2, enc3, hidden3, dec4], "logits": tensor | None}``:
the encoder features exactly as ``SwinUNETR.forward`` computes them before its decoder (MONAI 1.3.0
``monai/networks/nets/swin_unetr.py``), and the whole network's output when the file holds a decoder.
"""
from __future__ import annotations

import argparse

import torch


def load(ckpt_path: str, feature_size: int, out_channels: int, shape):
    import monai
    from monai.networks.nets import SwinUNETR

    net = SwinUNETR(img_size=tuple(shape), in_channels=1, out_channels=out_channels, feature_size=feature_size,
                    use_v2=True).eval()
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(("decoder", "out.")) for k in missing):
        raise SystemExit(f"unexpected {unexpected[:3]} missing {missing[:3]}")
    return net, monai.__version__, not missing


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--feature-size", type=int, required=True)
    ap.add_argument("--out-channels", type=int, default=21)
    ap.add_argument("--shape", type=int, nargs=3, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    net, version, has_decoder = load(args.checkpoint, args.feature_size, args.out_channels, args.shape)
    x = torch.randn(1, 1, *args.shape, generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        hidden = net.swinViT(x, net.normalize)
        features = [net.encoder1(x), net.encoder2(hidden[0]), net.encoder3(hidden[1]), net.encoder4(hidden[2]),
                    hidden[3], net.encoder10(hidden[4])]
        logits = net(x) if has_decoder else None
    torch.save({"monai": version, "input": x, "features": features, "logits": logits}, args.out)


if __name__ == "__main__":
    main()
