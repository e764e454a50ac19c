"""Progress events of the medssl command line, as the Slicer modules read them.

``medssl ... --progress json`` writes one JSON object per line on stdout (``medssl.events.JsonLinesSink``):
``start``, ``step``, ``progress``, ``validation``, ``checkpoint``, ``log``, ``done`` and ``error``.
`parseEventLine` turns a line into an event dict (or ``None`` for ordinary text) and `ProgressState`
keeps what a progress display needs: overall fraction, ETA, stage text, loss and Dice curves, the final
``done`` payload and the one-line error. Plain Python: no Qt, no Slicer, no torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional

EVENT_TYPES = ("start", "step", "progress", "validation", "checkpoint", "log", "done", "error")

# Share of the whole prediction taken by each stage of ``medssl predict`` (start, end fractions).
PREDICT_STAGES = {
    "preprocess": (0.0, 0.05),
    "sliding_window": (0.05, 0.95),
    "postprocess": (0.95, 1.0),
}

STAGE_TITLES = {
    "preprocess": "Preparing the image",
    "sliding_window": "Segmenting",
    "postprocess": "Writing the result",
}


def parseEventLine(line: str) -> Optional[dict[str, Any]]:
    """The event of one stdout line, or None when the line is not a medssl JSON event."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("event") not in EVENT_TYPES:
        return None
    return event


def formatDuration(seconds: Optional[float]) -> str:
    """``"1 h 05 min"``, ``"3 min 07 s"``, ``"12 s"``; empty for unknown durations."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _number(value: Any) -> Optional[float]:
    """A finite float, or None (JSON null, missing, NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass
class ProgressState:
    """Everything the GUI shows about a running medssl command, updated event by event."""

    task: str = ""
    fraction: float = 0.0
    etaSeconds: Optional[float] = None
    stage: str = ""
    step: int = 0
    totalSteps: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    validations: list[tuple[int, float, dict[str, float]]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    result: Optional[dict[str, Any]] = None
    errorMessage: Optional[str] = None
    lastLog: str = ""

    def update(self, event: dict[str, Any]) -> None:
        """Fold one event into the state."""
        handler = getattr(self, "_on_" + str(event.get("event")), None)
        if handler is not None:
            handler(event)

    def _on_start(self, event: dict[str, Any]) -> None:
        self.task = str(event.get("task", self.task))
        self.totalSteps = int(event.get("total") or 0)
        self.step = int(event.get("initial") or 0)
        if self.task != "predict" and self.totalSteps:
            self.fraction = self.step / self.totalSteps
        self.stage = "Training" if self.task in ("finetune", "pretrain") else self.stage

    def _on_step(self, event: dict[str, Any]) -> None:
        self.step = int(event.get("step") or 0)
        self.totalSteps = int(event.get("total") or self.totalSteps)
        if self.totalSteps:
            self.fraction = min(1.0, self.step / self.totalSteps)
        self.etaSeconds = _number(event.get("eta_s"))
        loss = _number(event.get("loss"))
        if loss is not None:
            self.losses.append((self.step, loss))

    def _on_progress(self, event: dict[str, Any]) -> None:
        stage = str(event.get("stage", ""))
        done, total = _number(event.get("done")) or 0.0, _number(event.get("total")) or 0.0
        within = done / total if total > 0 else 0.0
        start, end = PREDICT_STAGES.get(stage, (0.0, 1.0))
        self.fraction = max(self.fraction, start + (end - start) * min(1.0, within))
        self.stage = STAGE_TITLES.get(stage, stage.replace("_", " ").capitalize())
        self.etaSeconds = _number(event.get("eta_s"))

    def _on_validation(self, event: dict[str, Any]) -> None:
        mean = _number(event.get("mean_dice"))
        dice = {str(k): v for k, v in (event.get("dice") or {}).items() if _number(v) is not None}
        if mean is not None:
            self.validations.append((int(event.get("step") or self.step), mean, dice))

    def _on_checkpoint(self, event: dict[str, Any]) -> None:
        self.checkpoints.append(dict(event))

    def _on_log(self, event: dict[str, Any]) -> None:
        self.lastLog = str(event.get("message", ""))

    def _on_done(self, event: dict[str, Any]) -> None:
        self.result = dict(event)
        self.fraction, self.etaSeconds = 1.0, 0.0

    def _on_error(self, event: dict[str, Any]) -> None:
        self.errorMessage = str(event.get("message", "")) or self.errorMessage

    @property
    def percent(self) -> int:
        """Progress in whole percent (0-100), for a QProgressBar."""
        return int(round(100 * min(1.0, max(0.0, self.fraction))))

    def latestDice(self) -> Optional[float]:
        return self.validations[-1][1] if self.validations else None

    def statusText(self) -> str:
        """One line such as ``"Training: step 120/250, loss 0.412, Dice 0.81, 2 min 10 s left"``."""
        parts = [self.stage or "Starting"]
        if self.totalSteps > 1 and self.task in ("finetune", "pretrain"):
            parts[0] += f": step {self.step}/{self.totalSteps}"
        if self.losses:
            parts.append(f"loss {self.losses[-1][1]:.3f}")
        if self.validations:
            parts.append(f"Dice {self.validations[-1][1]:.2f}")
        eta = formatDuration(self.etaSeconds)
        if eta and self.fraction < 1.0:
            parts.append(f"{eta} left")
        return ", ".join(parts)
