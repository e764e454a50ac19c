"""Helpers for the backbone and weight tests: random-valued fakes of the released checkpoints.

The fakes are written by ``fake_checkpoints.py`` (the project's own writer) from the recorded structures in
``Testing/data/fingerprints`` with exactly the nesting, key order, shapes, dtypes and shared storages of the real files. Each fake is written
once per test session (a process-wide cache in one temporary folder, removed at exit), whichever test file
asks first; the 3.4 GB VoCo-H fake is written by its only user into its own ``tmp_path``. Ids without a
fingerprint of their own (VoComni-L/H) get one built from the recorded ones (`vocomni_fingerprint`), and
very large fakes can be written with one value per large tensor (``constant=True``: a few bytes each).
"""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional, Tuple

import fake_checkpoints
from fake_checkpoints import structure as fingerprint
from fake_checkpoints import structure_names as fingerprint_names

REPO = Path(__file__).resolve().parent.parent

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


def write_fake(name: str, out: Path, seed: int = 0, with_optional: bool = False, device_tag: Optional[str] = None,
               edit=None) -> Path:
    """Write a fake of fingerprint ``name`` to ``out``; ``edit(checkpoint)`` may change it before saving."""
    return fake_checkpoints.write(fingerprint(name), out, seed, with_optional, device_tag=device_tag, edit=edit)


def vocomni_fingerprint(size: str) -> dict:
    """The fingerprint of ``VoComni_{L,H}.pt`` (not fingerprinted itself), built from the recorded ones.

    VoComni_B is the whole ``SwinUNETR(out_channels=21, feature_size=48)``: the 145 keys of VoCo_B_SSL_head plus
    22 ``decoder1-5``/``out`` keys (``vocomni_b.json`` minus ``voco_b_ssl_head.json``). VoComni_L/H are the
    VoCo_L/H_SSL_head keys plus those decoder keys with their channel sizes (multiples of 48) scaled to the
    feature size 96/192; ``out`` keeps its 21 classes.
    """
    scale = {"L": 2, "H": 4}[size]
    omni, head = fingerprint("vocomni_b"), fingerprint("voco_b_ssl_head")
    tensors = dict(fingerprint(f"voco_{size.lower()}_ssl_head")["tensors"])
    for key, spec in omni["tensors"].items():
        if key in head["tensors"]:
            continue
        shape = list(spec["shape"])
        for d in range(min(2, len(shape))):
            if not (key.startswith("out.") and d == 0):  # out: (21 classes, F, 1, 1, 1)
                shape[d] *= scale
        tensors[key] = {**spec, "shape": shape}
    return {**omni, "file_name": f"VoComni_{size}.pt", "tensors": tensors}


def write_fingerprint_fake(fp: dict, out: Path, seed: int = 0, constant: bool = False,
                           with_optional: bool = False) -> Path:
    """Write a fake of the fingerprint dict ``fp``; ``constant``: one value per large tensor (a few bytes each)."""
    return fake_checkpoints.write(fp, out, seed, with_optional, constant=constant)


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
    full_env.setdefault("PYTHONIOENCODING", "utf-8")  # CI may run in the C locale
    return subprocess.run([sys.executable, "-m", "medssl", *args], capture_output=True, text=True, encoding="utf-8",
                          env=full_env, timeout=timeout)


def timed_load(spec: str, entry_id: str, catalog_id: Optional[str] = None, in_channels: int = 1,
               num_classes: Optional[int] = None):
    """Resolve ``spec`` (a file or a catalog id), build its network as fine-tuning does (`build_fresh_only`),
    load it: (net, report, seconds, source).

    ``seconds``: {"resolve": read + convert + architecture, "build": network construction, "copy": the
    checked copy of the weights (reads the file again)}; printed by the loading tests (run with ``-s``).
    """
    import time

    from medssl.hub import catalog
    from medssl.hub.pretrained import resolve_pretrained
    from medssl.models import build_network
    from medssl.models.fresh_init import build_fresh_only

    t0 = time.perf_counter()
    source = resolve_pretrained(spec, catalog_id=catalog_id, accept_licence=True)
    t1 = time.perf_counter()
    classes = num_classes or catalog.get_entry(entry_id).native_num_classes or 2
    net, skipped = build_fresh_only(lambda: build_network(source.arch, in_channels, classes), source.loaded_keys)
    t2 = time.perf_counter()
    report = source.init_weights(net)
    t3 = time.perf_counter()
    assert skipped <= set(report.loaded)  # as fine-tuning builds it: random values only for what stays fresh
    seconds = {"resolve": t1 - t0, "build": t2 - t1, "copy": t3 - t2}
    print(f"\n[load time] {entry_id}: {len(report.loaded)} tensors; resolve {seconds['resolve']:.2f}s, build "
          f"{seconds['build']:.2f}s, copy {seconds['copy']:.2f}s")
    return net, report, seconds, source


def assert_loaded_exactly(net, report, path: Path, entry_id: str) -> None:
    """Zero missing backbone tensors, no shape mismatch, unused file keys only where the entry allows them, and
    every network tensor the converter maps a file tensor to holds that tensor's values."""
    import torch

    from medssl.hub import catalog
    from medssl.hub.converters import CONVERTERS
    from medssl.hub.pretrained import read_checkpoint, tensors_of

    entry = catalog.get_entry(entry_id)
    assert not [k for k in report.missing if k.startswith("encoder.")] and not report.shape_mismatch
    params = net.state_dict(keep_vars=True)
    loaded = {id(params[k]) for k in report.loaded}
    backbone = [k for k in params if k.startswith("encoder.")]
    assert backbone and all(id(params[k]) in loaded for k in backbone)
    assert all(catalog.matches(k, entry.allowed_unexpected) for k in report.unexpected), report.unexpected
    own = net.state_dict()
    converted = CONVERTERS[entry.converter](tensors_of(read_checkpoint(path), path))
    compared = [k for k in converted if k in own]
    assert set(compared) >= set(report.loaded)
    for key in compared:
        assert torch.equal(own[key], converted[key]), key
