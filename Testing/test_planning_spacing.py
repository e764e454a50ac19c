"""Spacing is always planned: a model fine-tuned on one scan segments a finer copy of it as it segments the scan.

nnU-Net plans the training data's spacing even for a single case; before this rule a one-case plan said
"native" and a 4 mm model saw a 1 mm scan at 4x magnification (agreement ~0.55 on this test instead of > 0.95).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from medssl_test_utils import MRICRON, blob_labels, require

from medssl.data.preprocess import preprocess
from medssl.hub.package import sha256_file
from medssl.inference.predictor import Predictor
from medssl.plan import Plan
from medssl.train.finetune import finetune

FAST = {"loop": {"steps": 60, "checkpoint_every": 100, "validate_every": 1000, "lr": 0.01},
        "patch_size": [32, 32, 32]}


def resampled(image: sitk.Image, spacing, interpolator=sitk.sitkLinear) -> sitk.Image:
    """``image`` on a grid of ``spacing`` with the same physical extent (outer corner of voxel 0 kept)."""
    size = [int(round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    ref = sitk.Image(size, sitk.sitkUInt8)
    ref.SetSpacing(spacing)
    ref.SetDirection(image.GetDirection())
    shift = np.array(image.GetDirection()).reshape(3, 3) @ ((np.array(spacing) - np.array(image.GetSpacing())) / 2)
    ref.SetOrigin((np.array(image.GetOrigin()) + shift).tolist())
    return sitk.Resample(image, ref, sitk.Transform(), interpolator, 0.0)


@pytest.fixture(scope="module")
def colin_4mm(tmp_path_factory) -> Path:
    """Colin27 at 4 mm (45 x 54 x 45), labels = three classes of the smoothed scan (spatial context), and a copy
    of the scan at 1 mm (a quarter of its voxel size)."""
    folder = tmp_path_factory.mktemp("colin_4mm")
    colin = sitk.ReadImage(str(require(MRICRON / "ch2.nii.gz")), sitk.sitkFloat32)
    scan = resampled(colin, (4.0, 4.0, 4.0))
    sitk.WriteImage(scan, str(folder / "scan.nii.gz"))
    sitk.WriteImage(blob_labels(sitk.SmoothingRecursiveGaussian(scan, 6.0), 3), str(folder / "labels.nii.gz"))
    sitk.WriteImage(resampled(scan, (1.0, 1.0, 1.0)), str(folder / "fine.nii.gz"))
    return folder


def test_one_case_model_segments_a_four_times_finer_copy_like_the_scan(tmp_path, one_thread, colin_4mm):
    """One labelled case, default settings: the plan holds the data's 4 mm; the 1 mm copy is resampled to it
    before the network, and its labels come back on its own grid."""
    out = finetune([str(colin_4mm / "scan.nii.gz")], [str(colin_4mm / "labels.nii.gz")], tmp_path / "model",
                   backbone="resenc:test", overrides=FAST, device="cpu")
    plan = Plan.load(out / "plan.json")
    assert plan.spacing == (4.0, 4.0, 4.0) and plan.provenance["fields"]["spacing"] == "data"
    assert json.loads((out / "metadata.json").read_text())["plan_fields"]["spacing"] == "data"

    predictor = Predictor.from_package(out, device="cpu")
    on_scan = predictor.predict([str(colin_4mm / "scan.nii.gz")]).labels
    on_fine = predictor.predict([str(colin_4mm / "fine.nii.gz")]).labels
    assert on_fine.GetSize() == (180, 216, 180)  # labels on the fine copy's own grid
    back = sitk.Resample(on_fine, on_scan, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    a, b = sitk.GetArrayFromImage(on_scan), sitk.GetArrayFromImage(back)
    assert np.bincount(a.ravel(), minlength=4).min() > 0.05 * a.size  # every class segmented: a real test
    assert (a == b).mean() >= 0.95, (a == b).mean()


def test_native_only_when_asked_and_packages_written_before_keep_it_with_a_note(tmp_path, one_thread, colin_4mm,
                                                                               capsys):
    """``spacing: native`` is recorded as the user's choice; a package whose plan says ``spacing: null``
    without per-field provenance (written before this rule) predicts at each scan's spacing, with one note."""
    out = finetune([str(colin_4mm / "scan.nii.gz")], [str(colin_4mm / "labels.nii.gz")], tmp_path / "m",
                   backbone="resenc:test", device="cpu",
                   overrides={**FAST, "loop": {"steps": 2, "validate_every": 1000}, "spacing": "native"})
    plan = json.loads((out / "plan.json").read_text())
    assert plan["spacing"] is None and plan["provenance"]["fields"]["spacing"] == "user"
    Predictor.from_package(out, device="cpu")
    assert "note:" not in capsys.readouterr().err  # native by choice: no note

    plan["provenance"] = {"created_by": "medssl finetune"}  # what an older medssl wrote
    (out / "plan.json").write_text(json.dumps(plan))
    meta = json.loads((out / "metadata.json").read_text())
    meta["plan_sha256"] = sha256_file(out / "plan.json")
    (out / "metadata.json").write_text(json.dumps(meta))
    predictor = Predictor.from_package(out, device="cpu")
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "own spacing, as before" in notes[0]
    fine = sitk.ReadImage(str(colin_4mm / "fine.nii.gz"))
    assert preprocess([fine], predictor.plan).record.network_grid.spacing == (1.0, 1.0, 1.0)  # native, as before
