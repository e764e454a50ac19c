"""The Python API as a notebook calls it (found by an audit): one path instead of a list, ``pathlib.Path``s, label
names with text keys, in-memory images, the caller's random streams, ``sw_batch_size``, a malformed plan."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medssl.errors import InputError, PackageError
from medssl.inference.predictor import Predictor
from medssl.plan import Plan
from medssl.train.finetune import finetune

FAST = {"loop": {"steps": 1}, "patch_size": [16, 16, 16], "spacing": [4.0, 4.0, 4.0]}


def test_one_path_paths_and_text_keys_train_as_meant(tmp_path, kmeans_t1, kmeans_labels, monkeypatch):
    """A lone string had been split into characters (each "." pulling in the working folder's scans), a
    ``Path`` had raised TypeError, ``{"1": "wm"}`` (json's keys) had been ignored, and the global RNG reseeded."""
    monkeypatch.chdir(tmp_path)  # a working folder with another scan in it: it must not be picked up
    sitk.WriteImage(sitk.ReadImage(str(kmeans_t1)), str(tmp_path / "other.nii.gz"))
    torch.manual_seed(123)
    random.seed(5)
    expected_torch, expected_python = torch.rand(3), random.random()
    torch.manual_seed(123)
    random.seed(5)
    out = finetune(str(kmeans_t1), Path(kmeans_labels), tmp_path / "m", backbone="resenc:test", preset="quick",
                   overrides=FAST, device="cpu", label_names={"1": "csf", "2": "grey", "3": "white"},
                   channel_names="T1")
    assert torch.equal(torch.rand(3), expected_torch) and random.random() == expected_python  # the caller's streams
    plan = json.loads((out / "plan.json").read_text())
    assert [lab["name"] for lab in plan["labels"]][:5] == ["background", "csf", "grey", "white", "label_4"]
    assert [c["name"] for c in plan["channels"]] == ["T1"]
    assert json.loads((out / "metadata.json").read_text())["provenance"]["train_cases"] == ["KmeansTest_T1UCharRaw"]
    predictor = Predictor.from_package(out, "cpu", "torch")
    alone, listed = predictor.predict(str(kmeans_t1)), predictor.predict([Path(kmeans_t1)])
    assert np.array_equal(sitk.GetArrayFromImage(alone.labels), sitk.GetArrayFromImage(listed.labels))
    with pytest.raises(InputError, match=r"sw_batch_size 0 is out of range"):
        predictor.predict([str(kmeans_t1)], sw_batch_size=0)
    vector = sitk.Compose([sitk.ReadImage(str(kmeans_t1))] * 2)
    with pytest.raises(InputError, match=r"input image channel 1 has 2 components per voxel"):
        predictor.predict(vector)


@pytest.mark.parametrize("names, message", [
    (["a", "b"], r"label names map label values to names, e.g. \{1: 'liver'\}; got a list"),
    ({"one": "a"}, r"label names: 'one' is no label value"),
    ({7: "x"}, r"label names name value\(s\) \[7\] that no label map holds \(they hold 1, 2, 3, 4"),
])
def test_label_names_that_name_nothing_are_refused(tmp_path, kmeans_t1, kmeans_labels, names, message):
    with pytest.raises(InputError, match=message):
        finetune([kmeans_t1], [kmeans_labels], tmp_path / "m", backbone="resenc:test", preset="quick",
                 overrides=FAST, device="cpu", label_names=names)
    assert not (tmp_path / "m").exists()


def test_a_negative_seed_and_in_memory_training_images_are_one_line(tmp_path, kmeans_t1, kmeans_labels):
    with pytest.raises(InputError, match=r"seed -1 is out of range"):
        finetune([kmeans_t1], [kmeans_labels], tmp_path / "m", overrides={**FAST, "seed": -1}, device="cpu")
    with pytest.raises(InputError, match=r"fine-tuning reads files; write the image first"):
        finetune([sitk.ReadImage(str(kmeans_t1))], [kmeans_labels], tmp_path / "m", device="cpu")
    assert not (tmp_path / "m").exists() and os.path.isfile(kmeans_t1)


def test_a_file_given_as_the_model_package_is_named_so(kmeans_t1):
    with pytest.raises(PackageError, match=r"is a file; a model package is the folder"):
        Predictor.from_package(kmeans_t1, "cpu", "torch")


def test_a_plan_field_of_the_wrong_type_is_a_package_error(tiny_package):
    data = json.loads((tiny_package / "plan.json").read_text())
    data["sliding_window"]["overlap"] = "x"
    with pytest.raises(PackageError, match="malformed plan"):
        Plan.from_dict(data)
