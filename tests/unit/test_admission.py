"""The global concurrency limit and spec.suspend as a pure plan: a table, no cluster."""

from __future__ import annotations

from typing import Any

import pytest

from edgecompress_operator.admission import Candidate, plan_admission, queued_message


def job(state: str) -> dict[str, Any]:
    conditions = {
        "complete": [{"type": "Complete", "status": "True"}],
        "failed": [{"type": "Failed", "status": "True"}],
    }.get(state, [])
    return {"metadata": {"name": "j"}, "spec": {"suspend": state == "suspended"}, "status": {"conditions": conditions}}


def cr(
    name: str,
    created: str,
    job_state: str | None = None,
    suspended: bool = False,
    kueue: bool = False,
    namespace: str = "ml",
) -> Candidate:
    return Candidate(namespace, name, created, suspended, kueue, job(job_state) if job_state else None)


T = [f"2026-11-22T10:00:0{second}Z" for second in range(10)]


@pytest.mark.parametrize(
    ("candidates", "limit", "create", "resume", "suspend", "queued", "waiting_suspended"),
    [
        ([cr("a", T[0]), cr("b", T[1])], 4, ["a", "b"], [], [], [], []),
        ([cr("c", T[2]), cr("a", T[0]), cr("b", T[1])], 2, ["a", "b"], [], [], ["c"], []),
        ([cr("run", T[0], "running"), cr("b", T[2]), cr("a", T[1])], 2, ["a"], [], [], ["b"], []),
        ([cr("run1", T[0], "running"), cr("run2", T[1], "running"), cr("w", T[2])], 2, [], [], [], ["w"], []),
        ([cr("done", T[0], "complete"), cr("fail", T[1], "failed"), cr("w", T[2])], 1, ["w"], [], [], [], []),
        ([cr("s", T[0], suspended=True), cr("w", T[1])], 1, ["w"], [], [], [], ["s"]),
        ([cr("s", T[0], "running", suspended=True), cr("w", T[1])], 1, ["w"], [], ["s"], [], []),
        ([cr("r", T[0], "suspended"), cr("w", T[1])], 1, [], ["r"], [], ["w"], []),
        (
            [cr("k1", T[0], kueue=True), cr("k2", T[1], "suspended", kueue=True), cr("w", T[2])],
            1,
            ["k1", "w"],
            [],
            [],
            [],
            [],
        ),
        ([cr("z", T[0], namespace="b"), cr("y", T[0], namespace="a")], 1, ["y"], [], [], ["z"], []),
    ],
    ids=[
        "under-limit",
        "creation-order",
        "one-slot-left",
        "full",
        "finished-free-slots",
        "suspended-waits",
        "suspend-running",
        "resumed-job-queues-first",
        "kueue-bypasses-limit",
        "same-second-tiebreak",
    ],
)
def test_plan(
    candidates: list[Candidate],
    limit: int,
    create: list[str],
    resume: list[str],
    suspend: list[str],
    queued: list[str],
    waiting_suspended: list[str],
) -> None:
    plan = plan_admission(candidates, limit)
    assert [c.name for c in plan.create] == create
    assert [c.name for c in plan.resume] == resume
    assert [c.name for c in plan.suspend] == suspend
    assert [c.name for c in plan.queued] == queued
    assert [c.name for c in plan.waiting_suspended] == waiting_suspended


def test_never_more_running_than_the_limit() -> None:
    candidates = [cr(f"j{i}", T[i]) for i in range(7)]
    for limit in (1, 3, 7, 10):
        plan = plan_admission(candidates, limit)
        assert len(plan.create) == min(limit, 7) and len(plan.queued) == 7 - min(limit, 7)


def test_queued_message_names_the_limit_and_not_the_position() -> None:
    assert queued_message(4).startswith("waiting for a free runner slot: the limit of 4")


def test_a_trials_job_holds_one_slot_per_trial_pod_and_the_queue_keeps_its_order() -> None:
    def wide(name: str, created: str, slots: int, job_state: str | None = None) -> Candidate:
        return Candidate("ml", name, created, False, False, job(job_state) if job_state else None, slots=slots)

    running = plan_admission([wide("trials", T[0], 2, "running"), cr("next", T[1])], 2)
    assert running.running == 2 and [c.name for c in running.queued] == ["next"]
    plan = plan_admission([cr("one", T[0], "running"), wide("wide", T[1], 2), cr("small", T[2])], 2)
    assert plan.create == [] and [c.name for c in plan.queued] == ["wide", "small"], "no overtaking a wide job"
    plan = plan_admission([wide("wide", T[0], 3), cr("small", T[1])], 4)
    assert [c.name for c in plan.create] == ["wide", "small"]
    assert plan_admission([wide("done", T[0], 3, "complete"), cr("w", T[1])], 1).create[0].name == "w"
