"""Test-time augmentation and uncertainty against oracles written here, sharing no code with medssl's inference.

TTA (README: ``--tta``; nnU-Net's mirroring): for every subset of the plan's mirror axes, flip the input, run
the network, take the softmax, flip it back; average the 2^n copies. The oracle does exactly that with
``torch.flip`` on a volume that fits one window, so MONAI's stitching adds nothing. The network is neither
flip- nor translation-equivariant (a learned bias field), so forgetting to flip back, flipping the wrong
axis or averaging fewer copies changes the result. Uncertainty is the normalised Shannon entropy
``-sum(p ln p) / ln K`` of those probabilities, computed by hand.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from medssl_test_utils import oblique_image

from medssl import Predictor
from medssl.data.postprocess import entropy
from medssl.plan import ArchSpec, ChannelSpec, LabelSpec, NormSpec, Plan, SlidingWindowSpec

SIZE, K, MEAN, STD = 16, 3, 100.0, 10.0
RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # ITK directions are LPS: this grid is already RAS

pytestmark = pytest.mark.usefixtures("one_thread")


class BiasFieldNet(torch.nn.Module):
    """A 3x3x3 convolution plus a fixed random logit field over the window: position-dependent on purpose."""

    def __init__(self, size: int = SIZE) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.conv = torch.nn.Conv3d(1, K, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
        self.field = torch.nn.Parameter(2 * torch.randn(K, size, size, size, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.field


def make_plan(patch: int = SIZE, spacing=(2.0, 2.0, 2.0)) -> Plan:
    return Plan(channels=[ChannelSpec("t1", "MR")], normalization=[NormSpec("zscore", {"mean": MEAN, "std": STD})],
                patch_size=(patch, patch, patch),
                labels=[LabelSpec(0, "background"), LabelSpec(3, "a"), LabelSpec(7, "b")],
                architecture=ArchSpec("resenc", "unet", {"preset": "test"}), spacing=spacing,
                sliding_window=SlidingWindowSpec(overlap=0.5, mirror_axes=(0, 1, 2)))


def ras_image(seed: int = 0) -> sitk.Image:
    arr = np.random.default_rng(seed).normal(MEAN, 3 * STD, (SIZE, SIZE, SIZE)).astype(np.float32)
    img = sitk.GetImageFromArray(arr)  # array (k, j, i)
    img.SetSpacing((2.0, 2.0, 2.0))
    img.SetDirection(RAS)
    img.SetOrigin((12.0, -3.0, 40.0))
    return img


def oracle_probabilities(net: torch.nn.Module, image: sitk.Image, mirror: bool) -> np.ndarray:
    """(K, I, J, K) class probabilities by hand: z-score, then the flip / run / flip back / average recipe."""
    x = (sitk.GetArrayFromImage(image).transpose(2, 1, 0) - MEAN) / STD  # (i, j, k): the grid is already RAS
    x = torch.from_numpy(np.ascontiguousarray(x, np.float32))[None, None]
    subsets = [s for r in range(4) for s in itertools.combinations((2, 3, 4), r)] if mirror else [()]
    assert len(subsets) == (8 if mirror else 1)
    with torch.no_grad():
        copies = [torch.softmax(net(x.flip(s) if s else x), 1).flip(s) if s else torch.softmax(net(x), 1)
                  for s in subsets]
    return (sum(copies) / len(copies))[0].numpy()


def predicted_probabilities(result) -> np.ndarray:
    return sitk.GetArrayFromImage(result.probabilities).transpose(3, 2, 1, 0)  # (k, j, i, c) -> (c, i, j, k)


def hand_entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, 1))).sum(0) / math.log(p.shape[0])


@pytest.mark.parametrize("tta", [False, True])
def test_probabilities_equal_the_hand_written_mirroring(tta):
    net, image = BiasFieldNet(), ras_image()
    result = Predictor(make_plan(), net, torch.device("cpu"), precision="float32").predict([image], tta=tta, probabilities=True,
                                                                        uncertainty=True)
    expected = oracle_probabilities(net, image, mirror=tta)
    np.testing.assert_allclose(predicted_probabilities(result), expected, atol=2e-5)
    labels = sitk.GetArrayFromImage(result.labels).transpose(2, 1, 0)
    np.testing.assert_array_equal(labels, np.array([0, 3, 7])[expected.argmax(0)])
    unc = sitk.GetArrayFromImage(result.uncertainty).transpose(2, 1, 0)
    np.testing.assert_allclose(unc, hand_entropy(expected), atol=1e-4)
    # the oracle tells the two apart: this net is not mirror-symmetric, so TTA must change the probabilities
    other = oracle_probabilities(net, image, mirror=not tta)
    assert np.abs(expected - other).max() > 0.1


def test_low_memory_tta_labels_and_uncertainty_equal_the_oracle():
    """The streamed stitcher (``--low-memory``) with TTA: labels and uncertainty from the same hand recipe."""
    net, image = BiasFieldNet(), ras_image(1)
    result = Predictor(make_plan(), net, torch.device("cpu"), precision="float32").predict([image], tta=True, low_memory=True,
                                                                        uncertainty=True)
    expected = oracle_probabilities(net, image, mirror=True)
    labels = sitk.GetArrayFromImage(result.labels).transpose(2, 1, 0)
    np.testing.assert_array_equal(labels, np.array([0, 3, 7])[expected.argmax(0)])
    unc = sitk.GetArrayFromImage(result.uncertainty).transpose(2, 1, 0)
    np.testing.assert_allclose(unc, hand_entropy(expected), atol=1e-4)


def test_entropy_matches_hand_computed_values():
    p = np.zeros((3, 4), np.float32)
    p[:, 0] = [0.5, 0.25, 0.25]  # -(0.5 ln 0.5 + 2 x 0.25 ln 0.25) = 1.5 ln 2, over ln 3
    p[:, 1] = 1 / 3  # uniform: the maximum, 1
    p[:, 2] = [1, 0, 0]  # certain: 0
    p[:, 3] = [0.9, 0.1, 0.0]  # -(0.9 ln 0.9 + 0.1 ln 0.1) / ln 3
    expected = [1.5 * math.log(2) / math.log(3), 1.0, 0.0, -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(3)]
    np.testing.assert_allclose(entropy(p), expected, atol=1e-4)
    assert entropy(np.full((5, 1), 0.2, np.float32))[0] == pytest.approx(1.0, abs=1e-6)  # normalised by ln K


def test_low_memory_uncertainty_equals_the_full_path_on_an_oblique_grid():
    """Several windows, an oblique input resampled to the network grid and back: the streamed path's labels and
    uncertainty are those of the full-probability path (they share only the network)."""
    image = oblique_image(size=(30, 28, 24), spacing=(1.7, 1.9, 2.6), seed=4)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, K, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(K, K, 3, padding=1))
    torch.manual_seed(0)
    for m in net:
        if isinstance(m, torch.nn.Conv3d):
            torch.nn.init.normal_(m.weight, std=0.5)
    pred = Predictor(make_plan(patch=16, spacing=(2.5, 2.5, 2.5)), net, torch.device("cpu"), precision="float32")
    full = pred.predict([image], tta=True, low_memory=False, uncertainty=True)
    low = pred.predict([image], tta=True, low_memory=True, uncertainty=True)
    a, b = sitk.GetArrayFromImage(full.uncertainty), sitk.GetArrayFromImage(low.uncertainty)
    assert a.shape == sitk.GetArrayViewFromImage(image).shape and a.std() > 0.05  # not a constant map
    np.testing.assert_allclose(b, a, atol=2e-3)
    la, lb = sitk.GetArrayFromImage(full.labels), sitk.GetArrayFromImage(low.labels)
    assert (la == lb).mean() > 0.999 and len(np.unique(la)) == K
