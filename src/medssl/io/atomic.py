"""Atomic writes: a temporary file (or folder) beside the target, fsync, then rename.

A crash, ``kill -9``, full disk or failed run at any moment leaves either the previous file or the new one,
never a half-written one, and never deletes what was there before the new content is complete.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import InputError, ResourceError


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
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{what} {folder} is not writable; choose another location or fix its permissions")
    return folder


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


def fsync_file(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(str(folder), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); on success it replaces ``path`` atomically."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}-", suffix=_suffix(path.name), dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp
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


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, keep: tuple = ()) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (an existing ``path`` is
    moved aside first and removed only after the new folder is in place). Entries named in ``keep`` that
    exist in the old folder are moved into the new one (e.g. a training sub-folder)."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        for name in keep:
            if (path / name).exists() and not (tmp / name).exists():
                os.replace(path / name, tmp / name)
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_os_error(exc, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception) and is_disk_full(exc):
            _raise_os_error(OSError(errno.ENOSPC, str(exc)), path)
        raise
