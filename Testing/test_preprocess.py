"""preprocess -> invert: the prediction lands exactly on the input grid (coronal, oblique, anisotropic)."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from medssl_test_utils import blob_labels, oblique_image

from medssl.data.normalization import fit_normalization, normalize
from medssl.data.postprocess import scores_to_labels
from medssl.data.preprocess import preprocess, target_grid
from medssl.errors import InputError
from medssl.io.geometry import Grid, same_grid
from medssl.io.labels import read_label_map
from medssl.io.volume_io import read_image
from medssl.plan import ArchSpec, ChannelSpec, NormSpec, Plan, default_labels


def make_plan(spacing=None, orientation="RAS", channels=1, n_labels=3, norm=("zscore", {"per_image": True})) -> Plan:
    return Plan(channels=[ChannelSpec(f"c{i}") for i in range(channels)],
                normalization=[NormSpec(*norm) for _ in range(channels)], patch_size=(32, 32, 32),
                labels=default_labels([f"l{i}" for i in range(1, n_labels + 1)]),
                architecture=ArchSpec("resenc", "unet"), spacing=spacing, orientation=orientation)


def one_hot(label: np.ndarray, k: int) -> np.ndarray:
    return (label[None] == np.arange(k)[:, None, None, None]).astype(np.float32)


def roundtrip_agreement(image: sitk.Image, labels: sitk.Image, plan: Plan) -> tuple:
    """Labels through preprocess (nearest) and back through the inverse: (output image, fraction equal)."""
    pre = preprocess([image], plan, labels)
    back = scores_to_labels(one_hot(pre.label, plan.num_classes), pre.record, plan.label_values())
    agree = np.mean(sitk.GetArrayViewFromImage(back) == sitk.GetArrayViewFromImage(labels))
    return back, agree


@pytest.mark.parametrize("spacing,orientation,min_agree", [
    (None, "native", 1.0), (None, "RAS", 1.0), (None, "LPS", 1.0), ((1.5, 1.5, 1.5), "RAS", 0.85),
    ((3.0, 3.0, 3.0), "RAS", 0.7)])
def test_real_coronal_scan_inverts_onto_input_grid(kmeans_t1, kmeans_labels, spacing, orientation, min_agree):
    image, labels = read_image(kmeans_t1), read_label_map(kmeans_labels).image
    plan = make_plan(spacing, orientation, n_labels=6)
    back, agree = roundtrip_agreement(image, labels, plan)
    assert same_grid(Grid.of(back), Grid.of(image), rtol=1e-9, atol_mm=1e-9)
    assert back.GetDirection() == image.GetDirection()
    assert agree >= min_agree


def test_reorientation_permutes_axes_to_ras(kmeans_t1):
    image = read_image(kmeans_t1)  # coronal: LSA
    grid = target_grid(image, "RAS", None)
    np.testing.assert_allclose(np.array(grid.direction).reshape(3, 3), np.diag([-1, -1, 1]), atol=1e-12)
    assert sorted(grid.size) == sorted(image.GetSize()) and grid.size == (128, 62, 128)
    pre = preprocess([image], make_plan(None, "RAS"))
    # voxel (i, j, k) of the network grid sits at the same physical point as in the input
    for ijk in [(0, 0, 0), (10, 20, 30), (127, 61, 127)]:
        p = Grid.from_dict(pre.record.network_grid.to_dict()).matrix() @ np.array([*ijk, 1.0])
        idx = image.TransformPhysicalPointToIndex(p[:3].tolist())
        raw = float(image.GetPixel(idx))
        expected = (raw - sitk.GetArrayViewFromImage(image).mean()) / sitk.GetArrayViewFromImage(image).std()
        assert pre.image[0][ijk] == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("left_handed", [False, True])
@pytest.mark.parametrize("spacing", [None, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0)])
def test_oblique_anisotropic_images_invert_exactly(left_handed, spacing):
    image = oblique_image(left_handed=left_handed)
    labels = blob_labels(image)
    back, agree = roundtrip_agreement(image, labels, make_plan(spacing, "RAS"))
    assert same_grid(Grid.of(back), Grid.of(image), rtol=1e-9, atol_mm=1e-9)
    assert agree >= (1.0 if spacing is None else 0.75)


def test_channels_on_different_grids_are_refused(kmeans_t1):
    image = read_image(kmeans_t1)
    shifted = sitk.Image(image)
    shifted.SetOrigin((5.0, 0.0, 0.0))
    with pytest.raises(InputError, match="different grid"):
        preprocess([image, shifted], make_plan(channels=2))
    with pytest.raises(InputError, match="expects 2 channel"):
        preprocess([image], make_plan(channels=2))


def test_nan_voxels_are_refused():
    image = oblique_image()
    arr = sitk.GetArrayFromImage(image)
    arr[3, 4, 5] = np.nan
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(image)
    with pytest.raises(InputError, match="1 NaN or infinite voxels"):
        preprocess([bad], make_plan())


@pytest.mark.parametrize("scheme,options,lo,hi", [
    ("ct_window", {"lower": -100, "upper": 300, "out": [0, 1]}, 0.0, 1.0),
    ("percentile", {"lower_pct": 1, "upper_pct": 99}, -1.0, 1.0),
    ("percentile", {"per_image": True}, -1.0, 1.0)])
def test_normalisation_ranges(scheme, options, lo, hi):
    x = np.random.default_rng(0).normal(50, 200, size=(20, 20, 20)).astype(np.float32)
    params = fit_normalization(scheme, [x], **options)
    y = normalize(x.copy(), scheme, params)
    assert y.min() == pytest.approx(lo) and y.max() == pytest.approx(hi)


def test_frozen_zscore_uses_training_statistics():
    train = np.random.default_rng(0).normal(100, 10, size=(30, 30, 30)).astype(np.float32)
    params = fit_normalization("zscore", [train])
    assert params["mean"] == pytest.approx(100, abs=0.2) and params["std"] == pytest.approx(10, abs=0.2)
    assert normalize(np.full(4, 120, np.float32), "zscore", params) == pytest.approx(2.0, abs=0.05)


def test_zscore_of_huge_intensities_does_not_overflow():
    """Found by an audit: a scan scaled by 1e20 (its squares exceed float32) was normalised with an infinite std
    and segmented differently; the statistics fall back to float64 there and stay float32's bit for bit
    elsewhere."""
    import warnings

    from medssl.data.normalization import fit_normalization, normalize

    rng = np.random.default_rng(0)
    x = rng.normal(100, 20, (20, 20, 20)).astype(np.float32)
    expected = normalize(x.copy(), "zscore", fit_normalization("zscore", [x]))
    assert fit_normalization("zscore", [x])["std"] == float(x.std())  # unchanged where float32 suffices
    huge = (x * np.float32(1e20)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning either
        dataset = normalize(huge.copy(), "zscore", fit_normalization("zscore", [huge]))
        own = normalize(huge.copy(), "zscore", {"per_image": True, "nonzero": False})
    np.testing.assert_allclose(dataset, expected, atol=1e-5)
    np.testing.assert_allclose(own, expected, atol=1e-5)
