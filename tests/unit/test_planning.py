from __future__ import annotations

import pytest

from edgecompress_contract.spec import PruneStep, parse_spec
from edgecompress_runner.errors import InputError
from edgecompress_runner.pipeline import plan_phases
from edgecompress_runner.planning import pruning_plan, steps_per_epoch


def prune_step(**fields: object) -> PruneStep:
    return PruneStep.model_validate({"type": "prune", **fields})


@pytest.mark.parametrize(("samples", "batch", "expected"), [(1437, 32, 45), (32, 32, 1), (33, 32, 2), (1, 64, 1)])
def test_steps_per_epoch(samples: int, batch: int, expected: int) -> None:
    assert steps_per_epoch(samples, batch) == expected


@pytest.mark.parametrize(
    ("fields", "total", "expected"),
    [
        ({}, 90, (0, 89, 8)),
        ({}, 101, (0, 100, 10)),
        ({"beginStep": 10, "endStep": 50}, 90, (10, 50, 4)),
        ({"frequency": 100}, 200, (0, 199, 100)),
        ({}, 5, (0, 4, 1)),
    ],
)
def test_pruning_plan(fields: dict[str, int], total: int, expected: tuple[int, int, int]) -> None:
    assert pruning_plan(prune_step(**fields), total, 0) == expected


@pytest.mark.parametrize(
    ("fields", "total", "message"),
    [
        ({"frequency": 100}, 90, r"steps\[0\]\.frequency: 100 exceeds the pruning window of 89 steps"),
        ({"endStep": 500}, 90, r"steps\[0\]\.endStep: 500 is after the last fine-tuning step 89"),
        ({"beginStep": 89}, 90, r"steps\[0\]\.beginStep: 89 is not before the last fine-tuning step"),
    ],
)
def test_pruning_plan_rejects_plans_that_would_not_prune(fields: dict[str, int], total: int, message: str) -> None:
    with pytest.raises(InputError, match=message):
        pruning_plan(prune_step(**fields), total, 0)


def test_phases_follow_the_steps() -> None:
    spec = parse_spec(
        {
            "model": {"uri": "/m.keras", "format": "keras"},
            "dataset": {"uri": "/d.npz"},
            "steps": [{"type": "prune"}, {"type": "qat"}, {"type": "ptq", "mode": "int8"}],
            "output": {"uri": "/out"},
        }
    )
    assert plan_phases(spec) == [
        "download",
        "baseline",
        "steps[0] prune",
        "steps[1] qat",
        "steps[2] ptq",
        "convert",
        "evaluate",
        "upload",
    ]


def test_an_auto_step_with_trials_runs_them_after_the_baseline() -> None:
    document = {
        "model": {"uri": "/m.keras", "format": "keras"},
        "dataset": {"uri": "/d.npz"},
        "steps": [{"type": "auto"}],
        "gates": {"minFidelity": 0.9},
        "output": {"uri": "/out"},
    }
    without = ["download", "baseline", "steps[0] auto", "convert", "evaluate", "upload"]
    assert plan_phases(parse_spec(document)) == without
    document["steps"] = [{"type": "auto", "trials": [{"preset": "qat"}]}]
    assert plan_phases(parse_spec(document)) == [*without[:2], "trials", *without[2:]]
