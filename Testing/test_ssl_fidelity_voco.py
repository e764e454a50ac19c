"""VoCo pretraining follows the released code where the project departed from it (issue: seed fidelity).

Oracles: PyTorch's own ``nn.Dropout1d`` on a 2-D tensor (what ``voco_head.py`` calls), MONAI's
``RandRotate90`` default plane, and the upstream optimiser line ``AdamW(model.parameters(), lr, amsgrad=True)``.
"""
from __future__ import annotations

import numpy as np
import torch

from medssl.data.volumes import VolumeSet
from medssl.ssl.methods.voco import IN_PLANE, VoCoConfig, VoCoViews, sample_dropout
from medssl.ssl.views import signed_permutation


def test_embedding_dropout_zeroes_whole_samples_like_upstream_dropout1d():
    emb = torch.rand(4000, 16) + 0.5
    upstream = torch.nn.Dropout1d(0.2)(emb)  # voco_head.py: 2-D input is read as unbatched (C=N, L=C)
    ours = sample_dropout(emb, 0.2, training=True)
    for out in (upstream, ours):
        zero_rows = (out == 0).all(1)
        assert ((out == 0).any(1) == zero_rows).all()  # a row is dropped whole or not at all
        assert abs(float(zero_rows.float().mean()) - 0.2) < 0.03
        kept = ~zero_rows
        assert torch.allclose(out[kept], emb[kept] / 0.8)
    assert torch.equal(sample_dropout(emb, 0.2, training=False), emb)


def test_quarter_turns_stay_in_plane():
    rng = np.random.default_rng(0)
    for slice_axis, pairs in IN_PLANE.items():
        for _ in range(200):
            q = signed_permutation(rng, 0.0, 1.0, pairs)
            assert abs(q[slice_axis, slice_axis]) == 1.0  # the slice axis is never turned into the plane
    turned = [signed_permutation(rng, 0.0, 1.0) for _ in range(200)]  # default: all pairs (3DINO)
    assert any(abs(q[2, 2]) != 1.0 for q in turned)


def test_bases_are_augmented_like_the_random_crops():
    ramp = np.add.outer(np.add.outer(np.arange(64.0), 2 * np.arange(64.0)), 3 * np.arange(16.0)).astype(np.float32)
    volumes = VolumeSet([ramp], [((0, 0, 0), ramp.shape)])
    plain = VoCoConfig(base_size=8, grid=(2, 2), n_crops=1, p_flip=0.0, p_rot90=0.0, p_shift=0.0)
    flipped = VoCoConfig(base_size=8, grid=(2, 2), n_crops=1, p_flip=1.0, p_rot90=0.0, p_shift=0.0)
    a = VoCoViews(plain).batch(volumes, np.random.default_rng(1), 1)["bases"]
    b = VoCoViews(flipped).batch(volumes, np.random.default_rng(1), 1)["bases"]
    assert torch.allclose(b, a.flip(-1, -2, -3), atol=1e-4)  # every base flipped on every axis


def test_voco_optimiser_is_upstreams():
    from medssl.models import resolve_arch
    from medssl.ssl import build_method
    from medssl.train.config import load_config
    from medssl.train.pretrain import PretrainConfig, preset_name

    for preset in (None, "cpu"):
        loop = load_config(PretrainConfig, "pretrain", preset_name("voco", preset)).loop
        assert loop.optimizer == "adamw" and loop.amsgrad and loop.weight_decay == 0.01 and loop.grad_clip == 0
    arch = resolve_arch("resenc", "unet", {"preset": "test"})
    method = build_method("voco", arch, {"base_size": 16, "grid": [2, 2], "hidden_dim": 8, "out_dim": 8}, (16,) * 3)
    groups = method.param_groups(1e-4, 0.01)
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in method.parameters() if p.requires_grad)
    assert all(g["weight_decay"] == 0.01 for g in groups)  # norms and biases decayed too, as upstream
