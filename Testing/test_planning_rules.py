"""One set of planning rules for fine-tuning and pretraining plans, and the rule recorded for each field."""
from __future__ import annotations

import json

import pytest
import SimpleITK as sitk

from medssl.cli.main import main
from medssl.errors import InputError
from medssl.io.labels import read_label_map
from medssl.models import resolve_arch
from medssl.plan import NATIVE, NormSpec, PlanDefaults, default_labels
from medssl.planning.finetune_plan import Choices, make_finetune_plan
from medssl.planning.rules import plan_spacing, round_patch, size_divisor

ARCH = resolve_arch("resenc", "unet", {"preset": "test"})
FIELDS = {"spacing", "orientation", "normalization", "patch_size", "channels", "labels"}


def test_spacing_rule():
    one_case = [(2.0, 3.0, 2.0)]
    assert plan_spacing(None, None, one_case) == ((2.0, 3.0, 2.0), "data")  # one case: its spacing, not native
    assert plan_spacing("auto", None, [(1, 1, 1), (1, 3, 2), (3, 3, 3)]) == ((1.0, 3.0, 2.0), "data")  # median
    assert plan_spacing(None, (1.5, 1.5, 1.5), one_case) == ((1.5, 1.5, 1.5), "like_pretrained")
    assert plan_spacing(2, (1.5, 1.5, 1.5), one_case) == ((2.0, 2.0, 2.0), "user")
    assert plan_spacing(NATIVE, (1.5, 1.5, 1.5), one_case) == (None, "user")
    with pytest.raises(InputError, match="spacing 'fine' must be"):
        plan_spacing("fine", None, one_case)


def test_plan_defaults_are_typed_and_frozen():
    absent, native = PlanDefaults.from_json({}, "a"), PlanDefaults.from_json({"spacing": None}, "b")
    assert absent.spacing is None and native.spacing == NATIVE and native.spacing_triple is None
    d = PlanDefaults.from_json({"spacing": [1, 1, 2], "patch_size": [96, 96, 64], "orientation": "RAS",
                                "normalization": [{"scheme": "zscore", "params": {"per_image": True}}]}, "c")
    assert d.spacing == (1.0, 1.0, 2.0) and d.patch_size == (96, 96, 64)
    assert d.normalization == (NormSpec("zscore", {"per_image": True}),)
    with pytest.raises(AttributeError):
        d.spacing = None  # type: ignore[misc]


@pytest.fixture(scope="module")
def one_case(kmeans_t1, kmeans_labels):
    return [([sitk.ReadImage(str(kmeans_t1))], read_label_map(kmeans_labels))]


def test_finetune_plan_records_the_rule_of_every_field(one_case):
    labels = default_labels(["a", "b"])
    plan = make_finetune_plan(one_case, labels, "data", ARCH, PlanDefaults(spacing=NATIVE, origin="3dino-like"),
                              Choices())
    assert plan.spacing == (2.0, 3.0, 2.0)  # native backbone, one case: the case's own spacing (RAS order)
    assert plan.provenance["fields"] == {"spacing": "data", "orientation": "default", "normalization": "data",
                                         "patch_size": "data", "channels": "data", "labels": "data",
                                         "architecture": "user"}
    assert plan.provenance["defaults_from"] == "3dino-like"
    inherited = PlanDefaults(spacing=(4.0, 4.0, 4.0), orientation="LPS", patch_size=(20, 20, 20),
                             normalization=(NormSpec("percentile", {}),))
    plan = make_finetune_plan(one_case, labels, "data", ARCH, inherited, Choices(normalization="zscore"),
                              arch_rule="like_pretrained")
    assert plan.spacing == (4.0, 4.0, 4.0) and plan.orientation == "LPS" and plan.patch_size == (24, 24, 24)
    assert plan.normalization[0].scheme == "zscore" and "mean" in plan.normalization[0].params  # fitted
    fields = plan.provenance["fields"]
    assert fields["spacing"] == fields["orientation"] == fields["patch_size"] == "like_pretrained"
    assert fields["normalization"] == "user" and fields["architecture"] == "like_pretrained"


def test_one_divisor_and_one_rounding_for_both_plans():
    vit_l = resolve_arch("vit3d", "unetr", {"preset": "L"})
    assert size_divisor(vit_l) == 16  # declared by the family: ViT-L is never built
    assert size_divisor(ARCH) == 8 and round_patch((4, 20, 33), 8) == (16, 24, 40)  # at least twice the divisor


