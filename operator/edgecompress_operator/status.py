"""Pure mapping from the runner Job (and its pod and log) to the CompressionJob's status, and the
merge patch that takes the stored status to the desired one."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from edgecompress_contract.progress import ProgressEvent
from edgecompress_contract.status import CompressionJobStatus, Condition, Phase, StatusProgress
from edgecompress_contract.summary import RunSummary

logger = logging.getLogger("edgecompress.status")

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
CRASH_MESSAGE_LIMIT = 1000


def parse_status(namespace: str, name: str, status: Mapping[str, Any]) -> CompressionJobStatus:
    """The observed status as the model; one the model cannot read counts as a status not yet written."""
    try:
        return CompressionJobStatus.model_validate(dict(status))
    except ValidationError as error:
        logger.warning("status of %s/%s does not match the contract: %s", namespace, name, error)
        return CompressionJobStatus()


def runner_summary(pod: dict[str, Any] | None) -> RunSummary | None:
    """The runner's compact result from its container's termination message, if any.

    A message that is not JSON (a Python traceback, the kubelet's own text) means the runner crashed
    before it could write a summary: reason ``RunnerCrashed`` with the message's tail. JSON that is
    not a summary is ignored (the Job's own reason applies).
    """
    if pod is None:
        return None
    for status in pod.get("status", {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated") or {}
        message = terminated.get("message")
        if message:
            try:
                return RunSummary.model_validate_json(message)
            except ValidationError:
                if _is_json(message):
                    return None
                return RunSummary(
                    result="Failed",
                    exit_code=int(terminated.get("exitCode") or 1),
                    reason="RunnerCrashed",
                    message=message[-CRASH_MESSAGE_LIMIT:],
                )
    return None


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


STUCK_WAITING_REASONS = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
    }
)
"""Container waiting reasons that do not go away by waiting (a missing Secret, a bad image)."""


def start_problem(pod: dict[str, Any] | None, failed_create: str | None) -> tuple[str, str] | None:
    """Why the runner does not start: its container's waiting reason, or the Job's FailedCreate (no pod)."""
    if pod is None:
        return ("FailedCreate", failed_create) if failed_create else None
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING_REASONS:
            return str(waiting["reason"]), str(waiting.get("message") or waiting["reason"])
    return None


def parse_time(value: str) -> datetime:
    """A Kubernetes timestamp (RFC 3339, ``Z``)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def now_timestamp() -> str:
    """Now as a Kubernetes timestamp, to the second."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds_between(start: str, end: str) -> float:
    return (parse_time(end) - parse_time(start)).total_seconds()


def unscheduled_reason(pod: dict[str, Any] | None) -> tuple[str, str] | None:
    """The scheduler's reason and message when the pod cannot be placed (e.g. no GPU free)."""
    for condition in (pod or {}).get("status", {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return str(condition.get("reason") or "Unschedulable"), str(condition.get("message") or "")
    return None


def _conditions(phase: Phase, reason: str, message: str, *, generation: int, now: str) -> list[Condition]:
    def condition(kind: str, true: bool) -> Condition:
        return Condition(
            type=kind,
            status="True" if true else "False",
            reason=reason,
            message=message,
            observed_generation=generation,
            last_transition_time=now,
        )

    return [
        condition("Ready", phase == "Succeeded"),
        condition("Reconciling", phase in ("Pending", "Running")),
        condition("Stalled", phase == "Failed"),
    ]


def waiting_status(
    reason: str, message: str, generation: int, now: str, *, phase: Phase = "Pending"
) -> CompressionJobStatus:
    """Status of a CompressionJob that has no runner Job: Queued, Suspended, or refused (InvalidSpec)."""
    return CompressionJobStatus(
        observed_generation=generation,
        phase=phase,
        reason=reason,
        message=message,
        conditions=_conditions(phase, reason, message, generation=generation, now=now),
    )


def status_from_job(
    job: dict[str, Any],
    pod: dict[str, Any] | None,
    generation: int,
    now: str,
    *,
    spec_suspended: bool = False,
    progress: ProgressEvent | None = None,
    failed_create: str | None = None,
    start_timeout: float | None = None,
) -> CompressionJobStatus:
    """phase, kstatus-style conditions, times, progress, and the runner's result or reason.

    ``progress`` is the newest progress event in the running pod's log, if one was read.
    ``failed_create`` is the Job's newest FailedCreate Event message. A runner that cannot start
    (``start_problem``) longer than ``start_timeout`` seconds after its Job was created ends Failed.
    """
    job_status = job.get("status") or {}
    finished = {c["type"]: c for c in job_status.get("conditions") or [] if c.get("status") == "True"}
    summary = runner_summary(pod)
    unscheduled = unscheduled_reason(pod)
    completion_time: str | None = None
    status_progress = None if progress is None else StatusProgress.of(progress, now)
    phase: Phase
    if "Complete" in finished:
        phase, reason = "Succeeded", "Succeeded"
        message = summary.message if summary is not None and summary.message else "all gates passed"
        completion_time = job_status.get("completionTime") or now
        status_progress = StatusProgress(phase="finished", percent=100.0, update_time=now)
    elif "Failed" in finished:
        phase = "Failed"
        if summary is not None and summary.result == "GatesFailed":
            reason = "GatesFailed"
        elif summary is not None:
            reason = summary.reason or "RunnerFailed"
        else:
            reason = str(finished["Failed"].get("reason") or "JobFailed")
        message = (summary.message if summary is not None else "") or str(
            finished["Failed"].get("message", "the runner Job failed")
        )
        completion_time = str(finished["Failed"].get("lastTransitionTime") or now)
    elif (job.get("spec") or {}).get("suspend"):
        queue = (job["metadata"].get("labels") or {}).get(KUEUE_QUEUE_LABEL)
        if queue and not spec_suspended:
            phase, reason, message = "Pending", "Queued", f"waiting for admission by Kueue LocalQueue {queue}"
        else:
            phase, reason, message = "Pending", "Suspended", "spec.suspend is true; the runner Job is suspended"
    elif pod is not None and pod.get("status", {}).get("phase") in ("Running", "Succeeded"):
        # A runner that exited 0 is still Running until the Job controller marks its Job Complete.
        phase, reason, message = "Running", "Running", "the runner is working"
    elif unscheduled is not None:
        phase = "Pending"
        reason, message = unscheduled
    elif (problem := start_problem(pod, failed_create)) is not None:
        phase = "Pending"
        reason, message = problem
        created = job["metadata"].get("creationTimestamp")
        waited = _seconds_between(str(created), now) if created else 0.0
        if start_timeout is not None and waited > start_timeout:
            phase = "Failed"
            message += f" (the runner could not start for {waited:.0f} s; its Job is suspended and holds no slot)"
            completion_time = now
    else:
        phase, reason, message = "Pending", "Pending", "waiting for the runner pod to start"
    result = summary if finished and summary is not None and summary.artifacts is not None else None
    promoted = result.promotion if result is not None else None
    return CompressionJobStatus(
        observed_generation=generation,
        phase=phase,
        reason=reason,
        message=message,
        job=job["metadata"]["name"],
        # Only once the runner runs: while Pending the Job's startTime appearing would be one more write.
        start_time=job_status.get("startTime") if phase != "Pending" else None,
        completion_time=completion_time,
        progress=status_progress,
        result=result,
        promotedURI=promoted.uri if promoted is not None and promoted.promoted else None,
        conditions=_conditions(phase, reason, message, generation=generation, now=now),
    )


TRIALS_SHARE = 90.0
"""Percent of the run the trials stand for in status.progress (they train; the search after them does not)."""


def status_from_trials_job(
    job: dict[str, Any],
    pod: dict[str, Any] | None,
    generation: int,
    now: str,
    *,
    spec_suspended: bool = False,
    failed_create: str | None = None,
    start_timeout: float | None = None,
) -> CompressionJobStatus:
    """The status while the auto step's trials Job runs: as a runner Job's (``status_from_job``), with trials
    done of total as progress and message, ``trialsJob`` set and no runner Job yet.

    ``pod`` is the trial pod that decides: a failed one when the Job failed (its runner's summary), else the
    newest. A trials Job that completed is not finished for the CompressionJob: its runner Job comes next.
    """
    status = status_from_job(
        job,
        pod,
        generation,
        now,
        spec_suspended=spec_suspended,
        failed_create=failed_create,
        start_timeout=start_timeout,
    )
    update: dict[str, Any] = {"job": None, "trials_job": job["metadata"]["name"], "result": None}
    if status.phase == "Failed":
        message = f"a trial pod of {job['metadata']['name']} failed: {status.message}"
        update.update(
            message=message,
            conditions=_conditions("Failed", str(status.reason), message, generation=generation, now=now),
        )
        return status.model_copy(update=update)
    if (job.get("spec") or {}).get("suspend"):
        return status.model_copy(update=update)
    job_status = job.get("status") or {}
    total = int((job.get("spec") or {}).get("completions") or 1)
    done = min(int(job_status.get("succeeded") or 0), total)
    running = status.phase in ("Running", "Succeeded") or done > 0
    phase: Phase = "Running" if running else (status.phase or "Pending")
    reason = "TrialsRunning" if phase == "Running" else str(status.reason)
    message = f"training trials: {done} of {total} done" + ("" if phase == "Running" else f"; {status.message}")
    update.update(
        phase=phase,
        reason=reason,
        message=message,
        completion_time=None,
        progress=StatusProgress(
            phase="trials", percent=round(TRIALS_SHARE * done / total, 1), trial=done, trials=total, update_time=now
        ),
        conditions=_conditions(phase, reason, message, generation=generation, now=now),
    )
    return status.model_copy(update=update)


def settled(previous: CompressionJobStatus, desired: CompressionJobStatus) -> CompressionJobStatus:
    """The desired status with what only records *when* kept from the stored one, where nothing changed.

    A condition whose status did not change keeps its lastTransitionTime; progress that is the same
    keeps its updateTime. Without this every pass would write a new time.
    """
    kept = {condition.type: condition for condition in previous.conditions}
    conditions = [
        condition.model_copy(update={"last_transition_time": kept[condition.type].last_transition_time})
        if condition.type in kept and kept[condition.type].status == condition.status
        else condition
        for condition in desired.conditions
    ]
    progress = desired.progress
    if progress is not None and previous.progress is not None and progress.same_as(previous.progress):
        progress = previous.progress
    return desired.model_copy(update={"conditions": conditions, "progress": progress})


def status_patch(previous: CompressionJobStatus, desired: CompressionJobStatus) -> dict[str, Any]:
    """The merge patch of the top-level status fields that differ; empty when the status is up to date.

    Each changed field ends up exactly as desired (a key it no longer has is set to null, as a merge
    patch merges objects). A field the desired status leaves unset keeps its stored value (progress
    between two log reads, a suspended Job's startTime).
    """
    stored, wanted = previous.to_wire(), settled(previous, desired).to_wire()
    return {name: _merge_diff(stored.get(name), value) for name, value in wanted.items() if stored.get(name) != value}


def _merge_diff(old: Any, new: Any) -> Any:
    """What a JSON merge patch (RFC 7386) must say to turn ``old`` into ``new``."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    diff = {key: None for key in old if key not in new}
    diff.update({key: _merge_diff(old.get(key), value) for key, value in new.items() if old.get(key) != value})
    return diff
