"""status.progress from the runner's JSON log lines."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgecompress_contract.progress import ProgressEvent
from edgecompress_operator.status import status_from_job

NOW = "2026-11-22T10:00:05Z"
RUNNING_JOB: dict[str, Any] = {"metadata": {"name": "digits-1a2b3c4d"}, "spec": {}, "status": {}}
RUNNING_POD: dict[str, Any] = {"status": {"phase": "Running", "containerStatuses": [{"state": {"running": {}}}]}}


def progress_from_log(log: str) -> dict[str, Any] | None:
    """status.progress of a running CompressionJob whose runner logged ``log``, without the time it was read."""
    status = status_from_job(RUNNING_JOB, RUNNING_POD, 1, NOW, progress=ProgressEvent.newest_in_log(log))
    if status.progress is None:
        return None
    assert status.progress.update_time == NOW
    return status.progress.model_copy(update={"update_time": None}).to_wire()


def line(**fields: object) -> str:
    return json.dumps({"time": "2026-11-22T10:00:00Z", "level": "INFO", "message": "m", **fields})


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        ("", None),
        ("plain text\nTraceback (most recent call last):", None),
        (line(event="phase", phase="download", epochs=0, percent=0.0), {"phase": "download", "percent": 0.0}),
        (
            "\n".join(
                [
                    line(event="phase", phase="steps[0] prune", epochs=4, percent=28.6),
                    line(event="epoch", phase="steps[0] prune", epoch=2, epochs=4, percent=35.7, loss=0.2),
                    "Epoch 3/4 ....",
                    line(message="uploaded"),
                ]
            ),
            {"phase": "steps[0] prune", "epoch": 2, "epochs": 4, "percent": 35.7},
        ),
        (
            "{not json\n" + line(event="phase", phase="convert", epochs=0, percent=71.4) + "\n{broken",
            {"phase": "convert", "percent": 71.4},
        ),
        (
            "\n".join(
                [
                    line(event="trial", phase="steps[0] auto", percent=31.0, trial=3, trials=20, best="int8: 0.3x"),
                    line(event="candidate", name="mixed-1", sizeBytes=1000, passed=False),
                ]
            ),
            {"phase": "steps[0] auto", "percent": 31.0, "trial": 3, "trials": 20, "best": "int8: 0.3x"},
        ),
    ],
    ids=["empty", "no-json", "phase", "newest-epoch-wins", "skips-broken-lines", "auto-trials"],
)
def test_progress_from_log(log: str, expected: dict[str, object] | None) -> None:
    assert progress_from_log(log) == expected