def test_info_shows_each_field_with_its_rule(tmp_path, one_case, capsys):
    plan = make_finetune_plan(one_case, default_labels(["a"]), "user", ARCH, PlanDefaults(), Choices(spacing=3))
    (tmp_path / "plan.json").write_text(plan.to_json())
    assert main(["info", "--plan", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["fields"]
    assert set(rows) == FIELDS | {"architecture"}
    assert rows["spacing"] == {"value": [3.0, 3.0, 3.0], "rule": "user"} and rows["labels"]["rule"] == "user"
    assert main(["info", "--plan", str(tmp_path)]) == 0
    assert "[user]" in capsys.readouterr().out.splitlines()[0]  # spacing ... [user]


def test_frozen_plan_window_settings_and_token_families(one_case):
    from dataclasses import FrozenInstanceError

    from medssl.inference.sliding_window import WindowSettings
    from medssl.models import BACKBONES

    plan = make_finetune_plan(one_case, default_labels(["a"]), "data", ARCH, PlanDefaults(), Choices(spacing=3))
    with pytest.raises(FrozenInstanceError):
        plan.spacing = None  # type: ignore[misc]
    assert plan.replace(spacing=None).spacing is None and plan.spacing == (3.0, 3.0, 3.0)
    sw = plan.sliding_window
    assert WindowSettings.from_plan(plan) == WindowSettings(plan.patch_size, sw.overlap, sw.mode, sw.sigma_scale,
                                                            sw.sw_batch_size, ())
    tta = WindowSettings.from_plan(plan, overlap=0.25, tta=True, sw_batch_size=7)
    assert (tta.overlap, tta.sw_batch_size, tta.mirror_axes) == (0.25, 7, tuple(sw.mirror_axes))
    assert [n for n in BACKBONES.names() if BACKBONES.get(n).tokens] == ["vit3d"]


def test_one_run_folder_rule_for_finetuning_and_pretraining(tmp_path):
    from medssl.train.run_folder import RunFolder

    for folder in (RunFolder.finetune(tmp_path / "ft"), RunFolder.pretrain(tmp_path / "pt")):
        with pytest.raises(InputError, match="holds no interrupted (pretraining )?run"):
            folder.prepare(resume=True, overwrite=False)
        folder.prepare(resume=False, overwrite=False)
        folder.run_dir.mkdir(parents=True)
        folder.plan.write_text("{}")
        folder.write_inputs(["a.nii.gz"])
        folder.prepare(resume=False, overwrite=False)  # no training state saved: nothing to lose (a failed start)
        assert not folder.plan.exists()
        folder.run_dir.mkdir(parents=True)
        folder.plan.write_text("{}")
        folder.write_inputs(["a.nii.gz"])
        folder.file("checkpoint_last.pt").write_bytes(b"state")
        with pytest.raises(InputError, match="already holds a model or a run"):
            folder.prepare(resume=False, overwrite=False)
        folder.prepare(resume=True, overwrite=False)
        folder.check_same_inputs(["a.nii.gz"])
        with pytest.raises(InputError, match="differ from those the run"):
            folder.check_same_inputs(["b.nii.gz"])


def test_resume_knows_the_inputs_by_file_not_by_spelling(tmp_path, monkeypatch):
    """Found by a user audit: the same files given with another spelling were refused, a replaced file of the
    same name and size accepted."""
    import os

    from medssl.train.run_folder import RunFolder

    scan = tmp_path / "in" / "scan.nii.gz"
    scan.parent.mkdir()
    scan.write_bytes(b"12345678")
    monkeypatch.chdir(tmp_path)
    folder = RunFolder.finetune(tmp_path / "ft")
    folder.run_dir.mkdir(parents=True)
    folder.write_inputs(["in/scan.nii.gz", "in/scan.nii.gz::t=1"])
    folder.check_same_inputs([str(scan), "./in/scan.nii.gz::t=1"])
    with pytest.raises(InputError, match="differ from those the run"):
        folder.check_same_inputs([str(scan), "in/scan.nii.gz::t=2"])
    stat = scan.stat()
    scan.write_bytes(b"87654321")  # another scan, same name and size
    os.utime(scan, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(InputError, match="differ from those the run"):
        folder.check_same_inputs(["in/scan.nii.gz", "in/scan.nii.gz::t=1"])
        folder.prepare(resume=False, overwrite=True)
        assert not folder.run_dir.exists()


def test_channel_names_follow_the_parent_package(one_case):
    from medssl.plan import ChannelSpec

    parent = PlanDefaults(channels=(ChannelSpec("T1w", "MR"),))
    plan = make_finetune_plan(one_case, default_labels(["a"]), "data", ARCH, parent, Choices(spacing=3))
    assert [c.name for c in plan.channels] == ["T1w"] and plan.provenance["fields"]["channels"] == "like_pretrained"
    plan = make_finetune_plan(one_case, default_labels(["a"]), "data", ARCH, parent, Choices(spacing=3), ["t1"])
    assert [c.name for c in plan.channels] == ["t1"] and plan.provenance["fields"]["channels"] == "user"


def test_spacing_option_of_the_command_line():
    from medssl.cli.finetune_cmd import spacing_option

    assert spacing_option(["native"]) == "native" and spacing_option(["1.5"]) == 1.5
    assert spacing_option(["0.8", "0.8", "2"]) == [0.8, 0.8, 2.0]
    for bad in (["fine"], ["1", "2"], ["-1"]):
        with pytest.raises(InputError, match="--spacing"):
            spacing_option(bad)
