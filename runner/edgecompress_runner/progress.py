"""Progress: one structured log line per epoch and per phase, and a tqdm bar in local mode.

Each event is an ``edgecompress_contract.progress.ProgressEvent``; its wire fields are merged into the
JSON log line, which is how the operator reads it (``ProgressEvent.from_log_line``). Extra sinks
(callables taking the event) let a caller forward progress elsewhere.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from edgecompress_contract.progress import ProgressEvent

logger = logging.getLogger("edgecompress")

Sink = Callable[[ProgressEvent], None]


class JsonLineFormatter(logging.Formatter):
    """Formats each record as one JSON object; ``extra={"fields": {...}}`` adds keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info and record.levelno >= logging.ERROR:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class Progress:
    """Tracks phases (download, baseline, each step, convert, evaluate, upload) and epochs."""

    def __init__(self, phases: list[str], bar: bool = False, sinks: list[Sink] | None = None) -> None:
        self.phases = phases
        self.sinks = list(sinks or [])
        self.phase_index = -1
        self.phase = ""
        self.epochs = 0
        self._bar: Any = None
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}]")

    def percent(self, epoch_fraction: float = 0.0) -> float:
        done = max(self.phase_index, 0) + epoch_fraction
        return round(100.0 * done / max(len(self.phases), 1), 1)

    def _emit(self, message: str, event: ProgressEvent) -> None:
        logger.info(message, extra={"fields": event.to_wire()})
        for sink in self.sinks:
            sink(event)
        if self._bar is not None:
            self._bar.set_description(event.phase)
            self._bar.n = event.percent
            self._bar.refresh()

    def start(self, phase: str, epochs: int = 0) -> None:
        self.phase_index = self.phases.index(phase)
        self.phase, self.epochs = phase, epochs
        self._emit(f"{phase} started", ProgressEvent(event="phase", phase=phase, epochs=epochs, percent=self.percent()))

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        fraction = epoch / self.epochs if self.epochs else 0.0
        event = ProgressEvent(
            event="epoch",
            phase=self.phase,
            epoch=epoch,
            epochs=self.epochs,
            percent=self.percent(fraction),
            metrics={key: round(float(value), 5) for key, value in metrics.items()},
        )
        self._emit(f"{self.phase} epoch {epoch}/{self.epochs}", event)

    def trial(self, trial: int, trials: int, best: str | None) -> None:
        """The auto step measured its ``trial``-th candidate of at most ``trials``; ``best`` is its pick so far."""
        event = ProgressEvent(
            event="trial",
            phase=self.phase,
            percent=self.percent(min(trial / max(trials, 1), 1.0)),
            trial=trial,
            trials=trials,
            best=best,
        )
        self._emit(f"{self.phase} trial {trial} of at most {trials}", event)

    def finish(self) -> None:
        self.phase_index = len(self.phases)
        self._emit("finished", ProgressEvent(event="phase", phase="finished", percent=100.0))
        if self._bar is not None:
            self._bar.close()

    def keras_callback(self) -> Any:
        from .tfcompat import keras

        progress = self

        class _EpochLogger(keras.callbacks.Callback):  # type: ignore[misc]
            def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                progress.epoch(epoch + 1, logs or {})

        return _EpochLogger()
