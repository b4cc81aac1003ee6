"""One reconcile pass: admission, status and progress of every unfinished CompressionJob, level-triggered.

The pass is the only writer of ``.status``. It lists CompressionJobs, runner Jobs and runner pods,
starts what the concurrency limit allows (in creation order; the rest wait as Queued), and
recomputes each unfinished CompressionJob's whole status from what it found: its Job, the Job's
newest pod (the runner's summary in the termination message), and the running pod's log tail (the
runner's progress). Only the fields that differ from the stored status are patched, so a pass over
an unchanged cluster writes nothing, and a write that failed (an apiserver outage, missing RBAC) is
made by the next pass without waiting for another event. An Event is posted and a completion is
counted when a patch that changes the phase or reason succeeds.

Runs in a single loop (see main.py), woken by kopf's watch events and every interval, so two passes
never race each other. A failure on one CompressionJob is logged, counted
(``edgecompress_reconcile_errors_total``) and retried by the next pass; the pass goes on with the
others and still counts as completed, so one CompressionJob can never make the operator unready.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import ApiException

from edgecompress_contract.progress import ProgressEvent
from edgecompress_contract.spec import CompressionJobSpec, SpecError, parse_spec
from edgecompress_contract.status import CompressionJobStatus, Phase

from .. import kube
from ..admission import AdmissionPlan, Candidate, job_finished, job_suspended, plan_admission, queued_message
from ..config import Config
from ..events import post_event
from ..manifests import JOB_LABEL, RUNNER_CONTAINER, build_job, job_name, job_problems
from ..metrics import METRICS
from ..policy import Refusal, spec_refusal
from ..status import now_timestamp, parse_status, status_from_job, status_patch, waiting_status

logger = logging.getLogger("edgecompress.reconcile")

LOG_TAIL_LINES = 40
ACTION_TEXT = {
    "create": "creating the runner Job",
    "suspend": "suspending the runner Job",
    "resume": "resuming the runner Job",
    "status": "writing the status",
}
SUSPENDED_MESSAGE = "spec.suspend is true; the runner Job is created when it is set to false"


@dataclass
class PassResult:
    plan: AdmissionPlan
    patched: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    rejected_jobs: dict[tuple[str, str], str] = field(default_factory=dict)
    """CompressionJobs whose runner Job the apiserver refused as invalid, with its message."""


@dataclass(frozen=True)
class Desired:
    """The status a CompressionJob should have, and the text of the Event when its reason changes."""

    status: CompressionJobStatus
    event_message: str


INVALID_JOB = "InvalidJob"
JOB_LOST = "JobLost"


def _job_lost_message(job: str, spec: CompressionJobSpec) -> str:
    return (
        f"the runner Job {job} disappeared before its result was recorded (deleted, or removed by a short "
        "ttlSecondsAfterFinished); it is not started again, so the model is never compressed or promoted twice. "
        f"Its report.json may be in {spec.output.uri}; create a new CompressionJob to run again"
    )


def _refusal(spec: CompressionJobSpec, config: Config) -> Refusal | None:
    """Why this spec gets no runner Job: the operator's policy, or what the apiserver would refuse in the Job."""
    refusal = spec_refusal(spec, config)
    if refusal is not None:
        return refusal
    problems = job_problems(spec, config)
    return Refusal("InvalidSpec", "; ".join(problems)) if problems else None


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "")["message"])
    except (ValueError, KeyError, TypeError):
        return str(error.reason)


def _key(resource: dict[str, Any]) -> tuple[str, str]:
    return resource["metadata"]["namespace"], resource["metadata"]["name"]


