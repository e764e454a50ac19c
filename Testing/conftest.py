"""Fixtures shared by the tests (helpers live in medssl_test_utils.py)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from medssl_test_utils import ITK_DATA, MRICRON, require

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own MEDSSL_HOME so nothing touches the user's cache; removed after the test.

    (Some tests fill it with converted backbones of hundreds of MB; kept, a full run filled CI's /tmp.)
    """
    home = tmp_path_factory.mktemp("medssl_home")
    monkeypatch.setenv("MEDSSL_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread avoids OpenMP oversubscription on shared CI machines."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def kmeans_t1() -> Path:
    return require(ITK_DATA / "KmeansTest_T1UCharRaw.nii.gz")


@pytest.fixture(scope="session")
def kmeans_labels() -> Path:
    return require(ITK_DATA / "KmeansTest_T1KmeansPrelimSegmentation.nii.gz")


@pytest.fixture(scope="session")
def colin() -> dict:
    return {"t1": require(MRICRON / "ch2.nii.gz"), "aal": require(MRICRON / "aal.nii.gz"),
            "names": require(MRICRON / "aal.nii.txt")}


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory, kmeans_t1, kmeans_labels) -> Path:
    """A small model package fine-tuned on the ITK T1 (resenc:test, 30 steps) through the Python API."""
    from medssl.train.finetune import finetune

    out = tmp_path_factory.mktemp("pkg") / "kmeans_model"
    finetune([str(kmeans_t1)], [str(kmeans_labels)], out, backbone="resenc:test", preset="quick",
             overrides={"loop": {"steps": 30, "checkpoint_every": 10}, "patch_size": [32, 32, 32],
                        "spacing": [3.0, 3.0, 3.0]}, device="cpu")
    return out




SLOW_TIMEOUT_S = 1800  # the default per-test limit is pyproject's timeout (600 s); @pytest.mark.slow raises it


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.slow`` (a long end-to-end run: several subprocesses or trainings) gets a larger per-test
    timeout; an explicit ``@pytest.mark.timeout(N)`` wins."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))
