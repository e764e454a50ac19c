"""Every registered backbone, through its tiny ``test`` variant: forward/backward with its default decoder,
declared feature channels/strides/size divisor against reality, explicit kwargs; plus the architecture
details the pretrained weights depend on (ViT position embedding and channel sharing, MIS-FM axis order and
window index, SwinUNETR re-homing equal to MONAI's network)."""
from __future__ import annotations

import json

import pytest
import torch

from medssl.errors import InputError
from medssl.hub.backbone_source import default_decoder
from medssl.models import BACKBONES, build_network, resolve_arch

# input (i, j, k) per family: anisotropic, multiples of the strides, >= 2 voxels at the bottleneck (instance norm)
SHAPES = {"swin_unetr": (64, 32, 32)}
DEFAULT_SHAPE = (32, 32, 16)


def tiny(name: str, in_channels: int = 2, num_classes: int = 3, **kwargs):
    arch = resolve_arch(name, default_decoder(name), {"preset": "test", **kwargs})
    return build_network(arch, in_channels, num_classes)


def as_triple(stride) -> tuple:
    return (stride,) * 3 if isinstance(stride, int) else tuple(stride)


@pytest.mark.parametrize("name", BACKBONES.names())
def test_tiny_variant_trains_and_declares_its_features(name):
    """Forward/backward, declared channels and strides, then one frozen-encoder step."""
    torch.manual_seed(0)
    net = tiny(name)
    shape = SHAPES.get(name, DEFAULT_SHAPE)
    x = torch.randn(1, 2, *shape)
    feats = net.encoder(x)
    assert [f.shape[1] for f in feats] == list(net.encoder.feature_channels)
    for f, stride in zip(feats, net.encoder.feature_strides, strict=True):
        assert tuple(s // t for s, t in zip(shape, f.shape[2:])) == as_triple(stride), (name, stride)
        assert all(s % t == 0 for s, t in zip(shape, f.shape[2:]))
    y = net(x)
    assert y.shape == (1, 3, *shape) and torch.isfinite(y).all()
    torch.nn.functional.cross_entropy(y, torch.randint(0, 3, (1, *shape))).backward()
    used = [p for p in net.encoder.parameters() if p.grad is not None]
    assert used and all(torch.isfinite(p.grad).all() for p in used)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.decoder.parameters())
    # frozen-backbone fine-tuning (the finetuner freezes net.encoder): encoder fixed, decoder trains
    net.zero_grad(set_to_none=True)
    for p in net.encoder.parameters():
        p.requires_grad_(False)
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    net(x).square().mean().backward()
    opt.step()
    after = dict(net.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))


@pytest.mark.parametrize("name", BACKBONES.names())
def test_size_divisor_is_enough(name):
    net = tiny(name, in_channels=1).eval()
    d = net.size_divisor
    assert max(max(as_triple(s)) for s in net.encoder.feature_strides) == d
    with torch.no_grad():
        assert net(torch.zeros(1, 1, d, d, 2 * d)).shape == (1, 3, d, d, 2 * d)


@pytest.mark.parametrize("name", BACKBONES.names())
def test_resolved_kwargs_are_explicit_json_and_stable(name):
    family = BACKBONES.get(name)
    kwargs = family.resolve_kwargs(preset="test")
    assert "preset" not in kwargs and json.loads(json.dumps(kwargs)) == kwargs
    assert family.resolve_kwargs(**kwargs) == kwargs
    with pytest.raises(InputError, match="unknown .* preset"):
        family.resolve_kwargs(preset="nonexistent")


def test_vit_position_embedding_is_resampled_trilinearly():
    from medssl.models.layers.vit import resize_pos_embed

    pos = torch.randn(1, 1 + 7 ** 3, 8)
    assert resize_pos_embed(pos, (7, 7, 7)) is pos
    out = resize_pos_embed(pos, (3, 5, 9))
    assert out.shape == (1, 1 + 3 * 5 * 9, 8) and torch.equal(out[:, 0], pos[:, 0])
    const = torch.full((1, 1 + 7 ** 3, 4), 0.25)
    assert torch.allclose(resize_pos_embed(const, (2, 4, 6)), torch.full((1, 1 + 48, 4), 0.25))
    ramp = torch.arange(7.0).view(7, 1, 1).expand(7, 7, 7).reshape(1, -1, 1)  # varies along i only
    grid = resize_pos_embed(torch.cat([torch.zeros(1, 1, 1), ramp], 1), (14, 3, 3))[0, 1:, 0].view(14, 3, 3)
    assert torch.all(grid[1:] >= grid[:-1]) and torch.allclose(grid[:, 0, 0], grid[:, 2, 2])


def test_vit_shares_one_channel_encoder_across_channels():
    net = tiny("vit3d", in_channels=3).eval()
    x = torch.randn(1, 3, 32, 32, 16)
    d = net.encoder.embed_dim
    with torch.no_grad():
        feats = net.encoder(x)
        for c in range(3):
            single = net.encoder.intermediate_layers(x[:, c:c + 1])
            for f, s in zip(feats[1:], single):
                assert torch.allclose(f[:, c * d:(c + 1) * d], s, atol=1e-5)
    assert net.encoder.patch_embed.proj.weight.shape[1] == 1
    assert all(isinstance(m, torch.nn.Sequential) for m in net.decoder.channel_merge)  # merge is trained


