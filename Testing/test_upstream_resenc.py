"""OpenMind ResEnc-L weights compute what nnssl's own network computes on them.

Reference: ``dynamic_network_architectures.ResidualEncoderUNet`` built with the exact arguments of nnssl's
``get_res_enc_l(1, 1)`` (MIC-DKFZ/nnssl @7044864, ``architectures/architecture_registry.py``), loaded strictly
with the file's ``network_weights``, and fed the volume the way nnssl feeds it: a SimpleITK array, axes
``(K, J, I)``. medssl loads the same file through the catalog entry and is fed ``(I, J, K)``. Non-cubic input;
relative error < 1e-4 per stage.
"""
from __future__ import annotations

import torch
from torch import nn

from helpers_backbones import fake_checkpoint
from upstream import assert_close, relative_error


def nnssl_resenc_l() -> nn.Module:
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    return ResidualEncoderUNet(
        input_channels=1, n_stages=6, features_per_stage=[32, 64, 128, 256, 320, 320], conv_op=nn.Conv3d,
        kernel_sizes=[[3, 3, 3]] * 6, strides=[[1, 1, 1]] + [[2, 2, 2]] * 5, n_blocks_per_stage=[1, 3, 4, 6, 6, 6],
        num_classes=1, n_conv_per_stage_decoder=[1, 1, 1, 1, 1], conv_bias=True, norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
        deep_supervision=False)


def test_openmind_resenc_l_encoder_equals_nnssl(one_thread):
    from medssl.hub.pretrained import resolve_pretrained
    from medssl.models import build_network

    path = fake_checkpoint("nnssl_resencl_mae")
    reference = nnssl_resenc_l().eval()
    reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["network_weights"])
    source = resolve_pretrained(str(path), catalog_id="openmind_resencl_mae", accept_licence=True)
    net = build_network(source.arch, 1, 2)
    source.init_weights(net)
    volume = torch.randn(1, 1, 64, 48, 96, generator=torch.Generator().manual_seed(0))  # (B, C, I, J, K)
    with torch.no_grad():
        theirs = reference.encoder(volume.permute(0, 1, 4, 3, 2).contiguous())  # nnssl's (K, J, I) array order
        ours = net.eval().encoder(volume)
    assert len(ours) == len(theirs) == 6
    for stage, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(a, b.permute(0, 1, 4, 3, 2), f"stage {stage}")
    # the order matters: fed in medssl's own order, nnssl's network computes something else
    with torch.no_grad():
        wrong = reference.encoder(volume)[-1].permute(0, 1, 4, 3, 2)
    assert wrong.shape != ours[-1].shape or relative_error(ours[-1], wrong) > 1e-2
