"""Graceful cancel through a file, for parents that cannot signal medssl (3D Slicer on Windows).

On POSIX a parent stops medssl with SIGTERM to its process group. Windows has no such signal for a child
without a console (Slicer starts medssl with ``CREATE_NO_WINDOW``, and ``GenerateConsoleCtrlEvent`` only
reaches processes that share the caller's console), so the parent names a file in ``$MEDSSL_CANCEL_FILE`` and
creates it to cancel. `watch_cancel_file` polls for it on a daemon thread and then delivers SIGINT to the main
thread (``_thread.interrupt_main``), i.e. exactly what Ctrl+C does: training stops at the next step boundary
after writing its checkpoint (`medssl.train.loop`), other commands stop with exit code 130.
"""
from __future__ import annotations

import _thread
import os
import signal
import threading
import time
from typing import Optional

ENV = "MEDSSL_CANCEL_FILE"


def _interrupt_main() -> None:
    try:
        _thread.interrupt_main(signal.SIGINT)  # Python >= 3.10: runs the SIGINT handler of the main thread
    except TypeError:  # pragma: no cover - Python 3.9
        _thread.interrupt_main()


def watch_cancel_file(path: Optional[str] = None, interval_s: float = 0.25) -> Optional[threading.Thread]:
    """Start watching ``path`` (default ``$MEDSSL_CANCEL_FILE``); None when no file is named."""
    path = path or os.environ.get(ENV)
    if not path:
        return None

    def watch() -> None:
        while not os.path.exists(path):
            time.sleep(interval_s)
        _interrupt_main()

    thread = threading.Thread(target=watch, name="medssl-cancel-file", daemon=True)
    thread.start()
    return thread
