"""Sparse-slice annotation (``--sparse-slices``): unpainted slices ignored, painted slices kept through
resampling, the painted axis found, patches reach labelled slices, and a real fine-tune in that mode."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from medssl_test_utils import run_cli

from medssl.cli.finetune_cmd import SPARSE_AXES
from medssl.data import sparse
from medssl.data.preprocess import _resample, target_grid
from medssl.data.sampling import Case, PatchBatches
from medssl.data.augment import AugmentConfig
from medssl.events import ListSink
from medssl.io.geometry import array_ijk


def painted_every(shape_kji, every: int, spacing=(1.0, 1.0, 1.0)) -> sitk.Image:
    """A bar of label 1 (2 on its upper half) through all k, painted on every ``every``-th k slice only."""
    arr = np.zeros(shape_kji, np.uint8)
    j0, j1, i0, i1 = shape_kji[1] // 4, 3 * shape_kji[1] // 4, shape_kji[2] // 4, 3 * shape_kji[2] // 4
    arr[:, j0:j1, i0:i1] = 1
    arr[:, shape_kji[1] // 2:j1, i0:i1] = 2
    arr[np.arange(shape_kji[0]) % every != 1] = 0
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    return img


def test_unpainted_slices_are_ignored_and_painted_slices_survive_coarser_spacing():
    label = painted_every((60, 40, 40), 10)
    grid = target_grid(label, "native", [1.0, 1.0, 3.0])
    out, info = sparse.make_sparse(label, "k", grid)
    assert (info.axis, info.painted, info.slices) == (2, 6, 60)
    net = array_ijk(_resample(out, grid, sitk.sitkNearestNeighbor))
    labelled = [k for k in range(net.shape[2]) if (net[:, :, k] != 255).any()]
    with_segment = [k for k in labelled if ((net[:, :, k] != 0) & (net[:, :, k] != 255)).any()]
    assert len(labelled) == len(with_segment) == 6  # one network slice per painted slice, none lost
    assert (net[:, :, labelled] == 0).any()  # unpainted voxels on a painted slice stay background
    # plain nearest resampling (no thickening) loses painted slices: the reason for `_thicken`
    raw = array_ijk(_resample(label, grid, sitk.sitkNearestNeighbor))
    assert sum(bool(raw[:, :, k].any()) for k in range(raw.shape[2])) < 6


def test_auto_axis_finds_the_painted_axis_and_keeps_dense_labels():
    label = painted_every((30, 40, 50), 5)
    assert sparse.detect_axis(sitk.GetArrayFromImage(label)) == 2
    kidneys = np.zeros((30, 40, 50), np.uint8)  # two dense blobs with a gap between them
    kidneys[5:25, 10:30, 5:18] = 1
    kidneys[5:25, 10:30, 32:45] = 1
    assert sparse.detect_axis(kidneys) is None
    dense = sitk.GetImageFromArray(kidneys)
    out, info = sparse.make_sparse(dense, "auto", target_grid(dense, "native", None))
    assert info.axis is None and np.array_equal(sitk.GetArrayFromImage(out), kidneys)
    assert "dense" in info.describe("case")


def test_anatomical_axis_names_follow_the_direction(kmeans_t1):
    image = sitk.ReadImage(str(kmeans_t1))  # a coronal acquisition: its k axis runs anterior-posterior
    d = np.array(image.GetDirection()).reshape(3, 3)
    for name, world in sparse.WORLD_AXIS.items():
        axis = sparse.named_axis(image, name)
        assert np.argmax(np.abs(d[:, axis])) == world, name
    assert sparse.named_axis(image, "j") == 1
    assert SPARSE_AXES == sparse.AXES


def test_sparse_patches_always_hold_labelled_voxels():
    label = np.full((64, 64, 64), 255, np.uint8)
    label[:, :, 40] = 0
    label[20:40, 20:40, 40] = 1
    image = np.random.default_rng(0).normal(size=(1, 64, 64, 64)).astype(np.float32)
    plain = Case(image, label)
    guided = Case(image, label, labelled=sparse.labelled_index(label))
    aug = AugmentConfig(p_rotation=1.0, p_scale=1.0)
    counts = {}
    for name, case in (("plain", plain), ("guided", guided)):
        ds = PatchBatches([case], (16, 16, 16), 4, seed=0, foreground_fraction=0.0, augment=aug)
        counts[name] = [int((b != 255).any()) for i in range(20) for b in ds[i]["label"]]
    assert all(counts["guided"])
    assert sum(counts["plain"]) < len(counts["plain"]) // 2  # without the guard most patches see no label


def _painted_case(sparse_mode: bool) -> Case:
    """40^3 volume of ones; every 5th k slice painted (background with a block of 1), the rest ignore."""
    label = np.full((40, 40, 40), 255, np.uint8)
    label[:, :, ::5] = 0
    label[10:30, 10:30, ::5] = 1
    if not sparse_mode:
        label[label == 255] = 0
    return Case(np.ones((1, 40, 40, 40), np.float32), label,
                labelled=sparse.labelled_index(label) if sparse_mode else None)


def test_sparse_patches_stay_inside_the_volume_like_dense_ones():
    """Labelled voxels at the border of the volume must not pull patches out of it: outside anatomy is missing
    and (before the fix) read as labelled background, a third of a demo patch's "labelled" voxels."""
    ds = PatchBatches([_painted_case(True)], (24, 24, 24), 4, seed=0, foreground_fraction=0.0,
                      augment=AugmentConfig.none())
    for i in range(10):
        batch = ds[i]
        assert float(batch["image"].min()) > 0.999, f"batch {i} reaches outside the volume"  # float32 grid: not exactly 1
        assert all(bool((lab != 255).any()) for lab in batch["label"])


