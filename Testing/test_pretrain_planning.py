"""Pretraining data: fingerprint of real scans, plan decisions, the preprocessed cache keyed by the plan hash,
and the export that `medssl finetune --backbone` accepts."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from medssl_test_utils import ITK_DATA, MRICRON, require

from medssl.errors import CheckpointError, InputError, PackageError
from medssl.hub.backbone_source import resolve_backbone
from medssl.hub.ssl_export import is_ssl_export, save_export
from medssl.models import build_from_plan, build_network, resolve_arch
from medssl.plan import NormSpec
from medssl.data.volumes import foreground_box
from medssl.planning.cache import cached_volumes
from medssl.planning.fingerprint import fingerprint_dataset
from medssl.planning.planner import decide_spacing, plan_pretraining

MR = {"MR": {"scheme": "zscore", "params": {"per_image": True}}}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def two_scans() -> list:
    return [str(require(ITK_DATA / "KmeansTest_T1UCharRaw.nii.gz")), str(require(MRICRON / "ch2.nii.gz"))]


@pytest.fixture(scope="module")
def fingerprint(two_scans):
    return fingerprint_dataset(two_scans)


def test_fingerprint_measures_real_scans(fingerprint):
    itk, colin = fingerprint.volumes
    assert itk.size == [128, 62, 128] and itk.spacing == pytest.approx([2.0, 3.0, 2.0])  # coronal -> RAS
    assert colin.size == [181, 217, 181] and colin.modality == "MR" and fingerprint.modality == "MR"
    assert 0 <= itk.percentiles["0.5"] <= itk.percentiles["50"] <= itk.percentiles["99.5"] <= 255
    summary = fingerprint.summary()
    assert summary["volumes"] == 2 and not summary["same_spacing"] and summary["hash"] == fingerprint.hash()
    assert json.loads(json.dumps(fingerprint.to_dict()))["summary"]["median_spacing"] == pytest.approx([1.5, 2.0, 1.5])


def test_plan_decisions(fingerprint):
    arch = resolve_arch("resenc", "unet", {"preset": "test"})
    assert decide_spacing(fingerprint, "auto") == pytest.approx((1.5, 2.0, 1.5))
    assert decide_spacing(fingerprint, "native") is None and decide_spacing(fingerprint, 2) == (2.0, 2.0, 2.0)
    with pytest.raises(InputError, match="spacing"):
        decide_spacing(fingerprint, "fine")
    plan = plan_pretraining(fingerprint, arch, [3, 3, 3], {"MR": {"scheme": "percentile", "params": {}}}, (20, 30, 40),
                            "mae3d")
    assert plan.labels == [] and plan.patch_size == (24, 32, 40)  # rounded up to the size divisor 8
    assert plan.normalization[0].scheme == "percentile" and "lower" in plan.normalization[0].params  # frozen stats
    assert plan.provenance["fingerprint"] == fingerprint.hash()
    with pytest.raises(InputError, match="no scheme for MR"):
        plan_pretraining(fingerprint, arch, 3, {"CT": {"scheme": "ct_window"}}, (16, 16, 16), "mae3d")


def test_cache_is_keyed_by_plan_and_reused(fingerprint, two_scans, tmp_path):
    arch = resolve_arch("resenc", "unet", {"preset": "test"})
    plan = plan_pretraining(fingerprint, arch, 4.0, MR, (16, 16, 16), "mae3d")
    first = cached_volumes(two_scans[:1], plan, tmp_path)
    folder = tmp_path / plan.hash()
    npy = list(folder.glob("*.npy"))
    assert len(npy) == 1 and isinstance(first.arrays[0], np.memmap)
    assert first.arrays[0].shape == (64, 46, 64) and abs(float(np.mean(first.arrays[0]))) < 1e-3  # z-scored
    stamp = npy[0].stat().st_mtime_ns
    again = cached_volumes(two_scans[:1], plan, tmp_path, build=False)  # read only: nothing recomputed
    assert npy[0].stat().st_mtime_ns == stamp and np.array_equal(again.arrays[0], first.arrays[0])
    other = plan_pretraining(fingerprint, arch, 5.0, MR, (16, 16, 16), "mae3d")
    assert other.hash() != plan.hash()
    with pytest.raises(FileNotFoundError):
        cached_volumes(two_scans[:1], other, tmp_path, build=False)


def test_foreground_box_excludes_air():
    vol = np.zeros((30, 30, 30), np.float32)
    vol[5:20, 8:12, 10:25] = 100.0
    assert foreground_box(vol, margin=1) == ((4, 7, 9), (21, 13, 26))
    assert foreground_box(np.ones((4, 5, 6), np.float32)) == ((0, 0, 0), (4, 5, 6))


def _export(tmp_path: Path, fingerprint, backbone: str, decoder: str, with_decoder: bool) -> Path:
    arch = resolve_arch(backbone, decoder, {"preset": "test"})
    plan = plan_pretraining(fingerprint, arch, 4.0, MR, (32, 32, 32), "test")
    torch.manual_seed(0)
    net = build_network(arch, 1, 5)
    state = {k: v for k, v in net.state_dict().items() if with_decoder or k.startswith("encoder.")}
    return save_export(tmp_path / "run" / "export", plan, state, "volume_fusion", 7, fingerprint.summary())


def test_export_resolves_for_finetuning(fingerprint, tmp_path):
    folder = _export(tmp_path, fingerprint, "resenc", "unet", with_decoder=True)
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["format"] == "medssl-backbone" and meta["method"] == "volume_fusion" and meta["steps"] == 7
    for spec in (folder / "backbone.safetensors", folder, folder.parent):
        assert is_ssl_export(str(spec))
    source = resolve_backbone(str(folder / "backbone.safetensors"))
    assert source.arch.backbone == "resenc" and source.plan_defaults.spacing == (4.0, 4.0, 4.0)
    assert source.plan_defaults.normalization == (NormSpec("zscore", {"per_image": True}),)
    plan = plan_for(source, channels=2, classes=4)
    net = build_from_plan(plan)
    report = source.init_weights(net)  # two input channels: the stem is repeated (nnssl's rule)
    assert "encoder.stem.convs.0.conv.weight" in report.loaded
    assert "decoder.seg_layers.0.weight" in report.shape_mismatch and report.unexpected == []
    assert any(k.startswith("decoder.stages") for k in report.loaded)


def plan_for(source, channels: int, classes: int):
    from medssl.plan import ChannelSpec, NormSpec, Plan, default_labels

    return Plan([ChannelSpec(f"c{i}") for i in range(channels)], [NormSpec("none")] * channels, (32, 32, 32),
                default_labels([f"l{i}" for i in range(classes - 1)]), source.arch)


def test_export_refuses_a_mismatched_or_tampered_backbone(fingerprint, tmp_path):
    folder = _export(tmp_path, fingerprint, "vit3d", "unetr", with_decoder=False)
    source = resolve_backbone(str(folder))
    wider = resolve_arch("vit3d", "unetr", {"preset": "test", "embed_dim": 48})
    other = plan_for(source, 1, 3).replace(architecture=wider)
    with pytest.raises(CheckpointError, match="encoder tensor"):
        source.init_weights(build_from_plan(other))
    report = source.init_weights(build_from_plan(plan_for(source, 1, 3)))
    assert report.loaded and all(k.startswith("encoder.") for k in report.loaded)
    with open(folder / "backbone.safetensors", "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(PackageError, match="sha256"):
        resolve_backbone(str(folder))


def test_mixed_modalities_and_scans_smaller_than_the_crop_are_said(tmp_path):
    """Found by an audit: an MR scan among CT scans was windowed as CT without a word, and a 6 x 6 x 4 scan was
    trained on 48^3 crops of padding."""
    import numpy as np
    import SimpleITK as sitk

    from medssl.events import ListSink
    from medssl.models import resolve_arch
    from medssl.planning.fingerprint import fingerprint_dataset
    from medssl.planning.planner import plan_pretraining
    from medssl.train.pretrain import _say_what_one_normalisation_means

    rng = np.random.default_rng(0)
    files = []
    for name, values, size in (("ct1", rng.normal(0, 300, (40, 40, 40)) - 500, 40),
                               ("ct2", rng.normal(0, 300, (40, 40, 40)) - 500, 40),
                               ("mr", rng.uniform(0, 250, (6, 6, 4)), 6)):
        image = sitk.GetImageFromArray(values.astype(np.float32 if name == "mr" else np.int16))
        image.SetSpacing((2.0, 2.0, 2.0))
        sitk.WriteImage(image, str(tmp_path / f"{name}.nii.gz"))
        files.append(str(tmp_path / f"{name}.nii.gz"))
    fp = fingerprint_dataset(files, "RAS", 0)
    arch = resolve_arch("resenc", "unet", {"preset": "test"})
    plan = plan_pretraining(fp, arch, 2.0, {"CT": {"scheme": "ct_window"}, "MR": {"scheme": "zscore"}}, [32, 32, 32],
                            "mae3d")
    sink = ListSink()
    _say_what_one_normalisation_means(fp, plan, sink)
    messages = [e["message"] for e in sink.of("log")]
    assert messages[0].startswith("the scans look like several modalities (2 CT, 1 MR); all are normalised as CT")
    assert len(messages) == 2 and messages[1].startswith(f"{files[2]}: ")  # the small one only
    assert messages[1].endswith("voxels at the plan's spacing, under half the 32 x 32 x 32 crop: its crops are mostly "
                                "padding")
