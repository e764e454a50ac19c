"""Progress events shared by the CLI, the Python API and the Slicer modules.

An `EventSink` receives events (plain dicts with an ``"event"`` key). `JsonLinesSink` writes one JSON object
per line to stdout (``--progress json``), which the Slicer modules parse; `BarSink` draws a tqdm bar with
ETA on stderr; `NullSink` drops everything. Event types and their fields (all times in seconds):

- ``start``: ``task`` (finetune|pretrain: ``total`` steps; predict: 1, or the cases of a folder; rank: cases;
  download: bytes), free-form details.
- ``step``: ``step``, ``total``, ``loss``, ``lr``, ``eta_s``, plus per-term losses (training).
- ``progress``: ``stage``, ``done``, ``total``, ``eta_s`` (prediction and other non-training work). Stages:
  ``preprocessing`` (pretraining's cache), ``preprocess``, ``sliding_window``, ``postprocess`` (prediction),
  ``case`` (a folder: ``case``, ``status`` started|written|failed), ``rank``, ``download``.
- ``validation``: ``step``, ``dice`` ({label name: value}), ``mean_dice``.
- ``checkpoint``: ``step``, ``path``, ``kind`` (``last``: the resumable state is on disk, so a run stopped after
  this event resumes from ``step``; the best-Dice weights are saved without an event).
- ``log``: ``message``.
- ``done``: ``task``, outputs and summary numbers.
- ``error``: ``message`` (the same one line the CLI prints).
"""
from __future__ import annotations

import json
import math
import sys
import time
from typing import Any, Dict, List, Optional, TextIO


class EventSink:
    """Base sink: subclasses override `emit`."""

    def emit(self, event: str, **fields: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (progress bars)."""


class NullSink(EventSink):
    def emit(self, event: str, **fields: Any) -> None:
        return None


class ListSink(EventSink):
    """Keeps events in memory (tests, the Python API)."""

    def __init__(self) -> None:
        self.events: List[Dict[str, Any]] = []

    def emit(self, event: str, **fields: Any) -> None:
        self.events.append({"event": event, **fields})

    def of(self, event: str) -> List[Dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]


def _clean(value: Any) -> Any:
    """Make a value JSON-safe: finite floats rounded, NaN/inf as null, numpy scalars as Python."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class JsonLinesSink(EventSink):
    """One JSON object per line, flushed at once, on ``stream`` (stdout by default)."""

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self.stream = stream or sys.stdout

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": round(time.time(), 3), **_clean(fields)}
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


class BarSink(EventSink):
    """A tqdm progress bar with ETA on stderr; validation and checkpoints are written above it."""

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self.stream = stream or sys.stderr
        self.bar = None
        self.stage: Optional[str] = None

    def _open(self, total: int, desc: str, initial: int = 0) -> None:
        from tqdm import tqdm

        self.close()
        self.bar = tqdm(total=total, desc=desc, file=self.stream, dynamic_ncols=True, initial=initial)

    def emit(self, event: str, **fields: Any) -> None:
        if event == "start" and int(fields.get("total") or 0) > 1:
            self._open(int(fields["total"]), str(fields.get("task", "")), int(fields.get("initial", 0)))
        elif event == "progress" and fields.get("stage") != self.stage and int(fields.get("total") or 0) > 1:
            self.stage = fields.get("stage")
            self._open(int(fields["total"]), str(self.stage).replace("_", " "))
        if event in ("step", "progress") and self.bar is not None:
            done = int(fields.get("step", fields.get("done", 0)))
            self.bar.update(max(0, done - self.bar.n))
            if "loss" in fields and fields["loss"] is not None:
                self.bar.set_postfix(loss=f"{fields['loss']:.4f}")
        elif event == "validation":
            self._write(f"validation at step {fields.get('step')}: mean Dice {fields.get('mean_dice', 0):.3f}")
        elif event == "log":
            self._write(str(fields.get("message", "")))
        elif event == "done":
            self.close()

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def make_sink(progress: str) -> EventSink:
    """Sink for the CLI's ``--progress`` value: ``json``, ``bar`` or ``none``."""
    return {"json": JsonLinesSink, "bar": BarSink, "none": NullSink}[progress]()


class EtaClock:
    """Estimates remaining time from the mean duration of the work units done in this process."""

    def __init__(self, total: int, done: int = 0) -> None:
        self.total, self.start_done, self.t0 = total, done, time.monotonic()

    def eta(self, done: int) -> Optional[float]:
        worked = done - self.start_done
        if worked <= 0:
            return None
        return (time.monotonic() - self.t0) / worked * max(0, self.total - done)