@pytest.mark.parametrize("sparse_mode,outside", [(True, 255), (False, 0)])
def test_outside_the_volume_is_ignored_for_sparse_labels_and_background_for_dense(sparse_mode, outside):
    aug = AugmentConfig.none()
    aug.p_scale, aug.scale = 1.0, (1.4, 1.4)  # a zoomed-out patch reaches past the border
    ds = PatchBatches([_painted_case(sparse_mode)], (32, 32, 32), 2, seed=0, foreground_fraction=0.0, augment=aug)
    batch = ds[0]
    out = batch["image"][:, 0] == 0  # all interpolation neighbours outside the volume
    assert bool(out.any())
    assert set(torch.unique(batch["label"][out]).tolist()) == {outside}
    inside = batch["label"][~out]
    assert {0, 1} <= set(torch.unique(inside).tolist())  # painted labels survive the shift in and out of + 1
    assert set(torch.unique(batch["label"]).tolist()) <= {0, 1, 255}  # nearest: zooming mixes no 255 into ids


def test_finetune_with_sparse_slices_trains_on_painted_slices(tmp_path, kmeans_t1, kmeans_labels, one_thread):
    from medssl.train.finetune import finetune

    full = sitk.ReadImage(str(kmeans_labels))
    arr = sitk.GetArrayFromImage(full)
    arr[np.arange(arr.shape[0]) % 4 != 0] = 0  # paint every 4th k slice
    sparse_file = tmp_path / "sparse.nii.gz"
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(full)
    sitk.WriteImage(out, str(sparse_file))
    sink = ListSink()
    finetune([str(kmeans_t1)], [str(sparse_file)], tmp_path / "m", backbone="resenc:test",
             overrides={"loop": {"steps": 4, "checkpoint_every": 4, "validate_every": 2}, "patch_size": [32, 32, 32],
                        "spacing": [3.0, 3.0, 3.0], "sparse_slices": "auto"}, device="cpu", sink=sink)
    logs = [e["message"] for e in sink.of("log")]
    assert any(f"{len(range(0, arr.shape[0], 4))} of {arr.shape[0]} slices along axis k painted" in m for m in logs), logs
    assert sink.of("validation") and sink.of("done")


@pytest.mark.parametrize("value", ["diagonal"])
def test_cli_rejects_an_unknown_axis_in_one_line(tmp_path, kmeans_t1, kmeans_labels, value):
    proc = run_cli("finetune", "--images", str(kmeans_t1), "--labels", str(kmeans_labels), "--out",
                   str(tmp_path / "m"), "--sparse-slices", value)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "--sparse-slices" in proc.stderr
