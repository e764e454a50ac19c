"""Replacing a folder (a model package, a pretraining export) so that a ``kill -9`` at any moment is repaired.

`atomic_dir` fills ``.<name>-<pid>-XXXXXXXX`` beside the target and fsyncs it; then `swap_in` writes a journal
``.<name>.swap-<pid>.json`` (tmp, old and keep names) and `finish_swap` runs the idempotent steps

    target -> .<name>.old-<pid>  ->  tmp -> target  ->  keep entries old -> target  ->  remove old, journal

The journal exists only once the new folder is complete, so whatever state a kill leaves, the next writer or
run (`recover_dir`) rolls the swap forward with the same steps: the target is never lost, and the run state
carried in ``keep`` (``training/``) is never stranded in a hidden folder. Leftovers of killed writers without
a journal (an unfinished new folder) are removed; those of a writer still running are left alone.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Sequence

from .fsync import fsync_dir, fsync_file, pid_alive, temp_writer_pid


def _journal(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.name}.swap-{pid}.json")


def _old(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.name}.old-{pid}")


def swap_in(tmp: Path, path: Path, keep: Sequence[str]) -> None:
    """Replace ``path`` by the complete folder ``tmp``, carrying the ``keep`` entries of the old ``path``."""
    old, journal = _old(path, os.getpid()), _journal(path, os.getpid())
    if old.exists():  # a previous swap of this process that could not remove it
        shutil.rmtree(old)
    part = journal.with_name(journal.name + ".part")
    part.write_text(json.dumps({"tmp": tmp.name, "old": old.name, "keep": list(keep)}))
    fsync_file(part)
    os.replace(part, journal)
    fsync_dir(path.parent)
    finish_swap(path, journal)


def finish_swap(path: Path, journal: Path) -> None:
    """Run (or finish) the swap recorded in ``journal``; every step can be repeated after a kill."""
    info = json.loads(journal.read_text())
    tmp, old, keep = path.parent / info["tmp"], path.parent / info["old"], info["keep"]
    if tmp.is_dir():
        if path.exists() and not old.exists():
            os.replace(path, old)
        if not path.exists():
            os.replace(tmp, path)
            fsync_dir(path.parent)
    if not path.exists() and old.is_dir():  # the new folder is gone: put the previous one back
        os.replace(old, path)
    if old.is_dir() and path.is_dir():
        _carry(old, path, keep)
        shutil.rmtree(old)
    shutil.rmtree(tmp, ignore_errors=True)
    journal.unlink()
    fsync_dir(path.parent)


def _carry(old: Path, path: Path, keep: Sequence[str]) -> None:
    for name in keep:
        if (old / name).exists() and not (path / name).exists():
            os.replace(old / name, path / name)
    fsync_dir(path)


def _writer_pid(entry: str, prefix: str) -> int | None:
    """The pid in ``<prefix><pid>...`` names (None if ``entry`` is not one of ours)."""
    if not entry.startswith(prefix):
        return None
    tail = entry[len(prefix):]
    pid = temp_writer_pid(tail)
    if pid is not None:
        return pid
    match = re.fullmatch(r"(\d+)(\.json(\.part)?)?", tail)  # .old-<pid> folders and .swap-<pid> journals
    return int(match.group(1)) if match else None


def recover_dir(path: str | os.PathLike) -> Path:
    """Repair what a killed `atomic_dir` left beside ``path``; leave the work of live writers alone.

    Finishes every journalled swap (see the module docstring), restores a ``.<name>.old-<pid>`` folder when
    ``path`` itself is missing, and removes unfinished ``.<name>-<pid>-*`` folders and stale old folders.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return path
    for kind, prefix in (("swap", f".{path.name}.swap-"), ("old", f".{path.name}.old-"), ("tmp", f".{path.name}-")):
        for entry in sorted(os.listdir(path.parent)):
            pid = _writer_pid(entry, prefix)
            if pid is None or (pid_alive(pid) and pid != os.getpid()):
                continue
            _recover_entry(kind, path, path.parent / entry)
    return path


def _recover_entry(kind: str, path: Path, entry: Path) -> None:
    if kind == "swap" and entry.name.endswith(".part"):  # killed while writing the journal: no swap began
        entry.unlink()
    elif kind == "swap":
        finish_swap(path, entry)
    elif kind == "old" and not path.exists():
        os.replace(entry, path)
        fsync_dir(path.parent)
    else:  # an old folder whose replacement is in place, or a new folder that was never complete
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(entry)
