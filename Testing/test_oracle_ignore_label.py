"""Value 255 means "not labelled" (README): the fine-tuning loss equals one computed here by hand on the
labelled voxels only (torch's own ``cross_entropy(ignore_index=255)`` and a numpy soft Dice over the batch,
nnU-Net's ``batch_dice``), ignored voxels get no gradient, and 255 never becomes a class of the model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from medssl_test_utils import blob_labels, oblique_image

from medssl import finetune
from medssl.train.losses import masked_dice_ce


def hand_loss(logits: torch.Tensor, target: torch.Tensor) -> float:
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=255).item()
    p = torch.softmax(logits, 1).numpy()
    t = target.numpy()
    valid = t != 255
    dice = []
    for k in range(1, logits.shape[1]):  # foreground classes, summed over the whole batch
        pk, gk = p[:, k][valid], (t[valid] == k).astype(np.float64)
        dice.append((2 * (pk * gk).sum() + 1e-5) / (pk.sum() + gk.sum() + 1e-5))
    return ce + 1 - float(np.mean(dice))


def test_loss_uses_labelled_voxels_only():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 5, 4, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (2, 6, 5, 4), generator=g)
    target[:, :3] = 255  # half of every volume is not labelled
    out = masked_dice_ce(logits, target)
    assert out["loss"].item() == pytest.approx(hand_loss(logits.detach(), target), rel=1e-5)
    out["loss"].backward()
    assert logits.grad[:, :, :3].abs().max() == 0 and logits.grad[:, :, 3:].abs().max() > 0
    changed = logits.detach().clone()
    changed[:, :, :3] = 100 * torch.randn(2, 3, 3, 5, 4, generator=g)  # anything at unlabelled voxels
    assert masked_dice_ce(changed, target)["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-6)


def test_255_is_not_a_class_of_the_model(tmp_path):
    image = oblique_image(size=(24, 22, 18), spacing=(2.0, 2.0, 2.5), seed=6)
    arr = sitk.GetArrayFromImage(blob_labels(image, 2))
    arr[:, :, : arr.shape[2] // 2] = 255  # the left half carries no labels
    lab = sitk.GetImageFromArray(arr)
    lab.CopyInformation(image)
    sitk.WriteImage(image, str(tmp_path / "img.nii.gz"))
    sitk.WriteImage(lab, str(tmp_path / "lab.nii.gz"))
    pkg = finetune([str(tmp_path / "img.nii.gz")], [str(tmp_path / "lab.nii.gz")], tmp_path / "m",
                   backbone="resenc:test", overrides={"loop": {"steps": 1}, "patch_size": [16, 16, 16]}, device="cpu")
    plan = json.loads((pkg / "plan.json").read_text())
    assert [lab["value"] for lab in plan["labels"]] == [0, 1, 2] and plan["ignore_label"] == 255
