"""Which CompressionJobs may run now: the global concurrency limit and spec.suspend, as a pure plan.

GPUs are scarce, so at most ``limit`` runner pods run at once across the watched namespaces (a
trials Job counts its parallelism, an ordinary runner Job one). A
CompressionJob over the limit gets no Job at all (so it holds no GPU and no pod) and waits as
Pending/Queued; waiting jobs start in creation order (creationTimestamp, then namespace and name,
as the apiserver's timestamps have one-second resolution). Jobs with ``spec.queueName`` are
queued by Kueue instead and do not count against this limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Candidate:
    """A CompressionJob that has not finished, with its runner Job if one exists."""

    namespace: str
    name: str
    created: str
    suspended: bool
    kueue: bool
    job: dict[str, Any] | None = None
    slots: int = 1
    """Runner pods its Job runs at once: 1, or the trials Job's parallelism while the auto step's trials run."""

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


@dataclass
class AdmissionPlan:
    create: list[Candidate] = field(default_factory=list)
    resume: list[Candidate] = field(default_factory=list)
    suspend: list[Candidate] = field(default_factory=list)
    waiting_suspended: list[Candidate] = field(default_factory=list)
    queued: list[Candidate] = field(default_factory=list)
    running: int = 0


def _job_condition(job: dict[str, Any], *kinds: str) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in kinds and c.get("status") == "True" for c in conditions)


def job_finished(job: dict[str, Any]) -> bool:
    return _job_condition(job, "Complete", "Failed")


def job_complete(job: dict[str, Any]) -> bool:
    return _job_condition(job, "Complete")


def job_suspended(job: dict[str, Any]) -> bool:
    return bool((job.get("spec") or {}).get("suspend"))


def plan_admission(candidates: list[Candidate], limit: int) -> AdmissionPlan:
    """Decides which Jobs to create, resume or suspend, and which CompressionJobs wait (in order)."""
    plan = AdmissionPlan()
    waiting: list[Candidate] = []
    for candidate in sorted(candidates, key=lambda c: (c.created, c.namespace, c.name)):
        job = candidate.job
        if candidate.kueue:
            if job is None and not candidate.suspended:
                plan.create.append(candidate)
            elif job is None:
                plan.waiting_suspended.append(candidate)
        elif candidate.suspended:
            if job is None:
                plan.waiting_suspended.append(candidate)
            elif not job_suspended(job) and not job_finished(job):
                plan.suspend.append(candidate)
        elif job is not None and (job_finished(job) or not job_suspended(job)):
            plan.running += 0 if job_finished(job) else candidate.slots
        else:
            waiting.append(candidate)
    free = max(limit - plan.running, 0)
    admitted = 0
    for candidate in waiting:
        if candidate.slots > free:
            break
        free -= candidate.slots
        admitted += 1
        (plan.create if candidate.job is None else plan.resume).append(candidate)
    plan.queued = waiting[admitted:]
    return plan


def queued_message(limit: int) -> str:
    """The same text for every queued job, so the queue moving writes no status; the position is a metric."""
    return (
        f"waiting for a free runner slot: the limit of {limit} concurrently running runner Jobs (the operator's "
        "maxConcurrentJobs) is reached; queued jobs start in creation order (their place: the metric "
        "edgecompress_compressionjob_queue_position)"
    )
