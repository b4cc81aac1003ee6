"""CompressionJob status from the runner Job and pod: a pure table, no cluster."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgecompress_operator.status import runner_summary, status_from_job

NOW = "2026-11-22T12:00:00Z"


def job(*conditions: str, reason: str = "") -> dict[str, Any]:
    return {"metadata": {"name": "digits-1a2b3c4d"},
            "status": {"startTime": "2026-11-22T11:59:00Z",
                       "conditions": [{"type": kind, "status": "True", "reason": reason} for kind in conditions]}}


def pod(phase: str, message: str | None = None, code: int = 0) -> dict[str, Any]:
    state = {"terminated": {"exitCode": code, "message": message}} if message is not None else {"running": {}}
    return {"status": {"phase": phase, "containerStatuses": [{"name": "runner", "state": state}]}}


SUCCEEDED = json.dumps({"result": "Succeeded", "message": "all gates passed", "gatesPassed": True,
                        "artifacts": {"tflite": {"uri": "s3://b/m.tflite", "sha256": "ab"}}})
GATES = json.dumps({"result": "GatesFailed", "message": "size reduced by 10%", "gatesPassed": False,
                    "artifacts": {"tflite": {"uri": "s3://b/m.tflite", "sha256": "ab"}}})
MISSING = json.dumps({"result": "Failed", "reason": "InvalidInput", "message": "s3://b/m.keras: object not found"})


@pytest.mark.parametrize(
    ("job_body", "pod_body", "phase", "reason", "ready", "has_result"),
    [
        (job(), None, "Pending", "Pending", "False", False),
        (job(), pod("Pending"), "Pending", "Pending", "False", False),
        (job(), pod("Running"), "Running", "Running", "False", False),
        (job("Complete"), pod("Succeeded", SUCCEEDED), "Succeeded", "Succeeded", "True", True),
        (job("Failed", reason="PodFailurePolicy"), pod("Failed", GATES, 21), "Failed", "GatesFailed", "False", True),
        (job("Failed", reason="PodFailurePolicy"), pod("Failed", MISSING, 20), "Failed", "InvalidInput", "False", False),
        (job("Failed", reason="DeadlineExceeded"), None, "Failed", "DeadlineExceeded", "False", False),
        (job("Failed", reason="BackoffLimitExceeded"), pod("Failed", "Traceback ...", 1), "Failed", "RunnerCrashed",
         "False", False),
    ],
    ids=["no-pod", "pod-pending", "running", "succeeded", "gates-failed", "bad-input", "deadline", "crash"],
)
def test_status_table(job_body: dict[str, Any], pod_body: dict[str, Any] | None, phase: str, reason: str,
                      ready: str, has_result: bool) -> None:
    status = status_from_job(job_body, pod_body, 3, NOW)
    assert (status["phase"], status["reason"]) == (phase, reason)
    conditions = {condition["type"]: condition for condition in status["conditions"]}
    assert conditions["Ready"]["status"] == ready
    assert conditions["Stalled"]["status"] == ("True" if phase == "Failed" else "False")
    assert all(condition["observedGeneration"] == 3 for condition in conditions.values())
    assert ("result" in status) == has_result
    assert status["observedGeneration"] == 3


def test_failure_message_is_the_runners() -> None:
    status = status_from_job(job("Failed"), pod("Failed", MISSING, 20), 1, NOW)
    assert status["message"] == "s3://b/m.keras: object not found"


def test_runner_summary_ignores_running_containers() -> None:
    assert runner_summary(pod("Running")) is None and runner_summary(None) is None
