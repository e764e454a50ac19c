"""Low-level helpers of the atomic writers (`.atomic`) and the folder swap (`.dir_swap`): fsync of files and
folders, whether a writer process is alive, and the writer pid in a temporary name (``<pid>-XXXXXXXX``)."""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Optional


def fsync_file(path: Path) -> None:
    """Flush ``path``'s data to disk (raises OSError)."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk; file systems that cannot are ignored."""
    with contextlib.suppress(OSError):
        fsync_file(folder)


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists (on this machine); our own pid counts as alive."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists but belongs to someone else
    return True


def _windows_pid_alive(pid: int) -> bool:
    """OpenProcess + GetExitCodeProcess (STILL_ACTIVE = 259); access denied means it exists."""
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # ERROR_ACCESS_DENIED
    code = ctypes.c_ulong()
    try:
        return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259
    finally:
        kernel32.CloseHandle(handle)


TEMP_TAIL = re.compile(r"(\d+)-[a-z0-9_]{8}")  # <pid>-<the random part of tempfile.mkstemp/mkdtemp>


def temp_writer_pid(tail: str) -> Optional[int]:
    """The writer's pid in the ``<pid>-XXXXXXXX`` tail of a temporary name (None if it is not one of ours)."""
    match = TEMP_TAIL.fullmatch(tail)
    return int(match.group(1)) if match else None
