"""``medssl rank``: on real scans, a volume the model was trained on ranks below held-out volumes of another
modality or resolution; the scores follow their definition; a volume that cannot be read is listed, not fatal."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from medssl_test_utils import MRICRON, require, run_cli

from medssl.inference.ranking import UNCERTAIN, score_probabilities


@pytest.fixture(scope="module")
def brain_model(tmp_path_factory, kmeans_t1) -> Path:
    """A brain-mask model fine-tuned on the ITK KmeansTest T1 (mask: its skull-stripped version > 0), in float32 on
    every CPU (``amp: off``; bf16 autocast would train another model where the CPU has it). With 120 steps the
    trained T1 scored 0.28-0.51 below the macaque T1 over seeds 0-2 (80 steps: 0.08-0.29; AVX2 CPU)."""
    from medssl.train.finetune import finetune

    folder = tmp_path_factory.mktemp("rank")
    strip = sitk.ReadImage(str(require(kmeans_t1.with_name("KmeansTest_T1RawSkullStrip.nii.gz"))))
    sitk.WriteImage(sitk.Cast(strip > 0, sitk.sitkUInt8), str(folder / "brain.nii.gz"))
    return finetune([str(kmeans_t1)], [str(folder / "brain.nii.gz")], folder / "model", backbone="resenc:test",
                    overrides={"loop": {"steps": 120, "checkpoint_every": 200, "validate_every": 0, "lr": 0.01,
                                        "amp": "off"},
                               "patch_size": [32, 32, 32], "spacing": [4.0, 4.0, 4.0]}, device="cpu")


def test_trained_volume_ranks_below_other_modality_and_resolution(tmp_path, brain_model, kmeans_t1):
    nib = pytest.importorskip("nibabel")
    bold = sitk.ReadImage(str(require(Path(nib.__file__).parent / "tests" / "data" / "functional.nii")))
    sitk.WriteImage(bold[:, :, :, 0], str(tmp_path / "bold.nii.gz"))  # EPI BOLD, 4 x 4 x 8 mm
    macaque = require(MRICRON / "inia19-t1-brain.nii.gz")  # rhesus macaque T1, 0.5 mm, skull-stripped
    (tmp_path / "broken.nii.gz").write_bytes(b"not an image")
    proc = run_cli("rank", "--model", str(brain_model), "--images", str(kmeans_t1), str(tmp_path / "bold.nii.gz"),
                   str(macaque), str(tmp_path / "broken.nii.gz"), "--json", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    ranking = json.loads(proc.stdout)["ranking"]
    order = [r["name"] for r in ranking]
    assert order[-1] == "broken" and ranking[-1]["error"] and ranking[-1]["score"] is None
    scores = {r["name"]: r["score"] for r in ranking[:-1]}
    assert scores["KmeansTest_T1UCharRaw"] < min(scores["bold"], scores["inia19-t1-brain"]) - 0.1, ranking
    assert order.index("KmeansTest_T1UCharRaw") == 2
    alone = run_cli("rank", "--model", str(brain_model), "--images", str(tmp_path / "broken.nii.gz"), "--device", "cpu")
    last = alone.stderr.strip().splitlines()[-1]  # after the case's own log line
    assert alone.returncode == 2 and last.startswith("error: none of the 1 case(s) could be ranked (broken: ")
    trained = ranking[2]
    assert 0 < trained["mean_entropy"] < 1 and 0 < trained["foreground_fraction"] < 1
    assert trained["score"] == pytest.approx((trained["mean_entropy"] + trained["uncertain_fraction"]) / 2)


def test_score_definition():
    # voxels: foreground certain, foreground uncertain, background uncertain, background certain
    p = np.array([[0.02, 0.45, 0.55, 0.99], [0.98, 0.55, 0.45, 0.01]])
    h = -(p * np.log(p)).sum(0) / np.log(2)
    s = score_probabilities(p)
    assert s["mean_entropy"] == pytest.approx(h[[0, 1]].mean(), rel=1e-4)
    assert s["uncertain_fraction"] == pytest.approx(2 / 3)  # 2 uncertain of {2 foreground} + {1 uncertain bg}
    assert s["foreground_fraction"] == 0.5 and h[1] > UNCERTAIN and h[0] < UNCERTAIN
    none = score_probabilities(np.stack([np.ones((3, 3)), np.zeros((3, 3))]))
    assert none["score"] == 1.0 and none["mean_entropy"] is None
