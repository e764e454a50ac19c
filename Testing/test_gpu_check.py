"""`benchmarks/gpu_check.sh`, the one prepared GPU run (issue 19, part 6), cannot run here; what can is checked so
that the script still works when a GPU is lent: its step-time code on a CPU at toy sizes (the same models, batch
layouts and training step), and its refusal, in one line, on a machine without a GPU."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_step_time_section_runs_on_a_cpu_at_toy_sizes(tmp_path):
    out = tmp_path / "step_times.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_step_times.py"), "--out", str(out),
                           "--device", "cpu", "--small"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert set(results) == {"resenc_L_mae3d_160_b2", "voco_B_finetune_96_b2", "3dino_vitL_dino3d_112_b2"}
    for name, r in results.items():
        assert "error" not in r and r["step_s"] > 0, (name, r)


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a machine with a GPU")
def test_the_script_parses_and_stops_in_one_line_without_a_gpu(tmp_path):
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    proc = subprocess.run(["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout.strip().splitlines() == ["error: no CUDA GPU here (nvidia-smi missing)"]


def test_on_a_gpu_machine_missing_packages_are_named_in_one_line(tmp_path):
    """The lent GPU machine reaches no package index: what it lacks travels as wheels (`benchmarks/gpu_wheels.sh`).
    A Python without them is told so in one line, before any section starts (here: a fake ``nvidia-smi`` and an
    empty virtual environment, no wheels)."""
    import venv

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho fake\n")
    (fake / "nvidia-smi").chmod(0o755)
    venv.create(tmp_path / "bare", with_pip=False)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "PYTHON": str(tmp_path / "bare" / "bin" / "python"),
           "MEDSSL_GPU_WHEELS": str(tmp_path / "no_wheels")}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Python packages missing: torch monai SimpleITK "
                                                   "dynamic_network_architectures"), proc.stdout
    assert "benchmarks/gpu_wheels.sh" in lines[0]
