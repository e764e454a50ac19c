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


NO_GPU = {"CUDA_VISIBLE_DEVICES": ""}  # env for a subprocess that must see no CUDA GPU, even on a GPU machine


def run_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m medssl ARGS`` in a subprocess (the way users and 3D Slicer run it)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "medssl", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
