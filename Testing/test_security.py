"""Untrusted files execute nothing; tokens never leak; medssl sends nothing unless asked to download."""
from __future__ import annotations

import json
import os
import pickle
import socket
import zipfile
from pathlib import Path

import pytest
import torch
from medssl_test_utils import run_cli

from medssl.cli.main import main as cli_main
from medssl.errors import CheckpointError, InputError, PackageError
from medssl.plan import Plan
from medssl.io.torch_files import safe_torch_load

TOKEN = "hf_SECRETtoken0123456789abcdefXYZ"


class RunsCode:
    """Unpickling this object would run a shell command (the classic pickle attack)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": RunsCode(marker)}, str(path))
    return path


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = malicious_checkpoint(tmp_path / "evil.pth", marker)
    with pytest.raises(CheckpointError, match="could run code when loaded"):
        safe_torch_load(ckpt)
    assert not marker.exists()


@pytest.mark.parametrize("argv", [["weights", "check", "{ckpt}", "--id", "voco_b"],
                                  ["weights", "import", "{ckpt}", "--id", "voco_b"]])
def test_cli_refuses_malicious_checkpoints(tmp_path, argv):
    marker = tmp_path / "pwned"
    ckpt = malicious_checkpoint(tmp_path / "evil.pth", marker)
    proc = run_cli(*[a.format(ckpt=ckpt) for a in argv])
    assert proc.returncode == 2 and "could run code" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not marker.exists()


def test_finetune_refuses_malicious_backbone_file(tmp_path, kmeans_t1, kmeans_labels):
    marker = tmp_path / "pwned"
    ckpt = malicious_checkpoint(tmp_path / "evil.pth", marker)
    proc = run_cli("finetune", "--images", str(kmeans_t1), "--labels", str(kmeans_labels), "--out",
                   str(tmp_path / "m"), "--backbone", str(ckpt), "--steps", "1")
    assert proc.returncode == 2 and "could run code" in proc.stderr, proc.stderr
    assert not marker.exists() and not (tmp_path / "m").exists()


def test_plans_are_data_never_code(tmp_path):
    d = json.loads(json.dumps({"plan_version": 1, "channels": [{"name": "__import__('os').system('touch x')"}],
                               "normalization": [{"scheme": "eval('1')", "params": {}}], "patch_size": [32, 32, 32],
                               "labels": [], "architecture": {"backbone": "os.system", "decoder": "unet"}}))
    plan = Plan.from_dict(d)  # strings stay strings
    assert plan.channels[0].name.startswith("__import__")
    from medssl.models import build_from_plan

    with pytest.raises(InputError, match="unknown backbone 'os.system'"):
        build_from_plan(plan)
    with pytest.raises(PackageError, match="malformed plan"):
        Plan.from_dict({**d, "channels": [{"name": "x", "__class__": "y"}]})


def test_yaml_configs_cannot_construct_objects(tmp_path, kmeans_t1, kmeans_labels):
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"loop: !!python/object/apply:os.system ['touch {tmp_path / 'pwned'}']\n")
    proc = run_cli("finetune", "--images", str(kmeans_t1), "--labels", str(kmeans_labels), "--out", str(tmp_path / "m"),
                   "--config", str(cfg))
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr, proc.stderr
    assert not (tmp_path / "pwned").exists()


def test_hf_token_never_appears_in_output_events_or_files(tmp_path, tiny_package, kmeans_t1):
    env = {"HF_TOKEN": TOKEN, "HUGGING_FACE_HUB_TOKEN": TOKEN}
    outputs = [run_cli("weights", "download", "voco_b", "--progress", "json", env=env),
               run_cli("weights", "list", "--json", env=env), run_cli("info", "--json", env=env),
               run_cli("predict", "--model", str(tiny_package), "--input", str(kmeans_t1), "--output",
                       str(tmp_path / "seg.seg.nrrd"), "--progress", "json", "--device", "cpu", env=env)]
    assert outputs[0].returncode == 2 and "import" in outputs[0].stderr  # offline: names the import command
    for proc in outputs:
        assert TOKEN not in proc.stdout and TOKEN not in proc.stderr
        assert "hf_SECRET" not in proc.stdout + proc.stderr
    for path in list(tmp_path.rglob("*")) + list(Path(os.environ["MEDSSL_HOME"]).rglob("*")):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_no_network_traffic_without_a_download(tmp_path, tiny_package, kmeans_t1, monkeypatch):
    """predict and info open no socket (a connect attempt would fail the test)."""
    attempts = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    assert cli_main(["info", "--json"]) == 0
    assert cli_main(["predict", "--model", str(tiny_package), "--input", str(kmeans_t1), "--output",
                     str(tmp_path / "o.nii.gz"), "--device", "cpu", "--progress", "none"]) == 0
    assert attempts == []


def test_safetensors_package_contains_no_pickle(tiny_package):
    data = (tiny_package / "weights.safetensors").read_bytes()
    assert not zipfile.is_zipfile(tiny_package / "weights.safetensors")
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8: 8 + header_len])  # a plain JSON header, then raw tensor bytes
    # every byte after the header belongs to one tensor, back to back: there is no room for a pickle anywhere
    spans = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert 8 + header_len + spans[-1][1] == len(data)
    assert data[8:9] == b"{" and pickle.PROTO not in data[8: 8 + header_len]
