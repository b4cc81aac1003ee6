"""One reconcile pass: admission, status and progress of every unfinished CompressionJob, level-triggered.

The pass is the only writer of ``.status``. It reads CompressionJobs, runner Jobs and runner pods
from the watch-fed caches (informer.py), starts what the concurrency limit allows (in creation
order; the rest wait as Queued), and recomputes each unfinished CompressionJob's whole status from
what it found: its Job, the Job's newest pod (the runner's summary in the termination message),
and the running pod's log tail (the runner's progress). Only the fields that differ from the stored
status are patched, so a pass over an unchanged cluster writes nothing, and a write that failed (an
apiserver outage, missing RBAC) is made by the next pass without waiting for another event. Job
creates and status writes run in parallel, at most ``max_parallel_writes`` at once. A finished
CompressionJob's runner Job is deleted by the pass ``ttlSecondsAfterFinished`` after its outcome
was recorded (``ttl_expired``), never before.

An auto step with training trials has two Jobs, one after the other: admission creates the Indexed
trials Job (holding a slot per parallel trial pod, recorded in ``status.trialsJob``); the pass that
finds it complete creates the runner Job, which searches among the trials' results, in the same slot.

Each status write is conditional on the resourceVersion the pass read, so a phase change is
recorded in the apiserver exactly once; its Event and, for a finished job, the completion metric
are emitted by the write that recorded it, and only by that write. A restarted operator therefore
never counts a completion already recorded, and counts one that happened while it was down once,
when it records it.

Runs in a single loop (see main.py), woken by kopf's watch events and every interval, so two passes
never race each other. A failure on one CompressionJob is logged, counted
(``edgecompress_reconcile_errors_total``) and retried by the next pass; the pass goes on with the
others and still counts as completed, so one CompressionJob can never make the operator unready.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from kubernetes.client import ApiException

from edgecompress_contract.progress import ProgressEvent
from edgecompress_contract.spec import CompressionJobSpec, SpecError, parse_spec
from edgecompress_contract.status import CompressionJobStatus, Phase
from edgecompress_contract.trials import trials_of

from .. import kube
from ..admission import (
    AdmissionPlan,
    Candidate,
    job_complete,
    job_finished,
    job_suspended,
    plan_admission,
    queued_message,
)
from ..config import Config
from ..events import post_event
from ..informer import resource_version
from ..manifests import (
    RUNNER_CONTAINER,
    TRIALS_COMPONENT,
    build_job,
    build_trials_job,
    job_name,
    job_problems,
    trial_slots,
    trials_job_name,
    ttl_seconds_after_finished,
)
from ..metrics import METRICS
from ..policy import Refusal, spec_refusal
from ..status import (
    now_timestamp,
    parse_status,
    parse_time,
    runner_summary,
    status_from_job,
    status_from_trials_job,
    status_patch,
    waiting_status,
)

logger = logging.getLogger("edgecompress.reconcile")

LOG_TAIL_LINES = 40
ACTION_TEXT = {
    "create": "creating the runner Job",
    "suspend": "suspending the runner Job",
    "resume": "resuming the runner Job",
    "status": "writing the status",
    "delete": "deleting the finished runner Job",
    "create-after-trials": "creating the runner Job after the trials",
}
SUSPENDED_MESSAGE = "spec.suspend is true; the runner Job is created when it is set to false"


class ClusterView(Protocol):
    """What a pass reads (watch-fed caches) and where it puts the objects its own writes returned."""

    def compression_jobs(self) -> list[dict[str, Any]]: ...

    def jobs(self) -> list[dict[str, Any]]: ...

    def pods(self) -> list[dict[str, Any]]: ...

    def failed_creates(self) -> list[dict[str, Any]]: ...

    def store(self, kind: str, item: dict[str, Any]) -> None: ...


Inputs = tuple[str, str, str | None, str | None]
"""What a CompressionJob's status is computed from: its resourceVersion, its kind of wait or "Job", and the
resourceVersions of its Job and of its pod (or, while it has none, of the Job's newest FailedCreate Event)."""


@dataclass
class PassMemory:
    """What passes remember between them: reads of logs, and parsed specs and statuses.

    Passes run on every watch event, so without this a busy cluster would read every running pod's
    log many times a second (they are read at most every ``progress_interval_seconds``), and a
    burst of new CompressionJobs would parse every spec again on each of its many passes. A spec
    is parsed again when its generation changes, a status when its resourceVersion does.
    """

    progress: dict[str, tuple[float, ProgressEvent | None]] = field(default_factory=dict)
    specs: dict[str, tuple[int, CompressionJobSpec | SpecError]] = field(default_factory=dict)
    statuses: dict[str, tuple[str, CompressionJobStatus]] = field(default_factory=dict)
    up_to_date: dict[str, tuple[Inputs, float]] = field(default_factory=dict)
    """CompressionJobs whose stored status was what these inputs give, and when that was found."""

    def settled(self, resource: dict[str, Any], inputs: Inputs) -> None:
        self.up_to_date[resource["metadata"]["uid"]] = (inputs, time.monotonic())

    def unchanged(self, resource: dict[str, Any], inputs: Inputs, interval: float) -> bool:
        """True when the status was found up to date with the same inputs less than ``interval`` s ago.

        A pass skips such a CompressionJob: its status is a function of these inputs, apart from
        what depends on the time (a start timeout, progress, FailedCreate), which is then
        recomputed at least every pass interval, as before. A burst of events then costs each pass
        only the CompressionJobs that changed.
        """
        known = self.up_to_date.get(resource["metadata"]["uid"])
        return known is not None and known[0] == inputs and time.monotonic() - known[1] < interval

    def forget_all_but(self, *, pods: set[str], compression_jobs: set[str]) -> None:
        self.progress = {uid: read for uid, read in self.progress.items() if uid in pods}
        self.specs = {uid: spec for uid, spec in self.specs.items() if uid in compression_jobs}
        self.statuses = {uid: status for uid, status in self.statuses.items() if uid in compression_jobs}
        self.up_to_date = {uid: known for uid, known in self.up_to_date.items() if uid in compression_jobs}

    def spec(self, resource: dict[str, Any]) -> CompressionJobSpec:
        """The parsed spec (raises SpecError), parsed once per generation."""
        meta = resource["metadata"]
        generation = int(meta.get("generation", 1))
        known = self.specs.get(meta["uid"])
        if known is None or known[0] != generation:
            try:
                parsed: CompressionJobSpec | SpecError = parse_spec(dict(resource.get("spec") or {}))
            except SpecError as error:
                parsed = error
            known = self.specs[meta["uid"]] = (generation, parsed)
        if isinstance(known[1], SpecError):
            raise known[1]
        return known[1]

    def status(self, resource: dict[str, Any]) -> CompressionJobStatus:
        """The stored status as the model, parsed once per resourceVersion."""
        meta = resource["metadata"]
        version = str(meta.get("resourceVersion") or "")
        known = self.statuses.get(meta["uid"])
        if known is None or known[0] != version or not version:
            known = (version, parse_status(meta["namespace"], meta["name"], resource.get("status") or {}))
            self.statuses[meta["uid"]] = known
        return known[1]


@dataclass
class PassResult:
    plan: AdmissionPlan
    patched: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    rejected_jobs: dict[tuple[str, str], str] = field(default_factory=dict)
    """CompressionJobs whose runner Job the apiserver refused as invalid, with its message."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    """The writes of a pass run in parallel threads and report here."""


@dataclass(frozen=True)
class Desired:
    """The status a CompressionJob should have, and the text of the Event when its reason changes."""

    status: CompressionJobStatus
    event_message: str
    event_reason: str | None = None
    """The Event's reason when not the status's (JobCreated for the status written with the create)."""


INVALID_JOB = "InvalidJob"
JOB_LOST = "JobLost"


def _job_lost_message(job: str, spec: CompressionJobSpec) -> str:
    return (
        f"the runner Job {job} disappeared before its result was recorded (deleted by hand or by another "
        "controller); it is not started again, so the model is never compressed or promoted twice. "
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


def ttl_expired(status: CompressionJobStatus, *, ttl_seconds: int, now: float) -> bool:
    """Whether ``ttl_seconds`` have passed since the finished CompressionJob's outcome was recorded.

    The operator deletes runner Jobs itself rather than through the Job's own ``ttlSecondsAfterFinished``:
    the TTL controller can delete a Job (and its pod, which holds the runner's summary) as soon as it
    finishes, before the operator read the outcome, and the CompressionJob would end JobLost.
    """
    ready = status.condition("Ready")
    recorded = status.completion_time or (ready.last_transition_time if ready is not None else None)
    return recorded is not None and parse_time(recorded).timestamp() + ttl_seconds <= now


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


def _recently(reads: dict[str, tuple[float, Any]], uid: str | None, interval: float, read: Callable[[], Any]) -> Any:
    """``read()``, or what it returned for ``uid`` less than ``interval`` seconds ago."""
    now = time.monotonic()
    if uid is not None and uid in reads and now - reads[uid][0] < interval:
        return reads[uid][1]
    value = read()
    if uid is not None:
        reads[uid] = (now, value)
    return value


def read_progress(
    job: dict[str, Any], pod: dict[str, Any] | None, memory: PassMemory, interval: float
) -> ProgressEvent | None:
    """The newest progress event in the log of the Job's running pod (at most every ``interval`` s)."""
    if pod is None or job_finished(job) or (pod.get("status") or {}).get("phase") != "Running":
        return None
    meta = pod["metadata"]

    def read() -> ProgressEvent | None:
        try:
            log = kube.pod_log_tail(meta["namespace"], meta["name"], RUNNER_CONTAINER, LOG_TAIL_LINES)
        except ApiException as error:
            logger.info("progress of %s/%s not readable yet: %s", meta["namespace"], meta["name"], error.reason)
            return None
        return ProgressEvent.newest_in_log(log)

    return _recently(memory.progress, meta.get("uid"), interval, read)  # type: ignore[no-any-return]


def write_status(
    resource: dict[str, Any], previous: CompressionJobStatus, desired: Desired, cluster: ClusterView
) -> bool:
    """Patches what differs, if the CompressionJob is still as read; True when this write recorded the change.

    A change of phase or reason that this write recorded gets its Event and, when the job finished,
    its completion counted: once per transition, since the write is conditional (kube.patch_status).
    A CompressionJob changed meanwhile (409) is read again for the next pass; one deleted is skipped.
    """
    namespace, name = _key(resource)
    status = desired.status
    changes = status_patch(previous, status)
    if not changes:
        return False
    stored: dict[str, Any] | None
    try:
        stored = kube.patch_status(namespace, name, changes, str(resource["metadata"].get("resourceVersion") or ""))
    except ApiException as error:
        if error.status == 404:
            return False
        if error.status != 409:
            raise
        logger.info("%s/%s changed since this pass read it; the next pass writes its status", namespace, name)
        fresh = kube.read_compression_job(namespace, name)
        if fresh is not None:
            cluster.store(kube.COMPRESSION_JOBS, fresh)
        return False
    except Exception:
        stored = _landed_anyway(resource, status)
        if stored is None:
            raise
    assert stored is not None
    cluster.store(kube.COMPRESSION_JOBS, stored)
    if (previous.phase, previous.reason) != (status.phase, status.reason):
        reason = desired.event_reason or str(status.reason)
        post_event(resource, reason, desired.event_message, warning=status.phase == "Failed")
        if status.finished:
            METRICS.record_completion(status)
    return True


def _landed_anyway(resource: dict[str, Any], status: CompressionJobStatus) -> dict[str, Any] | None:
    """After a write whose answer was lost (a timeout, a dropped connection): the object, if the write landed.

    It landed when the stored object is newer than the one written from and has the written phase,
    reason and message (only this operator writes status). Then its transition is this write's.
    """
    namespace, name = _key(resource)
    try:
        stored = kube.read_compression_job(namespace, name)
    except Exception:
        return None
    if stored is None or resource_version(stored) <= resource_version(resource):
        return None
    now = parse_status(namespace, name, stored.get("status") or {})
    return stored if (now.phase, now.reason, now.message) == (status.phase, status.reason, status.message) else None


def _from_job(
    resource: dict[str, Any],
    spec: CompressionJobSpec,
    job: dict[str, Any],
    pod: dict[str, Any] | None,
    config: Config,
    *,
    memory: PassMemory,
    failed_create: dict[str, Any] | None = None,
) -> Desired:
    """The status the Job (a runner Job, or the Indexed Job of the auto step's trials) and its pod give."""
    generation = int(resource["metadata"].get("generation", 1))
    now = now_timestamp()
    failure = str(failed_create.get("message") or "") if failed_create and pod is None else None
    if _is_trials_job(job):
        status = status_from_trials_job(
            job,
            pod,
            generation,
            now,
            spec_suspended=spec.suspend,
            failed_create=failure,
            start_timeout=config.start_timeout_seconds,
        )
    else:
        status = status_from_job(
            job,
            pod,
            generation,
            now,
            spec_suspended=spec.suspend,
            progress=read_progress(job, pod, memory, config.progress_interval_seconds),
            failed_create=failure,
            start_timeout=config.start_timeout_seconds,
        )
    if status.phase == "Failed" and not job_finished(job) and not job_suspended(job):
        # The runner never started: free its slot before the CompressionJob is recorded as finished.
        kube.set_job_suspended(job["metadata"]["namespace"], job["metadata"]["name"], True)
    return Desired(status, f"{status.phase}: {status.message}")


def newest_failed_creates(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest FailedCreate Event of each Job, by the Job's uid (why the Job controller cannot create its pod)."""
    newest: dict[str, dict[str, Any]] = {}
    for event in events:
        uid = (event.get("involvedObject") or {}).get("uid")
        when = str(event.get("lastTimestamp") or event.get("eventTime") or "")
        if uid and (uid not in newest or when > str(newest[uid].get("lastTimestamp") or newest[uid].get("eventTime"))):
            newest[uid] = event
    return newest


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
        with result.lock:
            if key not in result.failed:
                result.failed.append(key)


def run_parallel(tasks: list[Callable[[], None]], limit: int) -> None:
    """Runs the tasks (each guarded, so none raises) with at most ``limit`` at once; returns when all ended."""
    if len(tasks) <= 1 or limit <= 1:
        for task in tasks:
            task()
        return
    with ThreadPoolExecutor(max_workers=min(limit, len(tasks)), thread_name_prefix="reconcile-write") as pool:
        for future in [pool.submit(task) for task in tasks]:
            future.result()


def _owned_job(
    namespace: str, name: str, recorded: str | None, jobs: dict[tuple[str, str], dict[str, Any]], cluster: ClusterView
) -> dict[str, Any] | None:
    """A Job of the CompressionJob: from the cache, or read directly when the status records one the cache lacks.

    The cache can lag a Job just created; only a Job the apiserver does not have is lost.
    """
    job = jobs.get((namespace, name))
    if job is None and recorded:
        job = kube.read_job(namespace, recorded)
        if job is not None:
            cluster.store(kube.JOBS, job)
    return job


def _trial_pod(job: dict[str, Any], cached: dict[str, Any] | None, cluster: ClusterView) -> dict[str, Any] | None:
    """The trial pod that decides a trials Job's status: one whose runner failed if the Job failed, else the newest."""
    if not job_finished(job) or job_complete(job):
        return cached
    pods = _read_job_pods(job, cluster)
    failed = [pod for pod in pods if (summary := runner_summary(pod)) is not None and summary.result != "Succeeded"]
    return newest_pods(failed or pods).get(_key(job), cached)


def _read_job_pods(job: dict[str, Any], cluster: ClusterView) -> list[dict[str, Any]]:
    """The Job's pods read from the apiserver (the cache can lag a finished Job's pods), and put in the cache."""
    meta = job["metadata"]
    pods = kube.list_job_pods(meta["namespace"], meta["name"])
    for pod in pods:
        cluster.store(kube.PODS, pod)
    return pods


def _create_runner_after_trials(
    resource: dict[str, Any],
    spec: CompressionJobSpec,
    trials_job: dict[str, Any],
    *,
    previous: CompressionJobStatus,
    config: Config,
    cluster: ClusterView,
    memory: PassMemory,
) -> dict[str, Any]:
    """Every trial completed: creates the runner Job (search and pick) and records it at once, like an admission.

    The CompressionJob keeps the slot its trials held, so this does not wait in the queue.
    """
    meta = resource["metadata"]
    manifest = build_job(meta["name"], meta["namespace"], meta["uid"], spec, config=config)
    created = kube.create_job(manifest)
    job = created or manifest
    if created is not None:
        logger.info("created runner Job %s/%s after the trials", meta["namespace"], manifest["metadata"]["name"])
        cluster.store(kube.JOBS, created)
    starting = _from_job(resource, spec, job, None, config, memory=memory)
    total = int((trials_job.get("spec") or {}).get("completions") or 0)
    message = f"created runner Job {manifest['metadata']['name']} after {total} trials: {starting.status.message}"
    write_status(resource, previous, Desired(starting.status, message, "JobCreated" if created else None), cluster)
    return job


def _runner_pod(job: dict[str, Any], cached: dict[str, Any] | None, cluster: ClusterView) -> dict[str, Any] | None:
    """The Job's newest pod; read directly when the Job has finished but the cached pod has not (yet).

    The Job's and the pods' watches are separate streams, so the Job's end can arrive first; the
    result (the runner's summary) is in the pod, and a finished job's status is written only once.
    """
    if not job_finished(job) or (cached is not None and runner_summary(cached) is not None):
        return cached
    return newest_pods(_read_job_pods(job, cluster)).get(_key(job), cached)


def reconcile_pass(config: Config, cluster: ClusterView, memory: PassMemory | None = None) -> PassResult:
    """Reads CompressionJobs, runner Jobs and pods from the caches; admits, then writes every unfinished status.

    A CompressionJob whose calls fail is listed in ``failed`` (and logged); the others are not held up.
    """
    memory = memory if memory is not None else PassMemory()
    jobs = {_key(job): job for job in cluster.jobs()}
    cached_pods = cluster.pods()
    pods = newest_pods(cached_pods)
    failed_creates = newest_failed_creates(cluster.failed_creates())
    compression_jobs = cluster.compression_jobs()
    memory.forget_all_but(
        pods={pod["metadata"].get("uid") for pod in cached_pods},
        compression_jobs={resource["metadata"].get("uid") for resource in compression_jobs},
    )
    candidates: list[Candidate] = []
    resources: dict[tuple[str, str], tuple[dict[str, Any], CompressionJobSpec]] = {}
    refused: dict[tuple[str, str], tuple[dict[str, Any], str, str]] = {}
    observed: dict[tuple[str, str], CompressionJobStatus] = {}
    expired: list[tuple[tuple[str, str], dict[str, Any]]] = []
    result = PassResult(plan=AdmissionPlan())
    started: set[tuple[str, str]] = set()
    """CompressionJobs whose runner Job this pass created after their trials (their status is written)."""
    for resource in compression_jobs:
        meta = resource["metadata"]
        status = memory.status(resource)
        if status.finished and not meta.get("deletionTimestamp"):
            finished_jobs = [
                jobs[(meta["namespace"], name)]
                for name in (job_name(meta["name"], meta["uid"]), trials_job_name(meta["name"], meta["uid"]))
                if (meta["namespace"], name) in jobs
            ]
            if finished_jobs and ttl_expired(
                status, ttl_seconds=_ttl_seconds(resource, memory, config), now=time.time()
            ):
                expired.extend((_key(resource), job) for job in finished_jobs)
        if status.finished or meta.get("deletionTimestamp"):
            continue
        observed[_key(resource)] = status
        try:
            spec = memory.spec(resource)
        except SpecError as error:
            refused[_key(resource)] = (resource, "InvalidSpec", f"invalid spec: {error}")
            continue
        job: dict[str, Any] | None = None
        trials_job: dict[str, Any] | None = None
        with _guarded(result, _key(resource), "status"):
            namespace, uid = meta["namespace"], meta["uid"]
            job = _owned_job(namespace, job_name(meta["name"], uid), status.job, jobs, cluster)
            if job is None and status.job:
                refused[_key(resource)] = (resource, JOB_LOST, _job_lost_message(status.job, spec))
                continue
            if job is None and trials_of(spec):
                trials_name = trials_job_name(meta["name"], uid)
                trials_job = _owned_job(namespace, trials_name, status.trials_job, jobs, cluster)
                if trials_job is None and status.trials_job:
                    refused[_key(resource)] = (resource, JOB_LOST, _job_lost_message(status.trials_job, spec))
                    continue
        if trials_job is not None and job_complete(trials_job):
            with _guarded(result, _key(resource), "create-after-trials"):
                job = _create_runner_after_trials(
                    resource, spec, trials_job, previous=status, config=config, cluster=cluster, memory=memory
                )
                trials_job = None
                started.add(_key(resource))
        if _key(resource) in result.failed:
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
            job=job or trials_job,
            slots=trial_slots(spec, config) if job is None and trials_of(spec) else 1,
        )
        candidates.append(candidate)
        resources[candidate.key] = (resource, spec)
    result.plan = plan = plan_admission(candidates, config.max_concurrent_jobs)
    acted = _admit(config, plan, resources, result, observed=observed, cluster=cluster, memory=memory) | started
    wanted: dict[tuple[str, str], tuple[dict[str, Any], Desired]] = {}
    for key, message in result.rejected_jobs.items():
        refused[key] = (resources[key][0], INVALID_JOB, message)
    for key, (resource, reason, message) in refused.items():
        wanted[key] = (resource, _waiting(resource, reason, message, "Failed"))
    METRICS.jobs.set_queue({candidate.key: place for place, candidate in enumerate(plan.queued, start=1)})
    inputs: dict[tuple[str, str], Inputs] = {}
    for reason, waiting in (("Queued", plan.queued), ("Suspended", plan.waiting_suspended)):
        for candidate in waiting:
            resource = resources[candidate.key][0]
            inputs[candidate.key] = (str(resource["metadata"].get("resourceVersion")), reason, None, None)
            if not memory.unchanged(resource, inputs[candidate.key], config.pass_interval_seconds):
                message = queued_message(config.max_concurrent_jobs) if reason == "Queued" else SUSPENDED_MESSAGE
                wanted[candidate.key] = (resource, _waiting(resource, reason, message))
    for candidate in candidates:
        if candidate.job is None or candidate.key in inputs or candidate.key in acted:
            continue  # a Job just created, resumed or suspended: its watch event wakes the next pass
        resource, spec = resources[candidate.key]
        cached_pod = pods.get((candidate.namespace, candidate.job["metadata"]["name"]))
        failed_create = failed_creates.get(str(candidate.job["metadata"].get("uid")))
        inputs[candidate.key] = (
            str(resource["metadata"].get("resourceVersion")),
            "Job",
            str(candidate.job["metadata"].get("resourceVersion")),
            str((cached_pod or failed_create or {}).get("metadata", {}).get("resourceVersion")),
        )
        if memory.unchanged(resource, inputs[candidate.key], config.pass_interval_seconds):
            continue
        with _guarded(result, candidate.key, "status"):
            find_pod = _trial_pod if _is_trials_job(candidate.job) else _runner_pod
            pod = find_pod(candidate.job, cached_pod, cluster)
            desired = _from_job(resource, spec, candidate.job, pod, config, memory=memory, failed_create=failed_create)
            wanted[candidate.key] = (resource, desired)

    def write(key: tuple[str, str], resource: dict[str, Any], desired: Desired) -> Callable[[], None]:
        def task() -> None:
            with _guarded(result, key, "status"):
                if write_status(resource, observed[key], desired, cluster):
                    with result.lock:
                        result.patched.append(key)

        return task

    changed = {key: item for key, item in wanted.items() if status_patch(observed[key], item[1].status)}
    for key in inputs.keys() & (wanted.keys() - changed.keys()):
        memory.settled(wanted[key][0], inputs[key])

    def delete(key: tuple[str, str], job: dict[str, Any]) -> Callable[[], None]:
        def task() -> None:
            with _guarded(result, key, "delete"):
                kube.delete_job(job["metadata"]["namespace"], job["metadata"]["name"])

        return task

    run_parallel(
        [write(key, resource, desired) for key, (resource, desired) in changed.items()]
        + [delete(key, job) for key, job in expired],
        config.max_parallel_writes,
    )
    return result


def _is_trials_job(job: dict[str, Any]) -> bool:
    labels = job["metadata"].get("labels") or {}
    return labels.get("app.kubernetes.io/component") == TRIALS_COMPONENT


def _ttl_seconds(resource: dict[str, Any], memory: PassMemory, config: Config) -> int:
    try:
        return ttl_seconds_after_finished(memory.spec(resource), config)
    except SpecError:
        return config.default_ttl_seconds_after_finished


def _admit(
    config: Config,
    plan: AdmissionPlan,
    resources: dict[tuple[str, str], tuple[dict[str, Any], CompressionJobSpec]],
    result: PassResult,
    *,
    observed: dict[tuple[str, str], CompressionJobStatus],
    cluster: ClusterView,
    memory: PassMemory,
) -> set[tuple[str, str]]:
    """Suspends, creates (in parallel, bounded) and resumes runner Jobs; returns the CompressionJobs acted on."""
    acted: set[tuple[str, str]] = set()
    for candidate in plan.suspend:
        assert candidate.job is not None
        resource = resources[candidate.key][0]
        acted.add(candidate.key)
        with _guarded(result, candidate.key, "suspend"):
            kube.set_job_suspended(candidate.namespace, candidate.job["metadata"]["name"], True)
            post_event(resource, "Suspended", "spec.suspend is true: suspended the runner Job")

    def create(candidate: Candidate) -> None:
        resource, spec = resources[candidate.key]
        meta = resource["metadata"]
        trials = len(trials_of(spec))
        with _guarded(result, candidate.key, "create"):
            build = build_trials_job if trials else build_job
            manifest = build(meta["name"], meta["namespace"], meta["uid"], spec, config=config)
            try:
                created = kube.create_job(manifest)
            except ApiException as error:
                if error.status not in (400, 422):
                    raise
                with result.lock:
                    result.rejected_jobs[candidate.key] = f"the apiserver refused the runner Job: {_api_message(error)}"
                return
            if created is not None:
                logger.info("created runner Job %s/%s", meta["namespace"], manifest["metadata"]["name"])
                cluster.store(kube.JOBS, created)
            # Recorded at once (the status a Job without a pod gives): a Job that vanishes before its
            # result is recorded is then never created again, and the next pass has nothing to add.
            starting = _from_job(resource, spec, created or manifest, None, config, memory=memory)
            created_text = f"created runner Job {manifest['metadata']['name']}"
            if trials:
                created_text = f"created trials Job {manifest['metadata']['name']} ({trials} trials, "
                created_text += f"{manifest['spec']['parallelism']} at once)"
            message = f"{created_text}: {starting.status.message}" if created else starting.event_message
            write_status(
                resource,
                observed[candidate.key],
                Desired(starting.status, message, "JobCreated" if created else None),
                cluster,
            )

    acted.update(candidate.key for candidate in plan.create)
    run_parallel([partial(create, candidate) for candidate in plan.create], config.max_parallel_writes)
    for candidate in plan.resume:
        assert candidate.job is not None
        resource = resources[candidate.key][0]
        acted.add(candidate.key)
        with _guarded(result, candidate.key, "resume"):
            kube.set_job_suspended(candidate.namespace, candidate.job["metadata"]["name"], False)
            post_event(resource, "Resumed", "resumed the runner Job")
    return acted
