"""Preprocessed volumes cached on disk, keyed by the plan hash; read back memory-mapped.

``<root>/<plan hash>/<volume key>.npy`` holds ``preprocess([image], plan)`` as one float32 ``(I, J, K)``
array and ``<volume key>.json`` its foreground box. The volume key hashes the file path, size and
modification time, so an edited file is preprocessed again and a changed plan (spacing, normalisation,
orientation) uses another folder. Files are written atomically; several processes (DDP ranks on one node)
may build the same entry safely. Training reads the arrays with ``numpy.load(mmap_mode="r")``: a view
sampler only touches the voxels it needs, so data sets larger than memory work and loader workers share
the page cache.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from ..data.preprocess import preprocess
from ..events import EventSink, NullSink
from ..home import medssl_home
from ..io.atomic import write_bytes_atomic, write_text_atomic
from ..io.volume_io import read_image
from ..data.volumes import Box, VolumeSet, foreground_box
from ..plan import Plan

def default_cache_root() -> Path:
    return medssl_home() / "preprocessed"


def volume_key(path: str) -> str:
    """Identity of an input file: absolute path, size and modification time."""
    file = Path(str(path).split("::")[0]).resolve()
    stat = file.stat()
    text = f"{file}|{path}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _write_entry(path: str, plan: Plan, folder: Path, key: str) -> None:
    pre = preprocess([read_image(path, "image")], plan, names=[path])
    array = np.ascontiguousarray(pre.image[0], dtype=np.float32)
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes_atomic(folder / f"{key}.npy", buffer.getvalue())
    box = foreground_box(array)
    write_text_atomic(folder / f"{key}.json", json.dumps({"path": str(path), "shape": list(array.shape),
                                                          "box": [list(box[0]), list(box[1])]}))


def _read_entry(folder: Path, key: str) -> Optional[Tuple[np.ndarray, Box]]:
    try:
        meta = json.loads((folder / f"{key}.json").read_text())
        array = np.load(folder / f"{key}.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    if list(array.shape) != meta.get("shape"):
        return None
    return array, (tuple(meta["box"][0]), tuple(meta["box"][1]))  # type: ignore[return-value]


def cached_volumes(paths: Sequence[str], plan: Plan, root: Optional[str | os.PathLike] = None,
                   sink: Optional[EventSink] = None, build: bool = True) -> VolumeSet:
    """The preprocessed volumes of ``paths`` under ``plan``, preprocessing those not cached yet.

    ``build=False`` only reads (for ranks that wait while another process fills the cache).
    """
    sink = sink or NullSink()
    folder = Path(root) if root else default_cache_root()
    folder = folder / plan.hash()
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "plan.json", plan.to_json())
    arrays, boxes = [], []
    for n, path in enumerate(paths, start=1):
        key = volume_key(path)
        entry = _read_entry(folder, key)
        if entry is None and build:
            _write_entry(path, plan, folder, key)
            entry = _read_entry(folder, key)
        if entry is None:
            raise FileNotFoundError(f"preprocessed volume {folder / key}.npy is missing")
        arrays.append(entry[0])
        boxes.append(entry[1])
        sink.emit("progress", stage="preprocessing", done=n, total=len(paths), eta_s=None)
    return VolumeSet(arrays, boxes, [Path(str(p).split("::")[0]).name for p in paths])
