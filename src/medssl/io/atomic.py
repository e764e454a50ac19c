"""Atomic writes: a temporary file (or folder) beside the target, fsync, then rename.

A crash, ``kill -9``, full disk or failed run at any moment leaves either the previous file or the new one,
never a half-written one, and never deletes what was there before the new content is complete. Temporary
names carry the writer's pid (``.<name>-<pid>-XXXXXXXX``): the next write removes a killed writer's leftovers,
and `atomic_dir` finishes a folder swap a kill interrupted (`medssl.io.dir_swap`).
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, List, Sequence

from ..errors import InputError, ResourceError
from .fsync import fsync_dir, fsync_file, pid_alive, temp_writer_pid


def _suffix(name: str) -> str:
    """Full suffix chain of a file name (``.nii.gz``, ``.seg.nrrd``) so writers pick the right format."""
    parts = name.split(".")
    return "." + ".".join(parts[1:]) if len(parts) > 1 else ""


def ensure_writable_dir(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and check that files can be created in it; raise `InputError` if not."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{what} {folder} cannot be created ({exc.strerror}); choose another location") from None
    if not os.access(folder, os.W_OK | os.X_OK) or not _can_create_in(folder):
        raise InputError(f"{what} {folder} is not writable; choose another location or fix its permissions")
    return folder


def _can_create_in(folder: Path) -> bool:
    """Whether a file can really be created in ``folder`` (``os.access`` says yes to root everywhere, also in
    /proc or on a read-only mount)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _raise_os_error(exc: OSError, path: Path) -> None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        raise ResourceError(f"the disk is full (or a file-size limit was reached) while writing {path}; free "
                            f"some space and run again (an interrupted training run continues with --resume)") from None
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        raise InputError(f"{path} cannot be written (permission denied); choose another location") from None
    raise exc


DISK_FULL_HINTS = ("no space left", "file too large", "os error 27", "os error 28", "disk quota", "fwrite wrote only")


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or the OSError it wraps) says the disk or a file-size limit is full; libraries
    (torch, safetensors, ITK) report these as their own exception types with the OS text inside."""
    for e in (exc, exc.__context__, exc.__cause__):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
    return any(h in str(exc).lower() for h in DISK_FULL_HINTS)


def _temp_prefix(name: str) -> str:
    """Temporary files and folders carry the writer's pid, so a later run can tell a dead writer's leftovers
    (removed) from a live writer's work in progress (left alone)."""
    return f".{name}-{os.getpid()}-"


def _dead_writer(entry: str, prefix: str, suffix: str) -> bool:
    """``entry`` is ``<prefix><pid>-XXXXXXXX<suffix>`` written by a process that no longer runs."""
    pid = temp_writer_pid(entry[len(prefix): len(entry) - len(suffix)])
    return pid is not None and not pid_alive(pid)


def remove_stale_temp_files(path: Path) -> None:
    """Delete temporary files a killed writer of ``path`` left beside it (``.<stem>-<pid>-XXXX<suffix>``)."""
    prefix, suffix = f".{path.name.split('.')[0]}-", _suffix(path.name)
    with contextlib.suppress(OSError):
        for entry in os.listdir(path.parent):
            if entry.startswith(prefix) and entry.endswith(suffix) and _dead_writer(entry, prefix, suffix):
                with contextlib.suppress(OSError):
                    (path.parent / entry).unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); on success it replaces ``path`` atomically."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    remove_stale_temp_files(path)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(path.name.split('.')[0]), suffix=_suffix(path.name),
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _usual_file_mode())  # after writing: mkstemp and some writers (safetensors) make 0600
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        _raise_os_error(exc, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception) and is_disk_full(exc):
            _raise_os_error(OSError(errno.ENOSPC, str(exc)), path)
        raise


@contextlib.contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike]) -> Iterator[List[Path]]:
    """`atomic_path` for files that belong together (a segmentation and its probabilities): yields one
    temporary path per target; only once every one has been written are they renamed over their targets, so
    a failure while writing any of them leaves every previous file untouched."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(p)) for p in paths]


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def _usual_file_mode() -> int:
    """The mode a plain ``open`` gives a new file: 0666 less the umask."""
    return 0o666 & ~_umask()


def usual_permissions(folder: Path) -> None:
    """Give every file under ``folder`` `_usual_file_mode`: writers such as safetensors create owner-only
    (0600) files, which would make a shared model package unreadable to colleagues."""
    mode = _usual_file_mode()
    for root, _dirs, files in os.walk(folder):
        for name in files:
            os.chmod(Path(root) / name, mode)


def fsync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder`` (so a rename that publishes it publishes whole files)."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fsync_file(Path(root) / name)
        fsync_dir(Path(root))


# What medssl writes in the folders it replaces (a model package, a pretraining export, a registered backbone):
# anything else in such a folder is the user's, and the folder is then not replaced, --overwrite or not
MEDSSL_ENTRIES = frozenset({"plan.json", "weights.safetensors", "metadata.json", "backbone.safetensors", "training",
                            "model.onnx", "model.onnx.json", "model.onnx.data", "openvino_cache"})


def check_replaceable(path: str | os.PathLike, option: str = "--out") -> None:
    """`InputError` unless ``path`` is missing, or a folder holding only what medssl writes (`MEDSSL_ENTRIES`,
    hidden temporary names): a fine-tune into a folder of scans had replaced it, scans and notes gone, without
    ``--overwrite``; ``--overwrite`` did the same to any folder."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise InputError(f"{option} {path} is a file, not a folder; give the name of a new folder (the file is left "
                         f"as it is)")
    foreign = sorted(e for e in os.listdir(path) if e not in MEDSSL_ENTRIES and not e.startswith("."))
    if foreign:
        listed = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise InputError(f"{option} {path} holds files medssl did not write ({listed}); medssl replaces only its own "
                         f"model folders: choose a new folder")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, keep: tuple = ()) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (an existing ``path`` is
    moved aside first and removed only after the new folder is in place). Entries named in ``keep`` that
    exist in the old folder are moved into the new one (e.g. a training sub-folder).

    A kill at any moment is repaired by `recover_dir` (called here and before a run reads its state): see
    `medssl.io.dir_swap` for the journal that makes every intermediate state recoverable.
    """
    from .dir_swap import recover_dir, swap_in

    path = Path(path)
    ensure_writable_dir(path.parent)
    recover_dir(path)
    check_replaceable(path, "folder")
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path.name), dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        usual_permissions(tmp)
        fsync_tree(tmp)
        swap_in(tmp, path, keep)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_os_error(exc, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception) and is_disk_full(exc):
            _raise_os_error(OSError(errno.ENOSPC, str(exc)), path)
        raise
