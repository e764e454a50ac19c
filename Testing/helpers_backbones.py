"""Helpers for the backbone and weight tests: random-valued fakes of the released checkpoints.

The fakes are written by ``shared/fingerprints/make_fake_checkpoint.py`` (imported, not run as a process) with
exactly the nesting, key order, shapes, dtypes and shared storages of the real files. Each fake is written
once per test session (a process-wide cache in one temporary folder, removed at exit), whichever test file
asks first; the 3.4 GB VoCo-H fake is written by its only user into its own ``tmp_path``.
"""
from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
FINGERPRINTS = REPO.parent / "shared" / "fingerprints"

# fingerprint -> catalog id of the released file it describes
FINGERPRINT_IDS: Dict[str, str] = {
    "3dino_vit_large": "3dino_vit_l",
    "nnssl_resencl_mae": "openmind_resencl_mae",
    "voco_b_ssl_head": "voco_b",
    "voco_l_ssl_head": "voco_l",
    "voco_h_ssl_head": "voco_h",
    "vocomni_b": "vocomni_b",
    "misfm_pctnet_volf": "misfm_pctnet_ct10k",
    "misfm_fmunet_volf": "misfm_fmunet_abd1k",
}
_CACHE: Dict[Tuple, Path] = {}
_DIR: Optional[Path] = None


def maker():
    """The ``make_fake_checkpoint`` module from the shared fingerprints folder."""
    spec = importlib.util.spec_from_file_location("make_fake_checkpoint", FINGERPRINTS / "make_fake_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def fingerprint(name: str) -> dict:
    return json.loads((FINGERPRINTS / f"{name}.json").read_text())


def fingerprint_names() -> list:
    return sorted(p.stem for p in FINGERPRINTS.glob("*.json"))


def write_fake(name: str, out: Path, seed: int = 0, with_optional: bool = False, device_tag: Optional[str] = None,
               edit=None) -> Path:
    """Write a fake of fingerprint ``name`` to ``out``; ``edit(checkpoint)`` may change it before saving."""
    import torch

    mk = maker()
    ckpt = mk.build_checkpoint(fingerprint(name), seed, with_optional)
    if edit is not None:
        edit(ckpt)
    with mk.device_tag(device_tag):
        torch.save(ckpt, str(out))
    return out


def fake_checkpoint(name: str, seed: int = 0, with_optional: bool = False, device_tag: Optional[str] = None) -> Path:
    """A fake of fingerprint ``name``, written once per session."""
    global _DIR
    key = (name, seed, with_optional, device_tag)
    if key not in _CACHE:
        if _DIR is None:
            _DIR = Path(tempfile.mkdtemp(prefix="medssl_fakes_"))
            atexit.register(shutil.rmtree, _DIR, True)
        file_name = fingerprint(name)["file_name"]
        out = _DIR / f"{len(_CACHE)}_{file_name}"
        _CACHE[key] = write_fake(name, out, seed, with_optional, device_tag)
    return _CACHE[key]


def run_medssl(*args: str, env: Optional[dict] = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m medssl ARGS`` in a subprocess, as users and 3D Slicer run it."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
                **(env or {})}
    return subprocess.run([sys.executable, "-m", "medssl", *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout)
