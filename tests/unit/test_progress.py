"""status.progress from the runner's JSON log lines."""

from __future__ import annotations

import json

import pytest

from edgecompress_operator.handlers.handle_progress import progress_from_log


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
    ],
    ids=["empty", "no-json", "phase", "newest-epoch-wins", "skips-broken-lines"],
)
def test_progress_from_log(log: str, expected: dict[str, object] | None) -> None:
    assert progress_from_log(log) == expected
