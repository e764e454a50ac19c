"""The cell shortcut of `label_resample` gives exactly the labels of resampling every class (SimpleITK linear)."""
import numpy as np
import pytest
import torch

import medssl.data.label_resample as lr
from medssl.data.label_resample import argmax_by_class, slab_label_index
from medssl.io.geometry import Grid

IDENTITY = (1, 0, 0, 0, 1, 0, 0, 0, 1)


def _rotation(angle: float, axis: int = 2) -> tuple:
    c, s = np.cos(angle), np.sin(angle)
    m = np.eye(3)
    a, b = [i for i in range(3) if i != axis]
    m[a, a], m[a, b], m[b, a], m[b, b] = c, -s, s, c
    return tuple(m.ravel())


def _organ_scores(shape, classes: int, seed: int, dtype=np.float32) -> np.ndarray:
    """(K, I, J, K') smooth class scores of random ellipsoid 'organs' (few boundaries, like a trained network)."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    labels = np.zeros(shape, np.int64)
    for c in range(1, classes):
        centre, radius = rng.uniform(0.2, 0.8, 3) * shape, rng.uniform(0.1, 0.3, 3) * shape
        labels[sum(((g - m) / r) ** 2 for g, m, r in zip(grid, centre, radius)) < 1] = c
    onehot = torch.nn.functional.one_hot(torch.tensor(labels), classes).permute(3, 0, 1, 2).float()
    scores = torch.nn.functional.avg_pool3d(onehot[None], 3, 1, 1)[0] * 5 + 0.05 * torch.randn(onehot.shape)
    return scores.numpy().astype(dtype)


CASES = {  # network grid (size, spacing, origin, direction), input slab (size, spacing, origin, direction)
    "upsampled": (((24, 20, 14), (1.6, 1.6, 3.0), (0.0, 0.0, 0.0), IDENTITY),
                  ((48, 40, 28), (0.8, 0.8, 1.5), (-0.4, -0.4, -0.75), IDENTITY)),
    "oblique, past the edges": (((22, 25, 13), (2.0, 2.5, 3.0), (1.0, -2.0, 3.0), _rotation(0.4)),
                                ((50, 57, 30), (0.9, 1.0, 1.3), (-6.0, -9.0, -2.0), _rotation(-0.2, 0))),
    "downsampled": (((30, 30, 30), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), IDENTITY),
                    ((12, 13, 11), (2.3, 2.1, 2.5), (0.3, 0.1, 0.2), IDENTITY)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_cells_give_the_labels_of_every_class_resampled(case, dtype, monkeypatch):
    monkeypatch.setattr(lr, "MAX_OPEN_SHARE", 0.5)  # small grids: relatively more boundary; keep the shortcut
    (net_size, *net_geometry), (slab_size, *slab_geometry) = CASES[case]
    sub, slab = Grid(net_size, *net_geometry), Grid(slab_size, *slab_geometry)
    block = _organ_scores(net_size, 6, seed=len(case), dtype=dtype)
    expected = argmax_by_class(block, sub, slab)
    got = slab_label_index(block, sub, slab)
    assert got.dtype == np.uint8 and got.shape == expected.shape == tuple(slab_size[::-1])
    assert np.array_equal(got, expected)
    cells = lr._cell_labels(np.argmax(block, 0).astype(np.uint8), 255)
    share = (lr._nearest(cells, lr._cell_grid(sub), slab, 0) == 255).mean()
    assert 0.005 < share <= lr.MAX_OPEN_SHARE  # the shortcut ran, and it did interpolate some boundary points
    assert 0 in got and len(np.unique(got)) > 3


def test_interpolation_alone_matches_itk_everywhere_even_for_noise(monkeypatch):
    """Every point forced through the open path (ITK's nested lerps, clamping, buffer test) on random noise."""
    (net_size, *net_geometry), (slab_size, *slab_geometry) = CASES["oblique, past the edges"]
    sub, slab = Grid(net_size, *net_geometry), Grid(slab_size, *slab_geometry)
    block = np.random.default_rng(3).normal(size=(5, *net_size)).astype(np.float32)
    monkeypatch.setattr(lr, "MAX_OPEN_SHARE", 1.0)
    monkeypatch.setattr(lr, "POINTS_PER_CHUNK", 4096)  # several chunks
    assert np.array_equal(slab_label_index(block, sub, slab), argmax_by_class(block, sub, slab))


def test_noisy_scores_fall_back_to_every_class(monkeypatch):
    (net_size, *net_geometry), (slab_size, *slab_geometry) = CASES["upsampled"]
    sub, slab = Grid(net_size, *net_geometry), Grid(slab_size, *slab_geometry)
    block = np.random.default_rng(4).normal(size=(4, *net_size)).astype(np.float32)
    calls = []
    real = lr.argmax_by_class
    monkeypatch.setattr(lr, "argmax_by_class", lambda *a: calls.append(1) or real(*a))
    assert np.array_equal(slab_label_index(block, sub, slab), real(block, sub, slab)) and calls == [1]


@pytest.mark.parametrize("classes, dtype", [(9, np.float32), (14, np.float16), (300, np.float32)])
def test_class_argmax_equals_numpy_argmax_ties_included(classes, dtype):
    from medssl.data.label_resample import class_argmax

    rng = np.random.default_rng(classes)
    scores = rng.integers(0, 4, size=(classes, 7, 9, 11)).astype(dtype)  # few values: ties everywhere
    got = class_argmax(scores)
    assert got.dtype == (np.uint8 if classes <= 256 else np.int32)
    np.testing.assert_array_equal(got, np.argmax(scores, axis=0))
    view = scores[:, 1:, ::2]  # strided, as the streamed chunks are
    np.testing.assert_array_equal(class_argmax(torch.from_numpy(np.ascontiguousarray(view))), np.argmax(view, 0))
    np.testing.assert_array_equal(class_argmax(view), np.argmax(view, axis=0))
