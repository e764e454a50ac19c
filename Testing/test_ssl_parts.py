"""SSL building blocks with analytic expectations: views, masks, losses, heads, EMA, parameter groups."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medssl.ssl import intensity
from medssl.ssl.ema import cosine_schedule, linear_warmup, update_momentum
from medssl.ssl.heads import DINOHead, TokenDecoder, pooled_features
from medssl.ssl.losses.dino import DINOLoss, sinkhorn_knopp
from medssl.ssl.losses.fusion import fusion_dice_ce
from medssl.ssl.losses.ibot import iBOTPatchLoss
from medssl.ssl.losses.koleo import koleo_loss
from medssl.ssl.losses.reconstruction import from_blocks, masked_mse, normalize_blocks, to_blocks
from medssl.ssl.losses.voco import orthogonality_loss, position_loss, similarities
from medssl.ssl.masking import exact_mask, expand_blocks, keep_indices, stratified_token_masks
from medssl.ssl.methods.voco import neighbour_distinct_volumes, overlap_labels
from medssl.ssl.methods.volume_fusion import fuse, fusion_map
from medssl.ssl.param_groups import layerwise_groups
from medssl.ssl.views import crop_matrix, random_centre, resized_crop_extent, sample_view, signed_permutation


pytestmark = pytest.mark.usefixtures("one_thread")


def test_sample_view_identity_is_an_exact_crop():
    vol = np.random.default_rng(0).normal(size=(20, 24, 18)).astype(np.float32)
    view = sample_view(vol, (10.5, 11.5, 8.0), np.eye(3), (6, 8, 5))  # centre of voxels 8..13, 8..15, 6..10
    assert view.shape == (1, 6, 8, 5)
    assert torch.allclose(view[0], torch.from_numpy(vol[8:14, 8:16, 6:11]), atol=1e-5)


def test_sample_view_flip_and_quarter_turn():
    vol = np.random.default_rng(1).normal(size=(16, 16, 16)).astype(np.float32)
    flipped = sample_view(vol, (7.5, 7.5, 7.5), np.diag([-1.0, 1.0, 1.0]), (16, 16, 16))[0]
    assert torch.allclose(flipped, torch.from_numpy(vol[::-1].copy()), atol=1e-5)
    q = signed_permutation(np.random.default_rng(2), 0.0, 1.0)
    assert np.allclose(np.abs(q).sum(0), 1) and np.allclose(q @ q.T, np.eye(3))
    turned = sample_view(vol, (7.5, 7.5, 7.5), q, (16, 16, 16))[0]
    assert sorted(turned.flatten().tolist()) == pytest.approx(sorted(vol.flatten().tolist()), abs=1e-5)


def test_sample_view_downscales_and_repeats_the_border():
    vol = np.arange(32, dtype=np.float32)[:, None, None] * np.ones((32, 4, 4), np.float32)
    half = sample_view(vol, (15.5, 1.5, 1.5), crop_matrix((32, 4, 4), (16, 4, 4)), (16, 4, 4))[0]
    assert torch.allclose(half[:, 0, 0], torch.arange(16, dtype=torch.float32) * 2 + 0.5, atol=1e-4)
    outside = sample_view(vol, (40.0, 1.5, 1.5), np.eye(3), (4, 4, 4))[0]
    assert torch.all(outside == 31)


def test_crop_extent_and_centre_respect_scales_and_foreground():
    rng = np.random.default_rng(3)
    for _ in range(50):
        e = resized_crop_extent(rng, (100, 80, 40), (0.16, 0.48), (0.2, 0.5), (0.9, 1 / 0.9), slice_axis=2)
        assert 0.16 * 0.9 <= e[0] * e[1] / 8000 <= 0.48 / 0.9 + 1e-6 and 8 <= e[2] <= 20
        c = random_centre(rng, e, ((10, 0, 0), (110, 80, 40)))
        assert np.all(c - e / 2 >= np.array([10, 0, 0]) - 0.5 - 1e-6)
        assert np.all(c + e / 2 <= np.array([110, 80, 40]) - 0.5 + 1e-6)


def test_intensity_augmentations_keep_shape_and_range():
    rng = np.random.default_rng(4)
    x = torch.rand(1, 12, 12, 12)
    for y in (intensity.gamma(x, 2.0), intensity.histogram_shift(x, rng), intensity.gaussian_smooth(x, 1.0)):
        assert y.shape == x.shape and y.min() >= x.min() - 1e-5 and y.max() <= x.max() + 1e-5
    assert intensity.gibbs_noise(x, 0.0).sub(x).abs().max() < 1e-5
    assert intensity.gaussian_smooth(torch.ones(1, 8, 8, 8), 1.0).sub(1).abs().max() < 1e-5
    assert torch.allclose(intensity.invert(intensity.invert(x)), x)


def test_stratified_masks_follow_the_dinov2_rule():
    masks = stratified_token_masks(np.random.default_rng(5), 8, 100, (0.2, 0.75), 0.5)
    counts = sorted(int(c) for c in masks.sum(1))
    assert counts[:4] == [0, 0, 0, 0]
    edges = np.linspace(0.2, 0.75, 5) * 100
    assert all(edges[i] - 1 <= c <= edges[i + 1] for i, c in enumerate(counts[4:]))


def test_block_masks_and_token_indices():
    m = exact_mask(np.random.default_rng(6), 64, 0.75)
    assert m.sum() == 48
    vox = expand_blocks(torch.from_numpy(m.reshape(1, 4, 4, 4)), (2, 3, 4))
    assert vox.shape == (1, 1, 8, 12, 16) and int(vox.sum()) == 48 * 24
    rows = torch.tensor([[True, False, True, False], [False, False, True, True]])
    assert keep_indices(rows).tolist() == [[1, 3], [0, 1]]


def test_blocks_round_trip_and_normalised_target():
    x = torch.randn(2, 1, 8, 8, 8)
    rows = to_blocks(x, (4, 4, 4))
    assert rows.shape == (2, 8, 64) and torch.equal(from_blocks(rows, (4, 4, 4), (2, 2, 2)), x)
    z = normalize_blocks(rows)
    assert torch.allclose(z.mean(-1), torch.zeros(2, 8), atol=1e-5)


def test_masked_mse_ignores_visible_voxels():
    pred, target = torch.zeros(1, 1, 4, 4, 4), torch.ones(1, 1, 4, 4, 4)
    mask = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    mask[..., :2] = True
    target[..., 2:] = 100.0  # visible voxels: must not count
    assert float(masked_mse(pred, target, mask)) == pytest.approx(1.0)


def test_sinkhorn_equipartitions_prototypes():
    logits = torch.randn(64, 16) * 0.3
    q = sinkhorn_knopp(logits, 0.1)  # DINOv2's 3 iterations: rows exact, columns close to N / K
    assert torch.allclose(q.sum(1), torch.ones(64), atol=1e-4)
    plain = torch.softmax(logits / 0.1, -1).sum(0)
    assert (q.sum(0) - 4).abs().max() < 0.5 * (plain - 4).abs().max()
    assert torch.allclose(sinkhorn_knopp(logits, 0.1, n_iterations=50).sum(0), torch.full((16,), 4.0), rtol=1e-3)


def test_dino_loss_is_soft_cross_entropy_and_centre_moves():
    s, t = torch.randn(5, 8), torch.softmax(torch.randn(5, 8), -1)
    loss = DINOLoss(8, student_temp=0.1)
    expected = -(t * F.log_softmax(s / 0.1, -1)).sum(-1).mean()
    assert float(loss([s], [t])) == pytest.approx(float(expected), rel=1e-5)
    loss.softmax_center_teacher(torch.ones(5, 8), 0.04)
    assert torch.allclose(loss.center, torch.full((1, 8), 0.1))


def test_ibot_weights_each_image_by_its_masked_tokens():
    masks = torch.tensor([[True, True, False], [False, False, False], [True, False, False]])
    s, t = torch.randn(3, 4), torch.softmax(torch.randn(3, 4), -1)
    per = -(t * F.log_softmax(s / 0.1, -1)).sum(-1)
    expected = (per[0] / 2 + per[1] / 2 + per[2]) / 3
    assert float(iBOTPatchLoss(0.1)(s, t, masks)) == pytest.approx(float(expected), rel=1e-5)


def test_koleo_matches_nearest_neighbour_distances():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    d = torch.tensor([math.dist((1, 0), (0.8, 0.6)), math.dist((0, 1), (0.8, 0.6)), math.dist((1, 0), (0.8, 0.6))])
    assert float(koleo_loss(x)) == pytest.approx(float(-torch.log(d).mean()), rel=1e-5)


def test_voco_overlaps_and_losses():
    labels = overlap_labels(np.array([0.5, 1.0]), (3, 3))
    assert labels.sum() == pytest.approx(1.0)
    assert labels.reshape(3, 3)[0, 1] == pytest.approx(0.5) and labels.reshape(3, 3)[1, 1] == pytest.approx(0.5)
    perfect = torch.from_numpy(labels[None]).float()
    assert float(position_loss(perfect, perfect)) == pytest.approx(0.0, abs=1e-4)
    assert float(position_loss(perfect, 1 - perfect)) > 1.0
    bases = torch.eye(4, 6)
    assert float(orthogonality_loss(bases)) == pytest.approx(0.0, abs=1e-6)
    assert similarities(bases, bases).diag().tolist() == pytest.approx([1.0] * 4)


def test_volume_fusion_mixes_analytically():
    first, second = torch.full((1, 4, 4, 4), 0.5), torch.full((1, 4, 4, 4), 0.25)
    label = torch.full((4, 4, 4), 2)
    label[0] = 0
    label[1] = 4
    fused = fuse(first, second, label, 5)
    assert float(fused[0, 2, 0, 0]) == pytest.approx(0.375)
    assert float(fused[0, 0, 0, 0]) == 0.25 and float(fused[0, 1, 0, 0]) == 0.5
    painted = fusion_map(np.random.default_rng(7), (16, 32, 32), 5, (10, 40))
    assert painted.min() >= 0 and painted.max() <= 4 and len(np.unique(painted)) > 1
    logits = F.one_hot(torch.from_numpy(painted)[None], 5).movedim(-1, 1).float() * 20
    assert float(fusion_dice_ce(logits, torch.from_numpy(painted)[None])["loss"]) < 1e-3


def test_dino_head_freezes_prototypes_on_request():
    head = DINOHead(8, 16, hidden_dim=12, bottleneck_dim=6)
    head(torch.randn(3, 8), freeze_last=True).sum().backward()
    assert head.weight_v.grad is None and head.weight_g.grad is None and head.mlp[0].weight.grad is not None
    out = head(torch.randn(3, 8))
    assert out.abs().max() <= 1.0 + 1e-5  # normalised bottleneck x unit prototypes: cosines


def test_token_decoder_restores_order_and_pooling():
    dec = TokenDecoder(8, 27, dim=12, depth=1, heads=2)
    keep = torch.tensor([[0, 5, 7]])
    assert dec(torch.randn(1, 3, 8), keep, (2, 2, 2)).shape == (1, 8, 27)
    feats = [torch.ones(2, 3, 4, 4, 4), torch.full((2, 5, 2, 2, 2), 2.0)]
    assert pooled_features(feats).tolist() == [[1.0] * 3 + [2.0] * 5] * 2


def test_ema_and_schedules():
    student, teacher = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with torch.no_grad():
        student.weight.fill_(1.0)
        teacher.weight.fill_(0.0)
    update_momentum(teacher, student, 0.9)
    assert torch.allclose(teacher.weight, torch.full((2, 2), 0.1))
    assert cosine_schedule(0, 100, 0.992, 1.0) == pytest.approx(0.992)
    assert cosine_schedule(100, 100, 0.992, 1.0) == pytest.approx(1.0)
    assert linear_warmup(5, 10, 0.04, 0.07) == pytest.approx(0.055) and linear_warmup(20, 10, 0.04, 0.07) == 0.07


def test_layerwise_groups():
    from medssl.models.backbones.vit3d import ViT3DEncoder

    vit = ViT3DEncoder(1, 16, 3, 2, 32, [2])
    named = [(f"b.{n}", p) for n, p in vit.named_parameters()] + [("head.w", torch.nn.Parameter(torch.ones(2, 2)))]
    groups = layerwise_groups(named, 3, 1.0, 0.1, 0.5, 0.2, backbone_prefix="b.")
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert lr_of[id(vit.blocks[2].attn.qkv.weight)] == pytest.approx(0.5)
    assert lr_of[id(vit.blocks[0].attn.qkv.weight)] == pytest.approx(0.125)
    assert lr_of[id(vit.patch_embed.proj.weight)] == pytest.approx(0.0625 * 0.2)
    assert lr_of[id(named[-1][1])] == 1.0 and wd_of[id(vit.blocks[0].norm1.weight)] == 0.0


@pytest.mark.parametrize("n_volumes, batch", [(2, 2), (2, 4), (3, 3), (5, 4), (4, 7)])
def test_voco_inter_volume_partners_come_from_other_volumes(n_volumes, batch):
    """Item i is compared with item (i + 1) % B: they must be different volumes (VoCo's inter-volume term)."""
    for seed in range(20):
        ids = neighbour_distinct_volumes(n_volumes, batch, np.random.default_rng(seed))
        assert len(ids) == batch and all(0 <= v < n_volumes for v in ids)
        assert all(ids[i] != ids[(i + 1) % batch] for i in range(batch))
    assert neighbour_distinct_volumes(1, 3, np.random.default_rng(0)) == [0, 0, 0]
