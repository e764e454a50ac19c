"""Golden outputs of 3DINO's own ViT (AICONSlab/3DINO ``dinov2`` package) on random weights, tiny config.

3DINO is CC BY-NC-ND 4.0: its code is not copied here; this script imports it from a checkout given on the
command line and keeps only numbers::

    git --git-dir=<mirror of github.com/AICONSlab/3DINO> worktree add /tmp/3dino HEAD
    XFORMERS_DISABLED=1 python Testing/reference/golden_vit3d.py /tmp/3dino [--out Testing/data/golden/vit3d_3dino]

The network is built as ``dinov2/models/__init__.py::build_model`` builds the released teacher
(``DinoVisionTransformer3d`` with ``NestedTensorBlock`` + ``MemEffAttention``, LayerScale, ``block_chunks=4``,
qkv/proj/ffn biases, mlp FFN; with ``XFORMERS_DISABLED`` the attention is the explicit softmax fallback),
only smaller: width 128, 2 heads of 64, depth 6 in 3 chunks (of 2, padded with ``nn.Identity`` as released),
patch 16, ``img_size`` 48 (a 3^3 position embedding). Every tensor and input is random (``random_weights.py``).
Cases: cubic 48^3 (the training grid: no resampling, batch 2), non-cubic 64 x 32 x 80 (trilinear resampling
of the position embedding to 4 x 2 x 5), cubic 32^3 (resampled to 2^3) and a two-channel non-cubic input
(3DINO's ``UNETRHead.forward_features_multi``: channels as batch, then merged along features); the
non-cubic input again with a random iBOT mask (``forward_features(x, masks)``, as pretraining runs). Outputs per
case: ``get_intermediate_layers(n=[0, 2, 3, 5], norm=True, reshape=True)`` (the skips a UNETR head takes, as
3DINO takes blocks 5/11/17/23 of ViT-L), ``forward`` (the normed class token) and the normed patch tokens of
``forward_features``.
"""
from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CONFIG = {"img_size": 48, "patch_size": 16, "in_chans": 1, "embed_dim": 128, "depth": 6, "num_heads": 2,
          "mlp_ratio": 4, "init_values": 1e-5, "ffn_layer": "mlp", "block_chunks": 3, "qkv_bias": True,
          "proj_bias": True, "ffn_bias": True}
LAYERS = [0, 2, 3, 5]  # what medssl reads from a 6-block file: ((k + 1) * depth // 4 - 1), crossing chunk middles
CASES = {"cubic": (2, 1, 48, 48, 48), "noncubic": (1, 1, 64, 32, 80), "small": (1, 1, 32, 32, 32),
         "two_channels": (1, 2, 32, 48, 16)}
SEED = 3


def build():
    from dinov2.layers import MemEffAttention, NestedTensorBlock
    from dinov2.models.vision_transformer import DinoVisionTransformer3d

    return DinoVisionTransformer3d(block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention), **CONFIG)


def case_outputs(net, x: torch.Tensor) -> dict:
    b, c = x.shape[:2]
    flat = x.reshape(-1, 1, *x.shape[2:])
    maps = net.get_intermediate_layers(flat, n=LAYERS, reshape=True, norm=True)
    if c > 1:  # forward_features_multi: (B*C, N, F) -> (B, N, C*F)
        tokens = net.get_intermediate_layers(flat, n=LAYERS, norm=True)
        merged = [t.permute(0, 2, 1).reshape(b, net.embed_dim * c, -1).permute(0, 2, 1) for t in tokens]
        return {"merged_tokens": merged}
    return {"layers": list(maps), "cls": net(x), "patch_tokens": net.forward_features(x)["x_norm_patchtokens"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkout", type=Path)
    ap.add_argument("--out", type=Path, default=HERE.parent / "data" / "golden" / "vit3d_3dino")
    args = ap.parse_args()
    if os.environ.get("XFORMERS_DISABLED") is None:
        raise SystemExit("set XFORMERS_DISABLED=1 (3DINO's attention then is its explicit-softmax fallback)")
    sys.path.insert(0, str(args.checkout))
    sys.path.insert(0, str(HERE))
    from golden_io import save, upstream_commit
    from random_weights import randomize_

    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = randomize_(build(), SEED, fp16_grid=True).eval()
    g = torch.Generator().manual_seed(SEED + 1)
    inputs = {name: torch.randn(shape, generator=g).half().float() for name, shape in CASES.items()}
    with torch.no_grad():
        outputs = {name: case_outputs(net, x) for name, x in inputs.items()}
        x = inputs["noncubic"]
        masks = torch.rand(x.shape[0], net.patch_embed(x).shape[1], generator=g) < 0.4
        masked = net.forward_features(x, masks)
        inputs["masks"] = masks
        outputs["masked"] = {"cls": masked["x_norm_clstoken"], "patch_tokens": masked["x_norm_patchtokens"]}
    meta = {"upstream": "https://github.com/AICONSlab/3DINO", "commit": upstream_commit(args.checkout),
            "licence": "CC BY-NC-ND 4.0: numbers only, no code", "class": "dinov2.models.vision_transformer."
            "DinoVisionTransformer3d(block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention))",
            "config": CONFIG, "layers": LAYERS, "env": "XFORMERS_DISABLED=1", "seed": SEED,
            "released_nesting": "{'teacher': {'backbone.<key>': tensor, 'dino_head.*', 'ibot_head.*'}}",
            "script": "Testing/reference/golden_vit3d.py"}
    save(args.out, net.state_dict(), inputs, outputs, meta)
    print(f"wrote {args.out}.safetensors ({args.out.with_suffix('.safetensors').stat().st_size} bytes)")


if __name__ == "__main__":
    main()
