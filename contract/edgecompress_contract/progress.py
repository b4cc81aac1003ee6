"""Progress events: the runner logs one JSON line per phase and per epoch; the operator reads the
newest from the pod's log into ``status.progress`` (so the runner needs no API credentials)."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field, ValidationError

from .wire import Record


class ProgressEvent(Record):
    """A phase started (``phase``), a fine-tuning epoch ended (``epoch``) or the auto step measured a candidate
    (``trial``)."""

    event: Literal["phase", "epoch", "trial"] = Field(
        description="phase: a phase started; epoch: an epoch ended; trial: the auto step measured a candidate."
    )
    phase: str = Field(description="download, baseline, steps[i] <type>, convert, evaluate, upload or finished.")
    epoch: int | None = Field(default=None, description="The epoch that ended (epoch events).")
    epochs: int | None = Field(default=None, description="Epochs of this phase, when it fine-tunes.")
    percent: float = Field(description="Share of the run done, 0-100.")
    metrics: dict[str, float] | None = Field(default=None, description="Training metrics of the epoch (loss, ...).")
    trial: int | None = Field(default=None, description="Candidates the auto step has measured (trial events).")
    trials: int | None = Field(default=None, description="At most this many (the step's maxTrials).")
    best: str | None = Field(
        default=None,
        description="The best candidate so far by the step's objective (the closest one while none passes).",
    )

    @classmethod
    def from_log_line(cls, line: str) -> ProgressEvent | None:
        """The event in one log line, or None for any other line (text, other JSON, broken JSON)."""
        line = line.strip()
        if not line.startswith("{"):
            return None
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            return None
        if not isinstance(entry, dict) or entry.get("event") not in ("phase", "epoch", "trial"):
            return None
        try:
            return cls.model_validate(entry)
        except ValidationError:
            return None

    @classmethod
    def newest_in_log(cls, log: str) -> ProgressEvent | None:
        for line in reversed(log.splitlines()):
            event = cls.from_log_line(line)
            if event is not None:
                return event
        return None
