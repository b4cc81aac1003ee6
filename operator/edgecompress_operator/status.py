"""Pure mapping from the runner Job (and its pod) to the CompressionJob's status."""

from __future__ import annotations

import json
from typing import Any

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def runner_summary(pod: dict[str, Any] | None) -> dict[str, Any] | None:
    """The runner's compact result from its container's termination message, if any."""
    if pod is None:
        return None
    for status in pod.get("status", {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated") or {}
        message = terminated.get("message")
        if message:
            try:
                summary = json.loads(message)
            except json.JSONDecodeError:
                return {"result": "Failed", "reason": "RunnerCrashed", "message": message[-1000:]}
            return summary if isinstance(summary, dict) else None
    return None


def _condition(kind: str, true: bool, reason: str, message: str, generation: int, now: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if true else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": now,
    }


def unscheduled_reason(pod: dict[str, Any] | None) -> tuple[str, str] | None:
    """The scheduler's reason and message when the pod cannot be placed (e.g. no GPU free)."""
    for condition in (pod or {}).get("status", {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return str(condition.get("reason") or "Unschedulable"), str(condition.get("message") or "")
    return None


def waiting_status(reason: str, message: str, generation: int, now: str, phase: str = "Pending") -> dict[str, Any]:
    """Status of a CompressionJob that has no running Job: Queued, Suspended, or refused (InvalidSpec)."""
    status: dict[str, Any] = {"observedGeneration": generation, "phase": phase, "reason": reason, "message": message}
    status["conditions"] = _conditions(phase, reason, message, generation, now)
    return status


def _conditions(phase: str, reason: str, message: str, generation: int, now: str) -> list[dict[str, Any]]:
    return [
        _condition("Ready", phase == "Succeeded", reason, message, generation, now),
        _condition("Reconciling", phase in ("Pending", "Running"), reason, message, generation, now),
        _condition("Stalled", phase == "Failed", reason, message, generation, now),
    ]


def status_from_job(
    job: dict[str, Any], pod: dict[str, Any] | None, generation: int, now: str, spec_suspended: bool = False
) -> dict[str, Any]:
    """phase, kstatus-style conditions, times, and the runner's result or reason."""
    job_status = job.get("status") or {}
    finished = {c["type"]: c for c in job_status.get("conditions") or [] if c.get("status") == "True"}
    summary = runner_summary(pod)
    unscheduled = unscheduled_reason(pod)
    status: dict[str, Any] = {"observedGeneration": generation, "job": job["metadata"]["name"]}
    if job_status.get("startTime"):
        status["startTime"] = job_status["startTime"]
    if "Complete" in finished:
        phase, reason, message = "Succeeded", "Succeeded", (summary or {}).get("message", "all gates passed")
        status["completionTime"] = job_status.get("completionTime", now)
        status["progress"] = {"phase": "finished", "percent": 100.0, "updateTime": now}
    elif "Failed" in finished:
        phase = "Failed"
        if summary is not None and summary.get("result") == "GatesFailed":
            reason = "GatesFailed"
        elif summary is not None:
            reason = str(summary.get("reason", "RunnerFailed"))
        else:
            reason = str(finished["Failed"].get("reason") or "JobFailed")
        message = (summary or {}).get("message") or finished["Failed"].get("message", "the runner Job failed")
        status["completionTime"] = now
    elif (job.get("spec") or {}).get("suspend"):
        queue = (job["metadata"].get("labels") or {}).get(KUEUE_QUEUE_LABEL)
        if queue and not spec_suspended:
            phase, reason, message = "Pending", "Queued", f"waiting for admission by Kueue LocalQueue {queue}"
        else:
            phase, reason, message = "Pending", "Suspended", "spec.suspend is true; the runner Job is suspended"
    elif pod is not None and pod.get("status", {}).get("phase") == "Running":
        phase, reason, message = "Running", "Running", "the runner is working"
    elif unscheduled is not None:
        phase = "Pending"
        reason, message = unscheduled
    else:
        phase, reason, message = "Pending", "Pending", "waiting for the runner pod to start"
    status["phase"] = phase
    status["reason"] = reason
    status["message"] = message
    if summary is not None and "artifacts" in summary:
        status["result"] = summary
        if (summary.get("promotion") or {}).get("promoted"):
            status["promotedURI"] = summary["promotion"]["uri"]
    status["conditions"] = _conditions(phase, reason, message, generation, now)
    return status
