"""README options with no other test: multi-channel cases ``--images a,b``, the bootstrap loop ``--backbone
PACKAGE``, ``--overwrite`` and ``predict --sw-batch-size``. The checks look at what the files and the network
really hold (input convolution width, every tensor of the package carried over, window batches the network
saw), not at what medssl says about them. In-process ``medssl.cli.main`` (the subprocess is tested elsewhere).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from medssl_test_utils import blob_labels, cli_in_process, oblique_image
from safetensors.torch import load_file

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ("--backbone", "resenc:test", "--patch-size", "16", "16", "16", "--device", "cpu")


def events(stdout: str) -> list:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("case")
    t1 = oblique_image(size=(28, 26, 22), spacing=(2.0, 2.0, 2.5), seed=5)
    t2 = sitk.Cast(300 - t1, sitk.sitkFloat32)  # a second contrast on the same grid
    files = {"t1": folder / "t1.nii.gz", "t2": folder / "t2.nii.gz", "lab": folder / "lab.nii.gz"}
    sitk.WriteImage(t1, str(files["t1"]))
    sitk.WriteImage(t2, str(files["t2"]))
    sitk.WriteImage(blob_labels(t1, 2), str(files["lab"]))
    return {k: str(v) for k, v in files.items()}


@pytest.fixture(scope="module")
def two_channel_model(case, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "mc"
    done = cli_in_process("finetune", "--images", f"{case['t1']},{case['t2']}", "--labels", case["lab"], "--out", str(out),
                          *FAST, "--steps", "3", "--progress", "none")
    assert done.returncode == 0, done.stderr
    return out


def first_conv_in_channels(package: Path) -> int:
    weights = load_file(str(package / "weights.safetensors"))
    stem = sorted(k for k, v in weights.items() if v.ndim == 5 and ".stem." in f".{k}")  # ResEnc's input convolution
    return int(weights[stem[0]].shape[1])


def test_comma_joined_channels_make_a_two_channel_model(case, two_channel_model, tmp_path):
    plan = json.loads((two_channel_model / "plan.json").read_text())
    assert len(plan["channels"]) == len(plan["normalization"]) == 2
    assert first_conv_in_channels(two_channel_model) == 2  # the network really takes two channels
    out = tmp_path / "seg.nii.gz"
    done = cli_in_process("predict", "--model", str(two_channel_model), "--input", case["t1"], case["t2"], "--output",
                          str(out), "--device", "cpu", "--progress", "none")
    assert done.returncode == 0, done.stderr
    assert sitk.ReadImage(str(out)).GetSize() == sitk.ReadImage(case["t1"]).GetSize()
    one = cli_in_process("predict", "--model", str(two_channel_model), "--input", case["t1"], "--output",
                         str(tmp_path / "one.nii.gz"), "--device", "cpu")
    assert one.returncode == 2 and re.match(r"error: the model expects 2 channel\(s\) .* but 1 input image", one.stderr)


def test_a_multichannel_folder_skips_an_incomplete_case_and_segments_the_rest(case, two_channel_model, tmp_path):
    """Found by a user audit: one case without its second channel had stopped the whole folder."""
    import shutil

    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(case["t1"], scans / "a_0000.nii.gz")
    shutil.copy(case["t2"], scans / "a_0001.nii.gz")
    shutil.copy(case["t1"], scans / "b_0000.nii.gz")  # b has no second channel
    done = cli_in_process("predict", "--model", str(two_channel_model), "--input-dir", str(scans), "--output-dir",
                          str(tmp_path / "segs"), "--device", "cpu", "--progress", "none")
    assert done.returncode == 2 and "1 of 2 case(s) failed (b; first: b: case b does not have files _0000 .. _0001" \
        in done.stderr
    assert sorted(p.name for p in (tmp_path / "segs").iterdir()) == ["a.seg.nrrd"]


def test_bootstrap_from_a_package_starts_from_its_weights(case, two_channel_model, tmp_path):
    """``--backbone PACKAGE`` with ``lr: 0``: the new package's weights are the old package's, tensor by tensor."""
    config = tmp_path / "frozen.yaml"
    config.write_text("loop:\n  lr: 0.0\n  warmup_steps: 0\n")
    out = tmp_path / "v2"
    done = cli_in_process("finetune", "--images", f"{case['t1']},{case['t2']}", "--labels", case["lab"], "--out", str(out),
                          "--backbone", str(two_channel_model), "--patch-size", "16", "16", "16", "--device", "cpu",
                          "--steps", "2", "--config", str(config), "--progress", "json")
    assert done.returncode == 0, done.stderr
    old, new = load_file(str(two_channel_model / "weights.safetensors")), load_file(str(out / "weights.safetensors"))
    assert old.keys() == new.keys()
    floating = [k for k in old if old[k].is_floating_point() and "running" not in k]
    assert floating and all(bool((old[k] == new[k]).all()) for k in floating)
    meta = json.loads((out / "metadata.json").read_text())
    assert str(two_channel_model) in json.dumps(meta["provenance"])
    assert meta["plan_fields"]["architecture"] == "like_pretrained"  # medssl info --plan: the package's own network


def test_overwrite_replaces_a_package_and_nothing_else_does(case, tmp_path):
    out = tmp_path / "m"
    args = ["finetune", "--images", case["t1"], "--labels", case["lab"], "--out", str(out), *FAST, "--progress", "none"]
    assert cli_in_process(*args, "--steps", "1").returncode == 0
    first = (out / "weights.safetensors").read_bytes()
    again = cli_in_process(*args, "--steps", "2")
    assert again.returncode == 2 and "already holds a model or a run" in again.stderr
    assert (out / "weights.safetensors").read_bytes() == first
    assert cli_in_process(*args, "--steps", "2", "--overwrite").returncode == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["provenance"]["steps"] == 2 and (out / "weights.safetensors").read_bytes() != first
    assert meta["name"] == "m"  # the model's name in Slicer's nodes and messages: its folder's, not "medssl model"
    assert meta["plan_fields"]["architecture"] == "user"  # named by --backbone, no weights
    assert not [p for p in tmp_path.rglob(".*")], list(tmp_path.rglob(".*"))  # no half-replaced folder left


@pytest.mark.parametrize("batch", [1, 3])
def test_sw_batch_size_sets_the_windows_per_forward_pass(case, two_channel_model, tmp_path, batch):
    out = tmp_path / f"seg{batch}.nii.gz"
    done = cli_in_process("predict", "--model", str(two_channel_model), "--input", case["t1"], case["t2"], "--output",
                          str(out), "--device", "cpu", "--sw-batch-size", str(batch), "--progress", "json")
    assert done.returncode == 0, done.stderr
    done_counts = [e["done"] for e in events(done.stdout) if e["event"] == "progress" and e["stage"] == "sliding_window"]
    steps = np.diff(done_counts)
    assert done_counts[-1] > 3 and steps.max() == batch and (steps[:-1] == batch).all()  # the last may be partial
    reference = tmp_path / "seg_default.nii.gz"
    assert cli_in_process("predict", "--model", str(two_channel_model), "--input", case["t1"], case["t2"], "--output",
                          str(reference), "--device", "cpu", "--progress", "none").returncode == 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(reference))))


def test_probabilities_are_a_distribution_whose_arg_max_is_the_label_map(case, two_channel_model, tmp_path):
    seg, probs = tmp_path / "seg.nii.gz", tmp_path / "probs.nii.gz"
    done = cli_in_process("predict", "--model", str(two_channel_model), "--input", case["t1"], case["t2"], "--output",
                          str(seg), "--probabilities", str(probs), "--device", "cpu", "--progress", "none")
    assert done.returncode == 0, done.stderr
    p = sitk.GetArrayFromImage(sitk.ReadImage(str(probs)))  # (k, j, i, classes)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(seg)))
    values = [lab["value"] for lab in json.loads((two_channel_model / "plan.json").read_text())["labels"]]
    assert p.shape == (*labels.shape, len(values))
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-3)
    assert (np.asarray(values)[p.argmax(-1)] == labels).mean() > 0.999  # ties at resampled borders aside
