"""Helpers shared by the tests (import them by name; conftest.py only holds fixtures).

Real data (installed by ``make test`` / ``.ci/run``):
- ITK ``KmeansTest`` T1 + k-means labels (Debian insighttoolkit5-examples): 128x128x62, 2x2x3 mm, coronal.
- Colin27 T1 + AAL (Debian mricron-data): 181x217x181, 1 mm.
- MNI152 2009a T1 (PyPI nilearn), nibabel's test images.
A test needing data that is absent is skipped on a developer machine but fails under CI (``CI=true``),
so CI can never pass without the real scans.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ITK_DATA = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")
MRICRON = Path("/usr/share/mricron/templates")
REPO = Path(__file__).resolve().parent.parent


def require(path: Path) -> Path:
    """Return ``path``; skip the test if it is missing (fail under CI)."""
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"test data {path} is missing: .ci/run must install it")
        pytest.skip(f"test data {path} is not installed (run 'make test')")
    return path


def oblique_image(size=(40, 36, 30), spacing=(0.9, 1.3, 2.5), angle=0.4, left_handed=False,
                  origin=(-20.5, 13.25, 40.0), seed=0) -> sitk.Image:
    """A smooth random float image with a rotated (and optionally left-handed) direction."""
    rng = np.random.default_rng(seed)
    arr = rng.normal(size=size[::-1]).astype(np.float32)
    arr = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(arr), 2.0)) * 10 + 100
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, np.cos(angle / 2), -np.sin(angle / 2)],
                                                                   [0, np.sin(angle / 2), np.cos(angle / 2)]])
    if left_handed:
        rot[:, 2] *= -1
    img.SetDirection(rot.ravel().tolist())
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


def blob_labels(image: sitk.Image, n: int = 3) -> sitk.Image:
    """Label map with ``n`` nested intensity classes of ``image`` (values 1..n, 0 outside)."""
    arr = sitk.GetArrayFromImage(image)
    edges = np.percentile(arr, np.linspace(40, 95, n + 1)[:-1])
    lab = np.digitize(arr, edges).astype(np.uint8)
    out = sitk.GetImageFromArray(lab)
    out.CopyInformation(image)
    return out


def require_module(name: str):
    """Import ``name``; skip the test if it is not installed (fail under CI, where ``make test`` installs it)."""
    if os.environ.get("CI"):
        import importlib

        return importlib.import_module(name)
    return pytest.importorskip(name, reason=f"{name} is not installed (run 'make test')")


NO_GPU = {"CUDA_VISIBLE_DEVICES": ""}  # env for a subprocess that must see no CUDA GPU, even on a GPU machine


def run_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m medssl ARGS`` in a subprocess (the way users and 3D Slicer run it)."""
    full_env = {**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})}  # CI may run in the C locale
    return subprocess.run([sys.executable, "-m", "medssl", *args], capture_output=True, text=True, encoding="utf-8",
                          env=full_env, timeout=timeout)


def stdout_lines(proc: subprocess.Popen, timeout: float = 120):
    """Lines of a child's stdout, failing the test (and killing the child) if none arrives within ``timeout``
    seconds: a plain ``for line in proc.stdout`` would hang the suite when the child hangs."""
    import queue
    import threading

    lines: "queue.Queue[str | None]" = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            proc.kill()
            pytest.fail(f"no output from {proc.args!r} for {timeout} s: it hangs")
        if line is None:
            return
        yield line


def cli_in_process(*args: str) -> subprocess.CompletedProcess:
    """``medssl ARGS`` in this process (``medssl.cli.main.main``), captured like `run_cli`: for error paths
    where the subprocess itself is not what is tested (a Python start-up costs ~2 s a case). The CLI's
    SIGTERM handler is put back afterwards."""
    import contextlib
    import io
    import signal

    from medssl.cli.main import main

    out, err, handler = io.StringIO(), io.StringIO(), signal.getsignal(signal.SIGTERM)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse: usage errors and --version
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        signal.signal(signal.SIGTERM, handler)
    return subprocess.CompletedProcess(["medssl", *args], code, out.getvalue(), err.getvalue())