def test_misfm_networks_keep_the_thick_slice_axis_last():
    """MIS-FM trains on (D, H, W) arrays: in MedSSL's (i, j, k) the in-plane 1x3x3 convs act on (i, j)."""
    pct = tiny("pctnet", in_channels=1)  # resolution mode 1: stem scale (2, 4, 4) in (D, H, W)
    fmu = tiny("fmunet", in_channels=1, res_mode=1)
    x = torch.randn(1, 1, 32, 32, 16)
    assert pct.encoder(x)[1].shape[2:] == (16, 16, 16) and pct.encoder(x)[2].shape[2:] == (8, 8, 8)
    assert fmu.encoder(x)[1].shape[2:] == (16, 16, 16)
    assert pct.encoder.embeddings[1].proj.weight.shape[2:] == (1, 3, 3)  # the file's (D, H, W) layout


def test_pctnet_window_index_uses_misfm_strides():
    from fake_checkpoints import swin_relative_position_index

    from medssl.models.layers.pct_swin import pct_relative_position_index

    ref = swin_relative_position_index([6, 6, 6], [17, 11, 1])
    assert torch.equal(pct_relative_position_index(6), ref) and int(ref.max()) == 290


def test_swin_unetr_wrapper_computes_monai_swinunetr():
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(0)
    net = tiny("swin_unetr", in_channels=1, num_classes=2).eval()
    ref = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, use_v2=True).eval()
    ref.load_state_dict({k.split(".", 1)[1]: v for k, v in net.state_dict().items()}, strict=True)
    x = torch.randn(1, 1, 32, 32, 64)  # instance norm needs more than one voxel at the 1/32 bottleneck
    with torch.no_grad():
        assert torch.allclose(net(x), ref(x), atol=1e-5)
    assert {n for n, _ in net.encoder.named_children()} == {"swinViT", "encoder1", "encoder2", "encoder3",
                                                            "encoder4", "encoder10"}
    assert {n for n, _ in net.decoder.named_children()} == {"decoder5", "decoder4", "decoder3", "decoder2",
                                                            "decoder1", "out"}


@pytest.mark.parametrize("backbone,decoder", [("resenc", "unetr"), ("vit3d", "swin_unetr"), ("resenc", "pctnet"),
                                              ("vit3d", "fmunet")])
def test_family_decoders_refuse_foreign_encoders(backbone, decoder):
    with pytest.raises(InputError, match=f"{decoder}"):
        build_network(resolve_arch(backbone, decoder, {"preset": "test"}), 1, 2)


# feature strides (i, j, k) per resolution mode, from MIS-FM: PCT-Net stem scale (D, H, W) 0: (4,4,4),
# 1: (2,4,4), 2: (1,4,4); FMUNet res_mode 1/2 convolve in-plane at the finest one/two levels
_THICK1 = [(1, 1, 1), (2, 2, 1), (4, 4, 2), (8, 8, 4), (16, 16, 8)]
_THICK2 = [(1, 1, 1), (2, 2, 1), (4, 4, 1), (8, 8, 2), (16, 16, 4)]
_ISO = [(s, s, s) for s in (1, 2, 4, 8, 16)]
MODE_STRIDES = {0: _ISO, 1: _THICK1, 2: _THICK2}


@pytest.mark.parametrize("name,key,mode", [("pctnet", "resolution_mode", m) for m in (0, 1, 2)]
                         + [("fmunet", "res_mode", m) for m in (0, 1, 2)])
def test_every_resolution_mode_runs_at_its_strides(name, key, mode):
    torch.manual_seed(0)
    net = tiny(name, in_channels=1, num_classes=2, **{key: mode}).eval()
    shape = {0: (32, 32, 32), 1: (32, 32, 16), 2: (32, 32, 8)}[mode]  # two voxels along K at the bottleneck
    assert [as_triple(s) for s in net.encoder.feature_strides] == MODE_STRIDES[mode]
    with torch.no_grad():
        feats = net.encoder(torch.randn(1, 1, *shape))
        y = net.decoder(feats)  # SegmentationNet.forward, without running the encoder twice
    expected = [tuple(n // s for n, s in zip(shape, st)) for st in MODE_STRIDES[mode]]
    assert [tuple(f.shape[2:]) for f in feats] == expected
    assert y.shape == (1, 2, *shape) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["vit3d", "resenc", "swin_unetr", "pctnet", "fmunet"])
def test_create_backbone_from_an_architecture_name(name):
    """``medssl.create_backbone("ARCH:preset")``: a random encoder of that family with its declared features."""
    import medssl
    from medssl.hub.backbone_source import create_backbone

    assert medssl.create_backbone is create_backbone
    torch.manual_seed(0)
    enc = medssl.create_backbone(f"{name}:test", in_channels=2)
    assert enc.in_channels == 2 and enc is not None
    reference = tiny(name, in_channels=2).encoder
    assert type(enc) is type(reference) and list(enc.feature_channels) == list(reference.feature_channels)
    assert {k: v.shape for k, v in enc.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    shape = SHAPES.get(name, DEFAULT_SHAPE)
    with torch.no_grad():
        feats = enc.eval()(torch.randn(1, 2, *shape))
    assert [f.shape[1] for f in feats] == list(enc.feature_channels)


@pytest.mark.parametrize("name,kwargs", [(n, {"preset": "test"}) for n in BACKBONES.names()
                                         if BACKBONES.get(n).size_divisor is not None] + [("vit3d", {"preset": "test", "patch_size": 8})])
def test_a_declared_size_divisor_is_the_built_networks(name, kwargs):
    """Planning reads a family's declared divisor instead of building the network (ViT-L: seconds)."""
    family = BACKBONES.get(name)
    resolved = family.resolve_kwargs(**kwargs)
    assert family.size_divisor(**resolved) == family.build(1, **resolved).size_divisor
