"""3DINO weights compute what 3DINO's own ViT computes: golden outputs from AICONSlab/3DINO's ``dinov2`` code.

3DINO (CC BY-NC-ND 4.0) cannot be installed nor copied, so ``Testing/reference/golden_vit3d.py`` ran its
``DinoVisionTransformer3d`` (tiny, every tensor random; LayerScale, ``block_chunks=4``) from a checkout and kept
only numbers in ``Testing/data/golden/vit3d_3dino.*`` (commit and config in the JSON). Here the weights are
written in the released file's nesting (``{"teacher": {"backbone.<key>"}, "epoch"}``, chunked block names)
and read by medssl as a user's file: ``resolve_pretrained`` (converter, architecture read from the shapes,
checked load) -> the vit3d encoder. Every feature map, the class token and the patch tokens must agree to
< 1e-4 relative, for the training grid, a non-cubic and a smaller input (position-embedding resampling) and
a two-channel input (3DINO's channels-as-batch rule).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from upstream import assert_close

GOLDEN = Path(__file__).resolve().parent / "data" / "golden" / "vit3d_3dino"
sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))
from golden_io import load  # noqa: E402


@pytest.fixture(scope="module")
def golden():
    return load(GOLDEN)


@pytest.fixture(scope="module")
def encoder(golden, tmp_path_factory):
    """The vit3d encoder medssl builds from the golden weights in the released file's nesting."""
    from medssl.hub.pretrained import resolve_pretrained
    from medssl.models import build_network

    path = tmp_path_factory.mktemp("vit3d") / "3dino_vit_weights.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in golden["weights"].items()}, "epoch": 0}, path)
    source = resolve_pretrained(str(path), accept_licence=True)
    config = golden["meta"]["config"]
    kwargs = source.arch.backbone_kwargs
    assert (kwargs["embed_dim"], kwargs["depth"], kwargs["num_heads"], kwargs["patch_size"], kwargs["img_size"]) == (
        config["embed_dim"], config["depth"], config["num_heads"], config["patch_size"], config["img_size"])
    assert kwargs["out_indices"] == golden["meta"]["layers"]
    nets = {}
    for channels in (1, 2):
        net = build_network(source.arch, channels, 2)
        report = source.init_weights(net)
        assert not [k for k in report.missing if k.startswith("encoder.")], report.summary()
        assert report.unexpected == ["backbone.mask_token"], report.unexpected  # unused by a segmentation net
        nets[channels] = net.encoder.eval()
    return nets


def test_golden_file_names_its_upstream(golden):
    meta = golden["meta"]
    assert meta["upstream"] == "https://github.com/AICONSlab/3DINO" and len(meta["commit"]) == 40
    assert meta["config"]["block_chunks"] > 1 and meta["config"]["init_values"]
    assert any(k.startswith("blocks.1.") for k in golden["weights"])  # chunked names, as released


@pytest.mark.parametrize("case", ["cubic", "noncubic", "small"])
def test_vit3d_equals_3dino(case, golden, encoder, one_thread):
    x, ref = golden["inputs"][case], golden["outputs"][case]
    net = encoder[1]
    with torch.no_grad():
        feats = net(x)
        cls, tokens = net.forward_cls(x), net.forward_tokens(x)
    assert torch.equal(feats[0], x) and len(feats) == 1 + len(ref["layers"])
    for i, (ours, theirs) in enumerate(zip(feats[1:], ref["layers"])):
        assert_close(ours, theirs, f"{case} layer {golden['meta']['layers'][i]}")
    assert_close(cls, ref["cls"], f"{case} class token")
    assert_close(tokens["cls"], ref["cls"], f"{case} forward_tokens class token")
    assert_close(tokens["patch"], ref["patch_tokens"], f"{case} patch tokens")


def test_vit3d_masked_tokens_equal_3dino(golden, encoder, one_thread):
    """iBOT masking as in pretraining: masked patch embeddings replaced by the mask token before the position
    embedding (DINOv2 ``prepare_tokens_with_masks``); medssl's SSL method holds the mask token."""
    x, masks, ref = golden["inputs"]["noncubic"], golden["inputs"]["masks"], golden["outputs"]["masked"]
    assert masks.dtype == torch.bool and 0 < int(masks.sum()) < masks.numel()
    with torch.no_grad():
        tokens = encoder[1].forward_tokens(x, mask=masks, mask_token=golden["weights"]["mask_token"].view(-1))
    assert_close(tokens["cls"], ref["cls"], "masked class token")
    assert_close(tokens["patch"], ref["patch_tokens"], "masked patch tokens")


def test_vit3d_two_channels_equal_3dino_channel_merge(golden, encoder, one_thread):
    """Two channels: each runs through the one-channel ViT, features concatenated channel-major (3DINO)."""
    x, ref = golden["inputs"]["two_channels"], golden["outputs"]["two_channels"]
    with torch.no_grad():
        feats = encoder[2](x)
    for i, (ours, theirs) in enumerate(zip(feats[1:], ref["merged_tokens"])):
        assert_close(ours.flatten(2).transpose(1, 2), theirs, f"two channels layer {i}")
