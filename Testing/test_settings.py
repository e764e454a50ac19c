"""Run settings from YAML (`medssl.io.settings`): types checked against the dataclass fields, YAML 1.1's readings
of ``off`` and ``1e-3`` taken as the user meant them, one-line errors naming the key's path."""
from __future__ import annotations

import pytest
import torch

from medssl.errors import InputError
from medssl.train.config import FinetuneConfig, load_config
from medssl.train.loop import _amp_dtype


def _load(tmp_path, text: str) -> FinetuneConfig:
    path = tmp_path / "user.yaml"
    path.write_text(text)
    return load_config(FinetuneConfig, "finetune", "quick", str(path))


def test_amp_off_unquoted_is_float32(tmp_path):
    """YAML 1.1 reads ``off`` as False; `_amp_dtype` compared with "off", so False had meant float16 + scaler."""
    cfg = _load(tmp_path, "loop:\n  amp: off\n")
    assert cfg.loop.amp == "off"
    assert _amp_dtype(cfg.loop.amp, torch.device("cpu")) is None
    assert _amp_dtype(cfg.loop.amp, torch.device("cuda")) is None


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    """``1e-3`` is text to PyYAML (YAML 1.1 wants ``1.0e-3``)."""
    cfg = _load(tmp_path, "loop:\n  lr: 1e-3\n  weight_decay_end: 2e-5\n")
    assert cfg.loop.lr == 0.001 and cfg.loop.weight_decay_end == 2e-5


def test_lists_become_tuples_and_whole_floats_ints(tmp_path):
    cfg = _load(tmp_path, "augment:\n  mirror_axes: [0, 2]\n  scale: [0.9, 1]\nbatch_size: 4.0\npatch_size: [32, 32, 32]\n")
    assert cfg.augment.mirror_axes == (0, 2) and cfg.augment.scale == (0.9, 1)
    assert cfg.batch_size == 4 and isinstance(cfg.batch_size, int) and cfg.patch_size == [32, 32, 32]


@pytest.mark.parametrize("text, message", [
    ("loop:\n  amp: bogus\n", r"user\.yaml: loop\.amp 'bogus' is not one of auto, bf16, fp16, off"),
    ("normalization:\n  MR: {scheme: zscore}\n", r"user\.yaml: normalization must be text, not \{'MR'"),
    ("loop: 5\n", r"loop is a section of settings"),
    ("augment:\n  scale: [1, 2, 3]\n", r"augment\.scale must be a list of 2 values, not \[1, 2, 3\]"),
    ("augment:\n  mirror_axes: [0, x]\n", r"augment\.mirror_axes\[1\] must be a whole number, not 'x'"),
    ("batch_size: 2.5\n", r"batch_size must be a whole number, not 2\.5"),
    ("loop:\n  steps: ten\n", r"loop\.steps must be a whole number, not 'ten'"),
    ("freeze_backbone: 1\n", r"freeze_backbone must be true or false, not 1"),
    ("loop:\n  stpes: 3\n", r"unknown setting 'loop\.stpes'\. Did you mean: steps"),
])
def test_wrong_settings_fail_in_one_line(tmp_path, text, message):
    with pytest.raises(InputError, match=message) as info:
        _load(tmp_path, text)
    assert "\n" not in str(info.value)


def test_every_preset_and_recipe_passes_the_checks():
    """The shipped presets and the backbones' recipes are read through the same checks (a wrong type in one of
    them would stop every run that uses it)."""
    from medssl.hub.recipes import recipes
    from medssl.train.config import CONFIG_DIR
    from medssl.train.pretrain import PretrainConfig

    for path in sorted((CONFIG_DIR / "finetune").glob("*.yaml")):
        for recipe in [None, *recipes().values()]:
            load_config(FinetuneConfig, "finetune", path.stem, recipe=recipe and recipe.finetune)
    from medssl.ssl.base import method_config

    for path in sorted((CONFIG_DIR / "pretrain").glob("*.yaml")):
        method = path.stem.split("_cpu")[0].split("_highres")[0]
        method_config(method, load_config(PretrainConfig, "pretrain", path.stem).method)


@pytest.mark.parametrize("text, message", [
    ("loop:\n  lr: -1\n", r"loop\.lr -1 is out of range; use 0 or more"),
    ("loop:\n  optimizer: adamm\n", r"loop\.optimizer 'adamm' is not one of adamw, adam, sgd"),
    ("loop:\n  checkpoint_every: 0\n", r"loop\.checkpoint_every 0 is out of range"),
    ("augment:\n  p_rotation: 1.5\n", r"augment\.p_rotation 1\.5 is out of range; use a probability in \[0, 1\]"),
    ("augment:\n  scale: [1.2, 0.8]\n", r"augment\.scale \[1\.2, 0\.8\] is out of range"),
    ("overlap: 1\n", r"overlap 1 is out of range; use a value in \[0, 1\)"),
    ("batch_size: 0\n", r"batch_size 0 is out of range"),
])
def test_values_out_of_range_fail_before_the_run(tmp_path, text, message):
    """Found by a user audit: ``lr: -1`` had stopped the run at its optimiser with a traceback, after its run folder
    was written (which then refused the corrected rerun)."""
    with pytest.raises(InputError, match=message):
        _load(tmp_path, text)


@pytest.mark.parametrize("method, settings, message", [
    ("mae3d", {"block": 0}, r"block 0 is out of range; use whole numbers of 1 or more"),
    ("mae3d", {"mask_ratio": 1.5}, r"mask_ratio 1\.5 is out of range; use a fraction in \[0, 1\)"),
    ("voco", {"slice_axis": 5}, r"slice_axis 5 is out of range; use 0, 1 or 2"),
    ("voco", {"p_flip": 1.5}, r"p_flip 1\.5 is out of range; use a probability"),
    ("volume_fusion", {"classes": 0}, r"classes 0 is out of range; use 2 or more"),
    ("volume_fusion", {"boxes": [40, 10]}, r"boxes \[40, 10\] is out of range; use \[low, high\]"),
    ("dino3d", {"mask_ratio": [0.8, 0.2]}, r"mask_ratio \[0\.8, 0\.2\] is out of range"),
])
def test_method_settings_out_of_range_fail_in_one_line(method, settings, message):
    """Found by an audit: such values had failed inside a DataLoader worker (and hung the exit) or trained on
    nothing (mask_ratio 1.5)."""
    from medssl.ssl.base import method_config

    with pytest.raises(InputError, match=rf"method settings of {method}: {message}"):
        method_config(method, settings)


@pytest.mark.parametrize("text, message", [
    ("batch_size: 0\n", r"batch_size 0 is out of range"),
    ("patch_size: [0, 48, 48]\n", r"patch_size \[0, 48, 48\] is out of range"),
    ("patch_size: [48, 48]\n", r"patch_size \[48, 48\] is out of range; use three sides"),
    ("orientation: XYZ\n", r"orientation 'XYZ' is out of range; use three letters"),
    ("loop: 5\n", r"loop is a section of settings"),
])
def test_pretraining_settings_out_of_range_fail_in_one_line(tmp_path, text, message):
    from medssl.train.pretrain import PretrainConfig

    path = tmp_path / "user.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_config(PretrainConfig, "pretrain", "mae3d_cpu", str(path))


def test_orientation_codes():
    from medssl.io.settings import require_orientation

    for good in ("RAS", "LPS", "ras", "PIR", None):
        require_orientation(good)
    for bad in ("RAR", "RA", "XYZ", "RASL"):
        with pytest.raises(InputError):
            require_orientation(bad)
