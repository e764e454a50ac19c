"""Upstream reference implementations for the equivalence tests, installed beside the project by ``make test``.

Packages whose version would clash with the project's own (MONAI 1.3.0, the version VoCo was trained with) are
installed with ``pip install --no-deps --target`` into ``<venv>/reference/<name>`` and imported only in a child
process that puts that folder first on ``sys.path``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REFERENCE = Path(sys.prefix) / "reference"
SCRIPTS = Path(__file__).resolve().parent / "reference"


def reference_folder(name: str) -> Path:
    """``<venv>/reference/<name>``; skip the test when it is missing (fail under CI: ``make test`` installs it)."""
    folder = REFERENCE / name
    if not folder.is_dir():
        message = f"upstream reference {name} is not installed in {REFERENCE} (run 'make test')"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


def run_reference(name: str, script: str, *args: str, timeout: float = 600) -> None:
    """Run ``Testing/reference/<script>`` with the reference package ``name`` first on ``sys.path``."""
    finish_reference(start_reference(name, script, *args), timeout)


def start_reference(name: str, script: str, *args: str) -> subprocess.Popen:
    """`run_reference` started in the background (one thread), so the test computes its own side meanwhile."""
    env = {**os.environ, "PYTHONPATH": str(reference_folder(name)), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(SCRIPTS / script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def finish_reference(proc: subprocess.Popen, timeout: float = 600) -> None:
    """Wait for a `start_reference` child; it must succeed."""
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]


def relative_error(ours, reference) -> float:
    """``|ours - reference| / |reference|`` over the whole tensor (Frobenius norms)."""
    return float((ours.double() - reference.double()).norm() / reference.double().norm().clamp_min(1e-30))


def assert_close(ours, theirs, what: str) -> None:
    """Same shape and a relative error below 1e-4 (the equivalence tests' tolerance per feature map)."""
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    err = relative_error(ours, theirs)
    assert err < 1e-4, (what, err)
