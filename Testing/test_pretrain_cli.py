"""``medssl pretrain`` end to end: exact resume after kill -9, a two-process gloo DDP run under torchrun, and
an export that ``medssl finetune --backbone`` fine-tunes through the CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from medssl_test_utils import ITK_DATA, REPO, require, run_cli, stdout_lines

from medssl.errors import InputError
from medssl.train.checkpoint import load_checkpoint
from medssl.train.pretrain import pretrain

TINY_DINO = {
    "backbone": "vit3d:test", "batch_size": 2, "patch_size": [32, 32, 32], "spacing": 4.0,
    "loop": {"steps": 8, "checkpoint_every": 4, "log_every_s": 0, "num_workers": 1, "warmup_steps": 2},
    "method": {"global_size": 32, "local_size": 16, "n_local": 2, "dino_prototypes": 64, "ibot_prototypes": 64,
               "head_hidden": 32, "head_bottleneck": 16, "teacher_temp_warmup_steps": 4, "freeze_last_layer_steps": 2,
               "student_drop_path": 0.1},  # drop path draws from the torch RNG: resume must restore it
}
ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def t1() -> str:
    return str(require(ITK_DATA / "KmeansTest_T1UCharRaw.nii.gz"))


def write_config(folder: Path, data: dict) -> str:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def losses(run: Path) -> list:
    return [h["loss"] for h in load_checkpoint(run / "training" / "checkpoint_last.pt")["history"]]


def test_kill_and_resume_gives_the_same_next_losses(t1, tmp_path):
    config = write_config(tmp_path, TINY_DINO)
    full = tmp_path / "full"
    pretrain("dino3d", [t1], full, preset="cpu", config_yaml=config, device="cpu")
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "medssl", "pretrain", "--method", "dino3d", "--images", t1, "--out", str(killed),
           "--preset", "cpu", "--config", config, "--device", "cpu", "--progress", "json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, **ENV})
    for line in stdout_lines(proc):
        event = json.loads(line)
        if event["event"] == "step" and event["step"] >= 6:
            proc.send_signal(signal.SIGKILL)  # no chance to save: the step-4 checkpoint is what survives
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(killed / "training" / "checkpoint_last.pt")["step"] == 4
    resumed = run_cli(*cmd[3:-2], "--resume", "--progress", "none", env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(losses(killed)) == 8
    assert losses(killed)[4:] == pytest.approx(losses(full)[4:], rel=1e-5)
    assert json.loads((killed / "export" / "metadata.json").read_text())["steps"] == 8


def test_two_process_gloo_ddp_under_torchrun(t1, tmp_path):
    config = write_config(tmp_path, {**TINY_DINO, "loop": {**TINY_DINO["loop"], "steps": 3, "num_workers": 0}})
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m", "medssl",
           "pretrain", "--method", "dino3d", "--images", t1, "--out", str(out), "--preset", "cpu", "--config", config,
           "--device", "cpu", "--progress", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ENV}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events].count("done") == 1  # rank 0 reports and writes
    meta = json.loads((out / "export" / "metadata.json").read_text())
    assert meta["world_size"] == 2 and meta["steps"] == 3
    assert load_checkpoint(out / "training" / "checkpoint_last.pt")["step"] == 3


def test_export_fine_tunes_through_the_cli(t1, tmp_path):
    labels = str(require(ITK_DATA / "KmeansTest_T1KmeansPrelimSegmentation.nii.gz"))
    config = write_config(tmp_path, {"backbone": "resenc:test", "patch_size": [32, 32, 32], "spacing": 4.0,
                                     "loop": {"steps": 3, "num_workers": 0}, "method": {"crop_size": [16, 16, 16]}})
    export = pretrain("volume_fusion", [t1], tmp_path / "vf", preset="cpu", config_yaml=config, device="cpu")
    model = tmp_path / "model"
    done = run_cli("finetune", "--images", t1, "--labels", labels, "--out", str(model), "--backbone",
                   str(export / "backbone.safetensors"), "--steps", "2", "--progress", "json", env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    logs = [json.loads(line).get("message", "") for line in done.stdout.splitlines() if line.startswith("{")]
    loaded = [m for m in logs if m.startswith("pretrained weights from volume_fusion")]
    assert loaded and " 0 tensors loaded" not in loaded[0]
    plan = json.loads((model / "plan.json").read_text())
    assert plan["spacing"] == [4.0, 4.0, 4.0] and plan["normalization"][0]["scheme"] == "zscore"  # inherited
    assert plan["patch_size"] == [32, 32, 32]
    _register_and_fine_tune_by_name(tmp_path / "vf", t1, labels, tmp_path / "model_by_name")


def _register_and_fine_tune_by_name(run: Path, t1: str, labels: str, model: Path) -> None:
    """``medssl weights import RUN --id NAME``, then ``--backbone NAME`` in finetune; list, path and remove."""
    clash = run_cli("weights", "import", str(run), "--id", "voco_b", env=ENV)
    assert clash.returncode == 2 and "is a weight-catalog id" in clash.stderr
    done = run_cli("weights", "import", str(run), "--id", "vf_kmeans", env=ENV)
    assert done.returncode == 0 and "--backbone vf_kmeans" in done.stdout, done.stderr
    listed = json.loads(run_cli("weights", "list", "--json", env=ENV).stdout)
    mine = [r for r in listed if r.get("local")]
    assert [(r["id"], r["method"], r["steps"]) for r in mine] == [("vf_kmeans", "volume_fusion", 3)]
    done = run_cli("finetune", "--images", t1, "--labels", labels, "--out", str(model), "--backbone", "vf_kmeans",
                   "--steps", "1", "--progress", "json", env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads((model / "metadata.json").read_text())
    assert "pretrained weights from volume_fusion" in done.stdout and "vf_kmeans" in json.dumps(meta)
    typo = run_cli("finetune", "--images", t1, "--labels", labels, "--out", str(model) + "2", "--backbone", "vf_kmeens",
                   env=ENV)
    assert typo.returncode == 2 and "Did you mean: vf_kmeans" in typo.stderr, typo.stderr
    assert run_cli("weights", "remove", "vf_kmeans", env=ENV).returncode == 0
    assert run_cli("weights", "path", "vf_kmeans", env=ENV).returncode == 2


@pytest.mark.parametrize("method", ["dino3d", "mae3d", "voco", "volume_fusion"])
def test_presets_are_valid(method):
    """The published recipe and the CPU preset of every method load, with valid method settings."""
    from medssl.models import resolve_arch
    from medssl.ssl.base import build_method, method_config
    from medssl.train.config import load_config
    from medssl.hub.backbone_source import default_decoder
    from medssl.train.pretrain import PretrainConfig, preset_name

    recipe = load_config(PretrainConfig, "pretrain", preset_name(method, None))
    cpu = load_config(PretrainConfig, "pretrain", preset_name(method, "cpu"))
    assert recipe.loop.steps >= 12500 and cpu.loop.steps <= 1000
    for cfg in (recipe, cpu):
        method_config(method, cfg.method)
        assert set(cfg.normalization) == {"CT", "MR"}
    if method == "dino3d":
        assert recipe.loop.weight_decay_end == 0.4 and method_config(method, recipe.method).n_local == 8
    name, _, arch_preset = cpu.backbone.partition(":")
    arch = resolve_arch(name, default_decoder(name), {"preset": arch_preset})
    build_method(method, arch, cpu.method, cpu.patch_size)  # sizes fit the CPU preset's backbone


def test_cli_reports_bad_input_in_one_line(tmp_path):
    done = run_cli("pretrain", "--method", "mae3d", "--images", str(tmp_path / "none.nii.gz"), "--out",
                   str(tmp_path / "run"), env=ENV)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: --images: {tmp_path / 'none.nii.gz'} does not exist; give image files or folders of images"]
    with pytest.raises(InputError, match="no pretraining preset 'gpu' for mae3d; --preset takes auto, recipe, cpu$"):
        pretrain("mae3d", [str(tmp_path)], tmp_path / "run", preset="gpu")
    with pytest.raises(InputError, match="--resume.*no interrupted pretraining run"):
        pretrain("mae3d", [str(tmp_path)], tmp_path / "run", preset="cpu", resume=True)


def test_resume_with_another_method_is_one_line(tmp_path):
    """Found by an audit: --resume of a mae3d run with --method voco failed in load_state_dict with hundreds of
    keys (and dino3d asked for a --backbone the stored plan then ignored)."""
    import SimpleITK as sitk

    from medssl.train.run_folder import RunFolder

    scan = tmp_path / "scan.nii.gz"
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkFloat32), str(scan))
    run = RunFolder.pretrain(tmp_path / "run")
    run.run_dir.mkdir(parents=True)
    run.plan.write_text("{}")
    run.write_inputs([str(scan)])
    run.config.write_text(json.dumps({"method": "mae3d", "config": {}}))
    with pytest.raises(InputError, match=r"--resume: .*run is a mae3d run; resume it with --method mae3d"):
        pretrain("voco", [str(scan)], tmp_path / "run", preset="cpu", resume=True)
