"""One voxel-affine map serves fine-tuning patches and SSL views: without augmentation both are exact crops
(oracle: numpy slicing), and a quarter turn moves voxels where numpy's rot90 does."""
from __future__ import annotations

import numpy as np
import torch

from medssl.data.augment import AugmentConfig, random_affine
from medssl.data.sampling import _sample_patch
from medssl.ssl.views import crop_matrix, sample_view


def test_unaugmented_patch_and_view_are_exact_crops():
    vol = np.random.default_rng(0).normal(size=(20, 18, 16)).astype(np.float32)
    patch, centre = (8, 6, 4), np.array([9.0, 7.0, 8.0])
    lo = (centre - np.floor(np.array(patch) / 2)).astype(int)
    crop = vol[lo[0]:lo[0] + 8, lo[1]:lo[1] + 6, lo[2]:lo[2] + 4]
    theta = random_affine(np.random.default_rng(1), AugmentConfig.none(), patch, vol.shape, centre)
    image, _ = _sample_patch(torch.from_numpy(vol)[None], torch.zeros(vol.shape), theta, patch)
    assert torch.allclose(image[0], torch.from_numpy(crop), atol=1e-5)
    view_centre = lo + (np.array(patch) - 1) / 2.0  # views are centred between voxels for even sides
    view = sample_view(vol, view_centre, crop_matrix(patch, patch), patch)
    assert torch.allclose(view[0], torch.from_numpy(crop), atol=1e-5)


def test_quarter_turn_view_is_numpys_rot90():
    vol = np.random.default_rng(2).normal(size=(10, 10, 6)).astype(np.float32)
    q = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # output i -> volume j, j -> -i
    view = sample_view(vol, (np.array(vol.shape) - 1) / 2.0, crop_matrix((10, 10, 6), (10, 10, 6), q), (10, 10, 6))
    turned = [np.rot90(vol, k, axes=(0, 1)) for k in (1, 3)]
    assert any(np.allclose(view[0].numpy(), t, atol=1e-5) for t in turned)
