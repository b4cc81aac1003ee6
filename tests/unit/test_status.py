"""CompressionJob status from the runner Job and pod: a pure table, no cluster."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgecompress_operator.status import KUEUE_QUEUE_LABEL, runner_summary, status_from_job, waiting_status

NOW = "2026-11-22T12:00:00Z"


def job(*conditions: str, reason: str = "", suspend: bool = False, queue: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "digits-1a2b3c4d", "labels": {KUEUE_QUEUE_LABEL: queue} if queue else {}},
        "spec": {"suspend": suspend},
        "status": {
            "startTime": "2026-11-22T11:59:00Z",
            "conditions": [{"type": kind, "status": "True", "reason": reason} for kind in conditions],
        },
    }


def pod(phase: str, message: str | None = None, code: int = 0, unschedulable: str | None = None) -> dict[str, Any]:
    state = {"terminated": {"exitCode": code, "message": message}} if message is not None else {"running": {}}
    conditions = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}]
    return {
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "runner", "state": state}],
            "conditions": conditions if unschedulable else [],
        }
    }


NO_GPU = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."


ARTIFACTS = {
    "tflite": {"uri": "s3://b/m.tflite", "sha256": "ab"},
    "report": {"uri": "s3://b/report.json", "sha256": "cd"},
}
SUCCEEDED = json.dumps(
    {
        "result": "Succeeded",
        "exitCode": 0,
        "message": "all gates passed",
        "gatesPassed": True,
        "artifacts": ARTIFACTS,
    }
)
GATES = json.dumps(
    {
        "result": "GatesFailed",
        "exitCode": 21,
        "message": "size reduced by 10%",
        "gatesPassed": False,
        "artifacts": ARTIFACTS,
    }
)
MISSING = json.dumps(
    {"result": "Failed", "exitCode": 20, "reason": "InvalidInput", "message": "s3://b/m.keras: object not found"}
)


@pytest.mark.parametrize(
    ("job_body", "pod_body", "phase", "reason", "ready", "has_result"),
    [
        (job(), None, "Pending", "Pending", "False", False),
        (job(), pod("Pending"), "Pending", "Pending", "False", False),
        (job(), pod("Running"), "Running", "Running", "False", False),
        (job(), pod("Succeeded", SUCCEEDED), "Running", "Running", "False", False),
        (job("Complete"), pod("Succeeded", SUCCEEDED), "Succeeded", "Succeeded", "True", True),
        (job("Failed", reason="PodFailurePolicy"), pod("Failed", GATES, 21), "Failed", "GatesFailed", "False", True),
        (
            job("Failed", reason="PodFailurePolicy"),
            pod("Failed", MISSING, 20),
            "Failed",
            "InvalidInput",
            "False",
            False,
        ),
        (job("Failed", reason="DeadlineExceeded"), None, "Failed", "DeadlineExceeded", "False", False),
        (
            job("Failed", reason="BackoffLimitExceeded"),
            pod("Failed", "Traceback ...", 1),
            "Failed",
            "RunnerCrashed",
            "False",
            False,
        ),
        (job(), pod("Pending", unschedulable=NO_GPU), "Pending", "Unschedulable", "False", False),
        (job(suspend=True), None, "Pending", "Suspended", "False", False),
        (job(suspend=True, queue="gpu"), None, "Pending", "Queued", "False", False),
    ],
    ids=[
        "no-pod",
        "pod-pending",
        "running",
        "exited-job-not-complete-yet",
        "succeeded",
        "gates-failed",
        "bad-input",
        "deadline",
        "crash",
        "unschedulable",
        "suspended",
        "kueue-queued",
    ],
)
def test_status_table(
    job_body: dict[str, Any], pod_body: dict[str, Any] | None, phase: str, reason: str, ready: str, has_result: bool
) -> None:
    status = status_from_job(job_body, pod_body, 3, NOW)
    assert (status.phase, status.reason) == (phase, reason)
    conditions = {condition.type: condition for condition in status.conditions}
    assert conditions["Ready"].status == ready
    assert conditions["Stalled"].status == ("True" if phase == "Failed" else "False")
    assert all(condition.observed_generation == 3 for condition in conditions.values())
    assert ("result" in status.to_wire()) == has_result
    assert status.observed_generation == 3


def test_failure_message_is_the_runners() -> None:
    status = status_from_job(job("Failed"), pod("Failed", MISSING, 20), 1, NOW)
    assert status.message == "s3://b/m.keras: object not found"


def test_runner_summary_ignores_running_containers() -> None:
    assert runner_summary(pod("Running")) is None and runner_summary(None) is None


def test_unschedulable_pod_shows_the_schedulers_message() -> None:
    status = status_from_job(job(), pod("Pending", unschedulable=NO_GPU), 1, NOW)
    assert status.message == NO_GPU
    reconciling = next(c for c in status.conditions if c.type == "Reconciling")
    assert (reconciling.status, reconciling.reason) == ("True", "Unschedulable")


def test_a_user_suspended_kueue_job_is_suspended_not_queued() -> None:
    assert status_from_job(job(suspend=True, queue="gpu"), None, 2, NOW, spec_suspended=True).reason == "Suspended"


def test_waiting_status_is_kstatus_shaped() -> None:
    status = waiting_status("Queued", "position 1 of 2 in the queue", 4, NOW)
    assert (status.phase, status.observed_generation) == ("Pending", 4)
    assert {c.type: c.status for c in status.conditions} == {
        "Ready": "False",
        "Reconciling": "True",
        "Stalled": "False",
    }
