"""One admission pass: start what the concurrency limit allows, in creation order; mark the rest Queued.

Runs in a single loop (see main.py), woken by CompressionJob and Job events and every
``admission_interval_seconds``, so two passes never race each other.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from edgecompress_contract.spec import CompressionJobSpec, SpecError, parse_spec

from .. import kube
from ..admission import TERMINAL_PHASES, AdmissionPlan, Candidate, plan_admission, queued_message
from ..config import Config
from ..events import post_event
from ..manifests import JOB_LABEL, build_job, job_name
from ..metrics import METRICS
from ..policy import TRUSTED_CODE_NOT_ALLOWED, spec_policy_problem
from ..status import waiting_status

logger = logging.getLogger("edgecompress.admission")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _set_waiting(resource: dict[str, Any], reason: str, message: str, phase: str = "Pending") -> dict[str, Any]:
    """Patches the status of a CompressionJob without a running Job; an Event when the reason changes."""
    meta = resource["metadata"]
    previous = resource.get("status") or {}
    status = waiting_status(reason, message, int(meta.get("generation", 1)), _now(), phase)
    if all(previous.get(key) == status[key] for key in ("phase", "reason", "message", "observedGeneration")):
        return status
    kube.patch_status(meta["namespace"], meta["name"], status)
    if previous.get("reason") != reason:
        post_event(resource, reason, message, warning=phase == "Failed")
    return status


def admission_pass(config: Config) -> AdmissionPlan:
    jobs = {
        (job["metadata"]["namespace"], job["metadata"]["name"]): job
        for job in kube.list_jobs(config.watch_namespace, JOB_LABEL)
    }
    candidates: list[Candidate] = []
    resources: dict[tuple[str, str], tuple[dict[str, Any], CompressionJobSpec]] = {}
    for resource in kube.list_compression_jobs(config.watch_namespace):
        meta = resource["metadata"]
        if (resource.get("status") or {}).get("phase") in TERMINAL_PHASES or meta.get("deletionTimestamp"):
            continue
        try:
            spec = parse_spec(dict(resource.get("spec") or {}))
        except SpecError as error:
            METRICS.record_completion(_set_waiting(resource, "InvalidSpec", f"invalid spec: {error}", "Failed"))
            continue
        job = jobs.get((meta["namespace"], job_name(meta["name"], meta["uid"])))
        refused = spec_policy_problem(spec, config) if job is None else None
        if refused is not None:  # decided before a Job exists; a running Job is left to finish
            METRICS.record_completion(_set_waiting(resource, TRUSTED_CODE_NOT_ALLOWED, refused, "Failed"))
            continue
        candidate = Candidate(
            namespace=meta["namespace"],
            name=meta["name"],
            created=meta["creationTimestamp"],
            suspended=spec.suspend,
            kueue=bool(spec.queue_name),
            job=job,
        )
        candidates.append(candidate)
        resources[candidate.key] = (resource, spec)
    plan = plan_admission(candidates, config.max_concurrent_jobs)
    for candidate in plan.suspend:
        assert candidate.job is not None
        kube.set_job_suspended(candidate.namespace, candidate.job["metadata"]["name"], True)
        post_event(resources[candidate.key][0], "Suspended", "spec.suspend is true: suspended the runner Job")
    for candidate in plan.create:
        resource, spec = resources[candidate.key]
        meta = resource["metadata"]
        manifest = build_job(meta["name"], meta["namespace"], meta["uid"], spec, config)
        if kube.create_job(manifest):
            logger.info("created runner Job %s/%s", meta["namespace"], manifest["metadata"]["name"])
            post_event(resource, "JobCreated", f"created runner Job {manifest['metadata']['name']}")
    for candidate in plan.resume:
        assert candidate.job is not None
        kube.set_job_suspended(candidate.namespace, candidate.job["metadata"]["name"], False)
        post_event(resources[candidate.key][0], "Resumed", "resumed the runner Job")
    for position, candidate in enumerate(plan.queued, start=1):
        message = queued_message(position, len(plan.queued), config.max_concurrent_jobs)
        _set_waiting(resources[candidate.key][0], "Queued", message)
    for candidate in plan.waiting_suspended:
        _set_waiting(
            resources[candidate.key][0],
            "Suspended",
            "spec.suspend is true; the runner Job is created when it is set to false",
        )
    return plan
