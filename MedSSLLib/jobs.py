"""One medssl command as a job: runner + progress state + callbacks, shared by both module Logics.

A `Job` is started by `JobRunner.run` and reports back only through callbacks (``onProgress(job)``,
``onLog(text)``, ``onFinished(job)``), never by touching widgets. ``onSuccess(job)`` runs before
``onFinished`` when the command exited 0; it is where results are read into the scene, so a cancelled or
failed command leaves the scene as it was. With a ``schedule`` function (``qt.QTimer.singleShot`` in Slicer)
the job is polled in the background; without one, `JobRunner.wait` blocks (Python console, batch scripts).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .commands import MedSSLCommand, defaultCommand
from .events import ProgressState
from .process import ProcessRunner, RunnerFactory, RunResult

Schedule = Callable[[int, Callable[[], None]], Any]


@dataclass
class Job:
    """A medssl command run by `JobRunner`; ``outputs`` holds what ``onSuccess`` produced."""

    args: list[str]
    progress: ProgressState = field(default_factory=ProgressState)
    tempDir: Optional[Path] = None
    result: Optional[RunResult] = None
    error: Optional[str] = None
    outputs: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.result is not None

    @property
    def cancelled(self) -> bool:
        return bool(self.result and self.result.cancelled)

    @property
    def ok(self) -> bool:
        return bool(self.result and self.result.ok) and self.error is None

    def statusText(self) -> str:
        """Final one-line status for the GUI."""
        if not self.finished:
            return self.progress.statusText()
        if self.cancelled:
            return "Cancelled."
        return f"Failed: {self.error}" if self.error else "Finished."


class JobRunner:
    """Runs one medssl job at a time; see the module docstring."""

    def __init__(self, command: Optional[MedSSLCommand] = None, runnerFactory: Optional[RunnerFactory] = None,
                 schedule: Optional[Schedule] = None, keepTemporaryFiles: bool = False) -> None:
        self._command = command
        self.runnerFactory = runnerFactory or ProcessRunner
        self.schedule = schedule
        self.keepTemporaryFiles = keepTemporaryFiles
        self.job: Optional[Job] = None
        self.runner = None  # the RunnerProtocol of the current job

    @property
    def command(self) -> MedSSLCommand:
        if self._command is None:
            self._command = defaultCommand()
        return self._command

    @property
    def busy(self) -> bool:
        return self.job is not None and not self.job.finished

    def run(self, args: Sequence[str], onProgress: Optional[Callable[[Job], None]] = None,
            onLog: Optional[Callable[[str], None]] = None, onFinished: Optional[Callable[[Job], None]] = None,
            onSuccess: Optional[Callable[[Job], None]] = None, tempDir: Optional[Path] = None,
            onEvent: Optional[Callable[[dict], None]] = None) -> Job:
        """Start ``medssl <args>``; raises RuntimeError if another job is still running. ``onEvent(event)`` sees
        each medssl event itself (before ``onProgress``), for callers that follow more than the overall progress."""
        if self.busy:
            raise RuntimeError("MedSSL is already running a job; wait for it or cancel it first")
        job = Job(list(args), tempDir=tempDir)

        def handleEvent(event: dict) -> None:
            job.progress.update(event)
            if onEvent:
                onEvent(event)
            if event.get("event") == "log":
                handleLog(str(event.get("message", "")))
            if onProgress:
                onProgress(job)

        def handleLog(text: str) -> None:
            job.log.append(text)
            logging.info(f"medssl: {text}")
            if onLog:
                onLog(text)

        def handleFinished(result: RunResult) -> None:
            self._finish(job, result, onSuccess, onFinished)

        self.runner = self.runnerFactory(handleEvent, handleLog, handleFinished)
        self.job = job
        try:
            self.runner.start(self.command.args(*job.args), env=self.command.env)
        except Exception:
            self.job = None
            self._cleanup(job)
            raise
        if self.schedule is not None:
            self.runner.pollEvery(self.schedule)
        return job

    def _finish(self, job: Job, result: RunResult, onSuccess, onFinished) -> None:
        job.result = result
        job.error = result.errorMessage
        if result.ok and onSuccess is not None:
            try:
                onSuccess(job)
            except Exception as exc:  # reading results failed: report it like a failed run
                logging.exception("MedSSL: reading the results failed")
                job.error = str(exc) or exc.__class__.__name__
        self._cleanup(job)
        if onFinished:
            onFinished(job)

    def _cleanup(self, job: Job) -> None:
        if job.tempDir is not None and not self.keepTemporaryFiles:
            shutil.rmtree(job.tempDir, ignore_errors=True)

    def poll(self) -> bool:
        """Deliver pending output of the current job (when no ``schedule`` polls it); True while it runs."""
        return self.runner is not None and self.runner.poll()

    def wait(self, timeout: Optional[float] = None) -> Job:
        """Block until the current job ends (used when no ``schedule`` is set)."""
        if self.job is None or self.runner is None:
            raise RuntimeError("no MedSSL job was started")
        if not self.job.finished:
            self.runner.wait(timeout)
        return self.job

    def waitOrRaise(self, timeout: Optional[float], what: str) -> Job:
        """`wait`, then RuntimeError with medssl's message when ``what`` was cancelled or failed."""
        job = self.wait(timeout)
        if job.cancelled:
            raise RuntimeError(f"{what} was cancelled")
        if not job.ok:
            raise RuntimeError(f"{what} failed: {job.error}")
        return job

    def cancel(self) -> None:
        """Cancel the running job (kills the whole process tree); results are not read."""
        if self.busy and self.runner is not None:
            self.runner.cancel()