def newest_pods(pods: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest pod of each Job, by (namespace, Job name)."""
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for pod in pods:
        meta = pod["metadata"]
        owner = next((ref["name"] for ref in meta.get("ownerReferences") or [] if ref.get("kind") == "Job"), None)
        owner = owner or (meta.get("labels") or {}).get("job-name")
        if owner is None:
            continue
        key = (meta["namespace"], owner)
        if key not in newest or str(meta.get("creationTimestamp")) > str(
            newest[key]["metadata"].get("creationTimestamp")
        ):
            newest[key] = pod
    return newest


def read_progress(job: dict[str, Any], pod: dict[str, Any] | None) -> ProgressEvent | None:
    """The newest progress event in the log of the Job's running pod; None when there is none to read yet."""
    if pod is None or job_finished(job) or (pod.get("status") or {}).get("phase") != "Running":
        return None
    meta = pod["metadata"]
    try:
        log = kube.pod_log_tail(meta["namespace"], meta["name"], RUNNER_CONTAINER, LOG_TAIL_LINES)
    except ApiException as error:
        logger.info("progress of %s/%s not readable yet: %s", meta["namespace"], meta["name"], error.reason)
        return None
    return ProgressEvent.newest_in_log(log)


def write_status(resource: dict[str, Any], previous: CompressionJobStatus, desired: Desired) -> bool:
    """Patches what differs; posts the Event and counts a completion when the phase or reason changed.

    True when it patched. A CompressionJob deleted meanwhile is skipped.
    """
    namespace, name = _key(resource)
    status = desired.status
    changes = status_patch(previous, status)
    if not changes:
        return False
    try:
        kube.patch_status(namespace, name, changes)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    if (previous.phase, previous.reason) != (status.phase, status.reason):
        post_event(resource, str(status.reason), desired.event_message, warning=status.phase == "Failed")
        if status.finished:
            METRICS.record_completion(status)
    return True


def _from_job(
    resource: dict[str, Any],
    spec: CompressionJobSpec,
    job: dict[str, Any],
    pod: dict[str, Any] | None,
    config: Config,
    *,
    read_events: bool = True,
) -> Desired:
    generation = int(resource["metadata"].get("generation", 1))
    waiting_for_pod = read_events and pod is None and not job_finished(job) and not job_suspended(job)
    failed_create = (
        kube.failed_create_message(job["metadata"]["namespace"], job["metadata"]["uid"])
        if (waiting_for_pod and job["metadata"].get("uid"))
        else None
    )
    status = status_from_job(
        job,
        pod,
        generation,
        now_timestamp(),
        spec_suspended=spec.suspend,
        progress=read_progress(job, pod),
        failed_create=failed_create,
        start_timeout=config.start_timeout_seconds,
    )
    if status.phase == "Failed" and not job_finished(job) and not job_suspended(job):
        # The runner never started: free its slot before the CompressionJob is recorded as finished.
        kube.set_job_suspended(job["metadata"]["namespace"], job["metadata"]["name"], True)
    return Desired(status, f"{status.phase}: {status.message}")


def _waiting(resource: dict[str, Any], reason: str, message: str, phase: Phase = "Pending") -> Desired:
    generation = int(resource["metadata"].get("generation", 1))
    return Desired(waiting_status(reason, message, generation, now_timestamp(), phase=phase), message)


@contextmanager
def _guarded(result: PassResult, key: tuple[str, str], action: str) -> Iterator[None]:
    """One CompressionJob's API calls: a failure is logged and counted, and the pass goes on with the others."""
    try:
        yield
    except Exception as error:
        reason = error.reason if isinstance(error, ApiException) else repr(error)
        logger.warning("%s for %s/%s failed: %s", ACTION_TEXT[action], key[0], key[1], reason)
        METRICS.reconcile_errors.labels(action=action).inc()
        if key not in result.failed:
            result.failed.append(key)


def reconcile_pass(config: Config) -> PassResult:
    """Lists CompressionJobs, runner Jobs and pods; admits, then writes every unfinished CompressionJob's status.

    A CompressionJob whose calls fail is listed in ``failed`` (and logged); the others are not held up.
    """
    namespace = config.watch_namespace
    jobs = {
        (job["metadata"]["namespace"], job["metadata"]["name"]): job for job in kube.list_jobs(namespace, JOB_LABEL)
    }
    pods = newest_pods(kube.list_pods(namespace, JOB_LABEL))
    candidates: list[Candidate] = []
    resources: dict[tuple[str, str], tuple[dict[str, Any], CompressionJobSpec]] = {}
    refused: dict[tuple[str, str], tuple[dict[str, Any], str, str]] = {}
    observed: dict[tuple[str, str], CompressionJobStatus] = {}
    for resource in kube.list_compression_jobs(namespace):
        meta = resource["metadata"]
        status = parse_status(meta["namespace"], meta["name"], resource.get("status") or {})
        if status.finished or meta.get("deletionTimestamp"):
            continue
        observed[_key(resource)] = status
        try:
            spec = parse_spec(dict(resource.get("spec") or {}))
        except SpecError as error:
            refused[_key(resource)] = (resource, "InvalidSpec", f"invalid spec: {error}")
            continue
        job = jobs.get((meta["namespace"], job_name(meta["name"], meta["uid"])))
        if job is None and status.job:
            refused[_key(resource)] = (resource, JOB_LOST, _job_lost_message(status.job, spec))
            continue
        refusal = _refusal(spec, config) if job is None else None
        if refusal is not None:  # decided before a Job exists; a running Job is left to finish
            refused[_key(resource)] = (resource, refusal.reason, refusal.message)
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
    result = PassResult(plan=plan_admission(candidates, config.max_concurrent_jobs))
    plan = result.plan
    acted = _admit(config, plan, resources, result, observed=observed)
    wanted: dict[tuple[str, str], tuple[dict[str, Any], Desired]] = {}
    for key, message in result.rejected_jobs.items():
        refused[key] = (resources[key][0], INVALID_JOB, message)
    for key, (resource, reason, message) in refused.items():
        wanted[key] = (resource, _waiting(resource, reason, message, "Failed"))
    METRICS.jobs.set_queue({candidate.key: place for place, candidate in enumerate(plan.queued, start=1)})
    for candidate in plan.queued:
        resource = resources[candidate.key][0]
        wanted[candidate.key] = (resource, _waiting(resource, "Queued", queued_message(config.max_concurrent_jobs)))
    for candidate in plan.waiting_suspended:
        resource = resources[candidate.key][0]
        wanted[candidate.key] = (resource, _waiting(resource, "Suspended", SUSPENDED_MESSAGE))
    for candidate in candidates:
        if candidate.job is None or candidate.key in wanted or candidate.key in acted:
            continue  # a Job just created, resumed or suspended: its watch event wakes the next pass
        resource, spec = resources[candidate.key]
        pod = pods.get((candidate.namespace, candidate.job["metadata"]["name"]))
        with _guarded(result, candidate.key, "status"):
            wanted[candidate.key] = (resource, _from_job(resource, spec, candidate.job, pod, config))
    for key, (resource, desired) in wanted.items():
        with _guarded(result, key, "status"):
            if write_status(resource, observed[key], desired):
                result.patched.append(key)
    return result


def _admit(
    config: Config,
    plan: AdmissionPlan,
    resources: dict[tuple[str, str], tuple[dict[str, Any], CompressionJobSpec]],
    result: PassResult,
    *,
    observed: dict[tuple[str, str], CompressionJobStatus],
) -> set[tuple[str, str]]:
    """Suspends, creates (in admission order) and resumes runner Jobs; returns the CompressionJobs acted on."""
    acted: set[tuple[str, str]] = set()
    for candidate in plan.suspend:
        assert candidate.job is not None
        resource = resources[candidate.key][0]
        acted.add(candidate.key)
        with _guarded(result, candidate.key, "suspend"):
            kube.set_job_suspended(candidate.namespace, candidate.job["metadata"]["name"], True)
            post_event(resource, "Suspended", "spec.suspend is true: suspended the runner Job")
    for candidate in plan.create:
        resource, spec = resources[candidate.key]
        meta = resource["metadata"]
        acted.add(candidate.key)
        with _guarded(result, candidate.key, "create"):
            manifest = build_job(meta["name"], meta["namespace"], meta["uid"], spec, config=config)
            try:
                created = kube.create_job(manifest)
            except ApiException as error:
                if error.status not in (400, 422):
                    raise
                result.rejected_jobs[candidate.key] = f"the apiserver refused the runner Job: {_api_message(error)}"
                continue
            if created:
                logger.info("created runner Job %s/%s", meta["namespace"], manifest["metadata"]["name"])
                post_event(resource, "JobCreated", f"created runner Job {manifest['metadata']['name']}")
            # Recorded at once (the status a Job without a pod gives): a Job that vanishes before its
            # result is recorded is then never created again, and the next pass has nothing to add.
            starting = _from_job(resource, spec, manifest, None, config, read_events=False)
            write_status(resource, observed[candidate.key], starting)
    for candidate in plan.resume:
        assert candidate.job is not None
        resource = resources[candidate.key][0]
        acted.add(candidate.key)
        with _guarded(result, candidate.key, "resume"):
            kube.set_job_suspended(candidate.namespace, candidate.job["metadata"]["name"], False)
            post_event(resource, "Resumed", "resumed the runner Job")
    return acted
