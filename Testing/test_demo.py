"""The demo on Colin27 + AAL: region grouping, hemisphere split in world coordinates, outputs."""
from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
from PIL import Image

from medssl.demo.__main__ import run_demo
from medssl.hub.backbone_source import is_architecture
from medssl.demo.brain_regions import REGIONS, coarse_lookup, hemisphere_only, read_aal_names, region_labels
from medssl.io.labels import read_label_map


def test_every_aal_label_has_a_region(colin):
    names = read_aal_names(colin["names"])
    assert len(names) == 116
    table = coarse_lookup(names)
    assert set(table[list(names)]) == set(range(1, len(REGIONS) + 1))
    assert table[37] == 6 and table[1] == 1 and table[91] == 8  # hippocampus, precentral, cerebellum


def test_left_labels_lie_on_the_left_in_world_coordinates(colin):
    names = read_aal_names(colin["names"])
    aal = sitk.ReadImage(str(colin["aal"]))
    left = sitk.GetArrayFromImage(hemisphere_only(aal, "left"))
    raw = sitk.GetArrayFromImage(aal)
    left_values = {v for v, n in names.items() if n.endswith("_L")}
    right_values = {v for v, n in names.items() if n.endswith("_R")}
    kept = raw[left != 255]
    # the AAL midline is not exactly at x = 0 in Colin27: about 2 % of voxels cross it
    assert np.isin(kept[kept > 0], list(left_values | set(range(109, 117)))).mean() > 0.97
    assert np.isin(raw[left == 255][raw[left == 255] > 0], list(right_values | set(range(109, 117)))).mean() > 0.97


def test_demo_runs_end_to_end(tmp_path):
    summary = run_demo(tmp_path, steps=4, backbone="resenc:test", device="cpu", progress="none",
                       spacing=(6.0, 6.0, 6.0), patch=(32, 32, 32), pretrain="mae3d", pretrain_steps=2,
                       amp="off", threads=1, pretrain_patch=(16, 16, 16), seed=3)
    pre = summary["pretraining"]
    assert not pre["reused"] and pre["settings"]["steps"] == 2 and len(pre["settings"]["scans"]) == 4
    assert pre["settings"]["patch"] == [16, 16, 16]
    pretrain_plan = json.loads((tmp_path / "pretrain" / "training" / "plan.json").read_text())
    assert pretrain_plan["patch_size"] == [16, 16, 16]
    training = json.loads((tmp_path / "model" / "metadata.json").read_text())["training"]
    assert training["loop"]["amp"] == "off" and training["loop"]["threads"] == 1 and training["patch_size"] == [32] * 3
    assert training["seed"] == summary["seed"] == 3  # the fine-tuning's; the pretraining keeps 0
    assert set(summary["phases"]) == {"prepare", "pretrain", "finetune", "predict", "write"}
    assert all(p["cpu_s"] >= 0 and p["wall_s"] >= 0 for p in summary["phases"].values())
    assert 0 < summary["cpu_seconds"] and summary["amp"] == "off"
    provenance = json.loads((tmp_path / "model" / "metadata.json").read_text())["provenance"]
    assert provenance["init"] == "medssl-pretrain" and provenance["method"] == "mae3d"
    assert provenance["pretrain_steps"] == 2 and provenance["backbone"] == f"mae3d:{pre['export']}"
    assert set(summary["right_hemisphere_dice"]) == {r[0] for r in REGIONS}
    seg = read_label_map(tmp_path / "segmentation.seg.nrrd")
    assert [s.name for s in seg.segments] == [r[0] for r in REGIONS]
    assert seg.segments[0].terminology["type"] == ["SCT", "83251001", "Frontal lobe"]
    assert seg.image.GetSize() == (181, 217, 181)
    png = Image.open(tmp_path / "overlay.png")
    assert png.size[0] > 3 * 181 and png.mode == "RGB"
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 4
    assert region_labels()[1].color == REGIONS[0][1]


def test_demo_reuses_its_pretraining_and_can_skip_it(tmp_path):
    kwargs = dict(steps=2, backbone="resenc:test", device="cpu", progress="none", spacing=(6.0, 6.0, 6.0),
                  patch=(32, 32, 32), pretrain="volume_fusion", pretrain_steps=2)
    first = run_demo(tmp_path, **kwargs)["pretraining"]
    again = run_demo(tmp_path, **kwargs)["pretraining"]
    assert again["reused"] and again["export"] == first["export"] and again["seconds"] == first["seconds"]
    changed = run_demo(tmp_path, **{**kwargs, "pretrain_steps": 3})["pretraining"]
    assert not changed["reused"] and changed["settings"]["steps"] == 3
    summary = run_demo(tmp_path, **{**kwargs, "pretrain": "none"})
    assert summary["pretraining"] is None
    provenance = json.loads((tmp_path / "model" / "metadata.json").read_text())["provenance"]
    assert provenance["init"] == "random"


def test_demo_pretrains_architectures_only():
    """Released or local weights (``--backbone ID|FILE``) bring their own start: no demo pretraining."""
    assert is_architecture("resenc:tiny") and is_architecture("swin_unetr")
    assert not is_architecture("openmind_resencl_mae") and not is_architecture("/data/voco_b.pt")
