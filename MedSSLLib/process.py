"""Run a medssl command in a subprocess without blocking the caller, and cancel it with its whole tree.

`ProcessRunner` starts the command in its own process group (``start_new_session`` on POSIX,
``CREATE_NEW_PROCESS_GROUP`` on Windows), reads stdout and stderr on two daemon threads into a queue and
delivers lines on the caller's thread when `ProcessRunner.poll` is called: JSON progress events to
``onEvent``, other text to ``onLog``, and the `RunResult` once to ``onFinished``. In Slicer ``poll`` is
driven by ``qt.QTimer.singleShot`` through `ProcessRunner.pollEvery`; scripts and tests call
`ProcessRunner.wait`. `ProcessRunner.cancel` first asks medssl to stop (training then writes a checkpoint):
SIGTERM to the process group on POSIX; on Windows, which has no such signal for a child without a console,
it creates the cancel file that medssl watches (``$MEDSSL_CANCEL_FILE``, `medssl.cli.cancel`). Only if the
tree still runs after `ProcessRunner.CANCEL_GRACE_S` is it killed (``killpg`` SIGKILL; ``taskkill /T /F``), so
the ``PythonSlicer`` launcher, its Python child and any data-loader workers all stop. The child runs in
Python's UTF-8 mode with UTF-8 pipes (``PYTHONUTF8``, ``PYTHONIOENCODING``), the encoding the reader
decodes, so non-ASCII paths and segment names cross unchanged on Windows too (its default is cp1252).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

from .events import parseEventLine

CANCELLED_EXIT_CODE = 130  # what ``medssl`` returns on Ctrl+C / SIGTERM
CANCEL_FILE_ENV = "MEDSSL_CANCEL_FILE"  # watched by medssl.cli.cancel
CHILD_ENCODING = {"PYTHONUTF8": "1", "PYTHONIOENCODING": "utf-8"}
# How a graceful stop is asked for: Windows cannot send SIGTERM (or Ctrl+Break, without a shared console)
# to a child started with CREATE_NO_WINDOW, so it uses the cancel file; the tests run that path on POSIX too.
GRACEFUL_BY_FILE = os.name == "nt"

EventCallback = Callable[[dict], None]
LogCallback = Callable[[str], None]


@dataclass
class RunResult:
    """How a command ended."""

    returnCode: Optional[int]
    cancelled: bool = False
    errorMessage: Optional[str] = None
    stderrTail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returnCode == 0 and not self.cancelled


class RunnerProtocol(Protocol):
    """What the Logic classes need from a runner (`ProcessRunner` or a test double)."""

    result: Optional[RunResult]

    def start(self, args: Sequence[str], env: Optional[dict] = None, cwd: Optional[str] = None) -> None: ...

    def poll(self) -> bool: ...

    def cancel(self) -> None: ...

    def wait(self, timeout: Optional[float] = None) -> RunResult: ...

    def pollEvery(self, schedule: Callable[[int, Callable[[], None]], Any], intervalMs: int = 200) -> None: ...


RunnerFactory = Callable[[Optional[EventCallback], Optional[LogCallback], Optional[Callable[[RunResult], None]]],
                         RunnerProtocol]


def killProcessTree(pid: int, hard: bool = True) -> None:
    """Stop the process group led by ``pid`` (SIGTERM, or SIGKILL when ``hard``); Windows: ``taskkill /T /F``
    (only ever hard there: a graceful stop goes through the cancel file, see `ProcessRunner.cancel`)."""
    if os.name == "nt":
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(pid)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False,
                       creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))  # no console flashes
        return
    try:
        os.killpg(pid, signal.SIGKILL if hard else signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def _popenKeywords() -> dict[str, Any]:
    """Own process group, no console window on Windows."""
    if os.name == "nt":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        return {"creationflags": flags}
    return {"start_new_session": True}


def childEnvironment(env: Optional[dict]) -> dict:
    """``env`` (default: this process's environment) with UTF-8 mode and UTF-8 pipes for the child."""
    return {**(os.environ if env is None else env), **CHILD_ENCODING}


def _errorFromStderr(lines: Sequence[str]) -> Optional[str]:
    """The CLI's one-line ``error: ...`` (last one), else the last non-empty line (e.g. of a traceback)."""
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: "):].strip()
    rest = [line for line in lines if line.strip()]
    return rest[-1].strip() if rest else None


class ProcessRunner:
    """One subprocess with non-blocking output handling; see the module docstring."""

    CANCEL_GRACE_S = 15.0  # training finishes its step and writes a checkpoint on SIGTERM
    STDERR_TAIL = 40

    def __init__(self, onEvent: Optional[EventCallback] = None, onLog: Optional[LogCallback] = None,
                 onFinished: Optional[Callable[[RunResult], None]] = None,
                 popen: Callable[..., subprocess.Popen] = subprocess.Popen) -> None:
        self.onEvent, self.onLog, self.onFinished = onEvent, onLog, onFinished
        self._popen = popen
        self.proc: Optional[subprocess.Popen] = None
        self.result: Optional[RunResult] = None
        self._queue: queue.Queue = queue.Queue()
        self._stderr: list[str] = []
        self._errorEvent: Optional[str] = None
        self._cancelled = False
        self._killDeadline: Optional[float] = None
        self.cancelFile = Path(tempfile.gettempdir()) / f"medssl-cancel-{os.urandom(8).hex()}"

    # ------------------------------------------------------------------ starting
    def start(self, args: Sequence[str], env: Optional[dict] = None, cwd: Optional[str] = None) -> None:
        """Launch ``args``; raises RuntimeError when the executable cannot be started."""
        if self.proc is not None:
            raise RuntimeError("this runner was already started; create a new one for another command")
        env = {**childEnvironment(env), CANCEL_FILE_ENV: str(self.cancelFile)}
        try:
            self.proc = self._popen(list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                                    bufsize=1, env=env, cwd=cwd, **_popenKeywords())
        except OSError as exc:
            raise RuntimeError(f"cannot start {args[0]}: {exc}") from exc
        readers = [self._startReader("out", self.proc.stdout), self._startReader("err", self.proc.stderr)]
        threading.Thread(target=self._waitForExit, args=(readers,), daemon=True).start()

    def _startReader(self, kind: str, stream) -> threading.Thread:
        thread = threading.Thread(target=self._readLines, args=(kind, stream), daemon=True)
        thread.start()
        return thread

    def _readLines(self, kind: str, stream) -> None:
        for line in iter(stream.readline, ""):
            self._queue.put((kind, line.rstrip("\r\n")))
        stream.close()

    def _waitForExit(self, readers: list[threading.Thread]) -> None:
        for reader in readers:
            reader.join()
        self._queue.put(("exit", self.proc.wait()))

    # ------------------------------------------------------------------ polling
    @property
    def running(self) -> bool:
        return self.proc is not None and self.result is None

    def poll(self) -> bool:
        """Deliver pending output on this thread; returns True until the result has been delivered."""
        if self._killDeadline is not None and time.monotonic() > self._killDeadline and self.proc is not None:
            killProcessTree(self.proc.pid, hard=True)
            self._killDeadline = None
        while self.result is None:
            try:
                kind, payload = self._queue.get_nowait()
            except queue.Empty:
                break
            self._dispatch(kind, payload)
        return self.result is None

    def _dispatch(self, kind: str, payload: Any) -> None:
        if kind == "out":
            event = parseEventLine(payload)
            if event is None:
                self._log(payload)
                return
            if event["event"] == "error":
                self._errorEvent = str(event.get("message", "")) or None
            if self.onEvent:
                self.onEvent(event)
        elif kind == "err":
            self._stderr = (self._stderr + [payload])[-self.STDERR_TAIL:]
            self._log(payload)
        else:
            self._finish(int(payload))

    def _log(self, text: str) -> None:
        if text.strip() and self.onLog:
            self.onLog(text)

    def _finish(self, returnCode: int) -> None:
        if self._cancelled and self.proc is not None:
            killProcessTree(self.proc.pid, hard=True)  # orphaned grandchildren, if any
        cancelled = self._cancelled or returnCode == CANCELLED_EXIT_CODE
        message = None
        if returnCode != 0 and not cancelled:
            message = self._errorEvent or _errorFromStderr(self._stderr) or f"medssl stopped with exit code {returnCode}"
        self.result = RunResult(returnCode, cancelled, message, list(self._stderr))
        self._killDeadline = None
        self.cancelFile.unlink(missing_ok=True)
        if self.onFinished:
            self.onFinished(self.result)

    # ------------------------------------------------------------------ control
    def cancel(self) -> None:
        """Ask the process tree to stop (SIGTERM, or the cancel file on Windows); it is killed only if still
        alive after `CANCEL_GRACE_S`."""
        if not self.running:
            return
        self._cancelled = True
        if GRACEFUL_BY_FILE:
            self.cancelFile.touch()
        else:
            killProcessTree(self.proc.pid, hard=False)
        self._killDeadline = time.monotonic() + self.CANCEL_GRACE_S

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> RunResult:
        """Block (polling) until the command ends; on timeout cancel it and raise TimeoutError."""
        if self.proc is None:
            raise RuntimeError("the runner was not started")
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                self.wait(interval=interval)
                raise TimeoutError(f"the command did not finish within {timeout:g} s and was cancelled")
            time.sleep(interval)
        return self.result

    def pollEvery(self, schedule: Callable[[int, Callable[[], None]], Any], intervalMs: int = 200) -> None:
        """Keep polling through ``schedule(ms, callback)`` (``qt.QTimer.singleShot`` in Slicer) until finished."""

        def tick() -> None:
            try:
                alive = self.poll()
            except Exception:  # a failing callback must not stop the polling (the job would never finish)
                logging.exception("MedSSL: a progress callback failed")
                alive = self.result is None
            if alive:
                schedule(intervalMs, tick)

        schedule(intervalMs, tick)
