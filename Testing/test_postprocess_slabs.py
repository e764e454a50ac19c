"""Labels on the input grid filled slab by slab equal the whole-volume resampling (oblique grids included)."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from medssl_test_utils import oblique_image

from medssl.data import postprocess
from medssl.data.preprocess import preprocess
from medssl.models import resolve_arch
from medssl.plan import ChannelSpec, NormSpec, Plan, default_labels


def _whole_volume_labels(scores, record, values):
    """The former algorithm: every class resampled onto the whole input grid, running arg-max."""
    best = postprocess._to_input_grid(scores[0], record, default=1.0)
    index = np.zeros(best.shape, np.uint8)
    for c in range(1, scores.shape[0]):
        s = postprocess._to_input_grid(scores[c], record, default=0.0)
        index[s > best] = c
        np.maximum(best, s, out=best)
    return sitk.GetArrayFromImage(postprocess.image_from_ijk(np.asarray(values, np.uint8)[index], record.input_grid))


@pytest.mark.parametrize("slab_slices", [1, 3, 1000])
def test_slabs_equal_the_whole_volume(monkeypatch, slab_slices):
    image = oblique_image(size=(60, 50, 40), left_handed=True)
    plan = Plan([ChannelSpec("t1")], [NormSpec("zscore", {"per_image": True})], (16, 16, 16),
                default_labels(["a", "b", "c"]), resolve_arch("resenc", "unet", {"preset": "test"}),
                spacing=(2.1, 1.7, 3.3))
    pre = preprocess([image], plan)
    noise = np.random.default_rng(0).random((4, *pre.image.shape[1:])).astype(np.float32)
    scores = np.stack([sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(c), 1.0))
                       for c in noise]).astype(np.float16)
    monkeypatch.setattr(postprocess, "SLAB_VOXELS", 60 * 50 * slab_slices)
    got = postprocess.scores_to_labels(scores, pre.record, plan.label_values())
    assert got.GetSize() == image.GetSize() and got.GetOrigin() == image.GetOrigin()
    expected = _whole_volume_labels(scores.astype(np.float32), pre.record, plan.label_values())
    assert len(np.unique(expected)) == 4
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got), expected)


@pytest.mark.parametrize("axis", [0, 2])
def test_blocks_in_stream_order_give_the_same_labels_and_are_dropped(monkeypatch, axis):
    """Scores handed in block by block (as the streamed stitcher does) give the whole-volume labels; on an
    axis-aligned grid streamed along the input's slab axis, only a band of network slices is ever held."""
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((40, 50, 60)).astype(np.float32))
    image.SetSpacing((0.8, 0.9, 1.5))
    plan = Plan([ChannelSpec("t1")], [NormSpec("zscore", {"per_image": True})], (16, 16, 16),
                default_labels(["a", "b", "c"]), resolve_arch("resenc", "unet", {"preset": "test"}),
                spacing=(1.6, 1.8, 2.0), orientation="native")
    record = preprocess([image], plan).record
    shape = record.network_grid.size
    noise = np.random.default_rng(1).random((4, *shape)).astype(np.float32)
    scores = np.stack([sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(c), 1.0))
                       for c in noise]).astype(np.float16)
    monkeypatch.setattr(postprocess, "SLAB_VOXELS", 60 * 50 * 4)
    expected = sitk.GetArrayFromImage(postprocess.scores_to_labels(scores, record, plan.label_values()))
    writer, held = postprocess.SlabLabels(record, plan.label_values(), axis), []
    for start in range(0, shape[axis], 3):
        block = [slice(None)] * 4
        block[1 + axis] = slice(start, start + 3)
        writer.add(start, scores[tuple(block)])
        held.append(sum(c.shape[1 + axis] for _, c in writer.chunks))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(writer.result()), expected)
    assert (max(held) < shape[axis] / 2) == (axis == 2)  # the input's slab axis k is the network's axis 2
