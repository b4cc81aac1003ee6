"""Pure mapping from the runner Job (and its pod) to the CompressionJob's status."""

from __future__ import annotations

import json
from typing import Any

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


def status_from_job(
    job: dict[str, Any], pod: dict[str, Any] | None, generation: int, now: str
) -> dict[str, Any]:
    """phase, kstatus-style conditions, times, and the runner's result or reason."""
    job_status = job.get("status") or {}
    finished = {c["type"]: c for c in job_status.get("conditions") or [] if c.get("status") == "True"}
    summary = runner_summary(pod)
    status: dict[str, Any] = {"observedGeneration": generation, "job": job["metadata"]["name"]}
    if job_status.get("startTime"):
        status["startTime"] = job_status["startTime"]
    if "Complete" in finished:
        phase, reason, message = "Succeeded", "Succeeded", (summary or {}).get("message", "all gates passed")
        status["completionTime"] = job_status.get("completionTime", now)
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
    elif pod is not None and pod.get("status", {}).get("phase") == "Running":
        phase, reason, message = "Running", "Running", "the runner is working"
    else:
        phase, reason, message = "Pending", "Pending", "waiting for the runner pod to start"
    status["phase"] = phase
    status["reason"] = reason
    status["message"] = message
    if summary is not None and "artifacts" in summary:
        status["result"] = summary
    status["conditions"] = [
        _condition("Ready", phase == "Succeeded", reason, message, generation, now),
        _condition("Reconciling", phase in ("Pending", "Running"), reason, message, generation, now),
        _condition("Stalled", phase == "Failed", reason, message, generation, now),
    ]
    return status
