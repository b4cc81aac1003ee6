"""The reconcile pass against a fake API: one writer, only what differs, retried by the next pass."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes.client import ApiException

from edgecompress_contract.status import CompressionJobStatus, StatusProgress
from edgecompress_operator import kube
from edgecompress_operator.config import Config
from edgecompress_operator.handlers.handle_reconcile import PassMemory, reconcile_pass
from edgecompress_operator.informer import slim_job
from edgecompress_operator.manifests import JOB_LABEL, job_name, trials_job_name
from edgecompress_operator.metrics import METRICS
from edgecompress_operator.status import now_timestamp, status_from_job, status_patch, waiting_status

NOW = "2026-11-22T12:00:00Z"
LATER = "2026-11-22T12:05:00Z"
SPEC = {
    "model": {"uri": "s3://bucket/m.keras", "format": "keras"},
    "steps": [{"type": "ptq", "mode": "dynamic"}],
    "output": {"uri": "s3://bucket/out/"},
}
SUMMARY = {
    "result": "Succeeded",
    "exitCode": 0,
    "message": "all gates passed",
    "gatesPassed": True,
    "comparison": {"sizeReduction": 0.75, "compressionRatio": 4.0, "gzipSizeReduction": 0.7, "latencySpeedup": 2.0},
    "artifacts": {
        "tflite": {"uri": "s3://bucket/out/model.tflite", "sha256": "ab"},
        "report": {"uri": "s3://bucket/out/report.json", "sha256": "cd"},
    },
}


def resource(name: str, created: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "edgecompress.io/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": f"uid-{name}",
            "generation": 1,
            "creationTimestamp": created,
        },
        "spec": copy.deepcopy(SPEC),
        "status": status or {},
    }


def runner_job(name: str, *conditions: str) -> dict[str, Any]:
    return {
        "metadata": {"name": job_name(name, f"uid-{name}"), "namespace": "ml", "labels": {JOB_LABEL: name}},
        "spec": {"suspend": False},
        "status": {
            "startTime": "2026-11-22T11:59:00Z",
            "completionTime": "2026-11-22T11:59:50Z",
            "conditions": [{"type": kind, "status": "True"} for kind in conditions],
        },
    }


def runner_pod(name: str, phase: str, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    state = {"terminated": {"exitCode": 0, "message": json.dumps(summary)}} if summary else {"running": {}}
    job = job_name(name, f"uid-{name}")
    return {
        "metadata": {
            "name": f"{job}-x",
            "namespace": "ml",
            "creationTimestamp": "2026-11-22T11:59:00Z",
            "labels": {JOB_LABEL: name, "job-name": job},
            "ownerReferences": [{"kind": "Job", "name": job}],
        },
        "status": {"phase": phase, "containerStatuses": [{"name": "runner", "state": state}]},
    }


class FakeApi:
    """The operator's kube module over in-memory objects; status patches are merged like the apiserver's.

    It is also the pass's view of the cluster (an always up-to-date cache), unless ``stale`` holds an
    older copy of the CompressionJobs.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.version = 100
        self.stale: list[dict[str, Any]] | None = None
        self.cached_jobs: list[dict[str, Any]] | None = None
        self.cached_pods: list[dict[str, Any]] | None = None
        self.lose_answer = False
        self.failed_creates: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.jobs: list[dict[str, Any]] = []
        self.pods: list[dict[str, Any]] = []
        self.log = ""
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, str]] = []
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.failing: set[str] = set()
        monkeypatch.setattr(kube, "pod_log_tail", lambda namespace, pod, container, lines: self.log)
        monkeypatch.setattr(kube, "read_job", lambda namespace, name: self.find(self.jobs, name))
        monkeypatch.setattr(kube, "read_compression_job", lambda namespace, name: self.find(self.resources, name))
        monkeypatch.setattr(
            kube,
            "list_job_pods",
            lambda namespace, job: [
                copy.deepcopy(pod) for pod in self.pods if pod["metadata"]["labels"]["job-name"] == job
            ],
        )
        monkeypatch.setattr(kube, "patch_status", self.patch_status)
        monkeypatch.setattr(kube, "create_job", self.create_job)
        monkeypatch.setattr(kube, "delete_job", self.delete_job)
        monkeypatch.setattr(
            kube, "create_event", lambda event: self.events.append((event["involvedObject"]["name"], event["reason"]))
        )

    @property
    def view(self) -> CacheView:
        return CacheView(self)

    @staticmethod
    def find(items: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
        return next((copy.deepcopy(item) for item in items if item["metadata"]["name"] == name), None)

    def patch_status(self, namespace: str, name: str, changes: dict[str, Any], resource_version: str) -> dict[str, Any]:
        if name in self.failing:
            raise ApiException(status=403, reason="Forbidden")
        found = next(item for item in self.resources if item["metadata"]["name"] == name)
        if found["metadata"].get("resourceVersion", str(self.version)) != resource_version:
            raise ApiException(status=409, reason="Conflict")
        self.patches.append((name, changes))
        found["status"] = merge(found.get("status") or {}, changes)
        self.version += 1
        found["metadata"]["resourceVersion"] = str(self.version)
        if self.lose_answer:
            raise TimeoutError("the answer was lost")
        return copy.deepcopy(found)

    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        name = manifest["metadata"]["labels"][JOB_LABEL]
        self.created.append(name)
        if manifest["spec"].get("completionMode") == "Indexed":
            self.jobs.append({**copy.deepcopy(manifest), "status": {}})
            return copy.deepcopy(self.jobs[-1])
        self.jobs.append(runner_job(name))
        return runner_job(name)

    def delete_job(self, namespace: str, name: str) -> None:
        self.deleted.append(name)
        self.jobs = [job for job in self.jobs if job["metadata"]["name"] != name]
        self.pods = [pod for pod in self.pods if pod["metadata"]["labels"]["job-name"] != name]

    def status(self, name: str) -> dict[str, Any]:
        return next(item["status"] for item in self.resources if item["metadata"]["name"] == name)  # type: ignore[no-any-return]


class CacheView:
    """The pass's view of a FakeApi: always up to date, unless ``api.stale`` holds older CompressionJobs."""

    def __init__(self, api: FakeApi) -> None:
        self.api = api

    def compression_jobs(self) -> list[dict[str, Any]]:
        for item in self.api.resources:
            item["metadata"].setdefault("resourceVersion", str(self.api.version))
        return copy.deepcopy(self.api.stale if self.api.stale is not None else self.api.resources)

    def jobs(self) -> list[dict[str, Any]]:
        """As the operator's informer keeps them (slim_job)."""
        return [slim_job(job) for job in (self.api.jobs if self.api.cached_jobs is None else self.api.cached_jobs)]

    def pods(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.api.pods if self.api.cached_pods is None else self.api.cached_pods)

    def failed_creates(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.api.failed_creates)

    def store(self, kind: str, item: dict[str, Any]) -> None:
        """What the apiserver returned goes into the cache; here the fake's own lists are the cache."""


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


CONFIG = Config(runner_image="runner:1", max_concurrent_jobs=1)


def completions() -> float:
    return float(METRICS.completions.labels(result="Succeeded", reason="Succeeded")._value.get())


def test_a_failed_final_write_is_made_by_the_next_pass_with_one_event(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi(monkeypatch)
    api.resources = [resource("digits", NOW)]
    api.jobs = [runner_job("digits")]
    api.pods = [runner_pod("digits", "Running")]
    api.log = json.dumps({"event": "epoch", "phase": "steps[0] prune", "epoch": 1, "epochs": 3, "percent": 30.0})
    reconcile_pass(CONFIG, api.view)
    assert api.status("digits")["phase"] == "Running"
    assert api.status("digits")["progress"]["epoch"] == 1
    assert api.events == [("digits", "Running")]
    reconcile_pass(CONFIG, api.view)
    assert len(api.patches) == 1, "an unchanged status is not written again"

    api.jobs = [runner_job("digits", "Complete")]
    api.pods = [runner_pod("digits", "Succeeded", SUMMARY)]
    api.failing = {"digits"}
    before = completions()
    assert reconcile_pass(CONFIG, api.view).failed == [("ml", "digits")]
    assert api.status("digits")["phase"] == "Running"
    assert completions() == before and len(api.events) == 1

    api.failing = set()
    reconcile_pass(CONFIG, api.view)
    status = api.status("digits")
    assert status["phase"] == "Succeeded" and status["result"]["comparison"]["compressionRatio"] == 4.0
    assert status["progress"] == {"phase": "finished", "percent": 100.0, "updateTime": status["progress"]["updateTime"]}
    assert api.events == [("digits", "Running"), ("digits", "Succeeded")]
    assert completions() == before + 1
    patches = len(api.patches)
    reconcile_pass(CONFIG, api.view)
    assert len(api.patches) == patches, "a finished CompressionJob is left alone"


def test_one_failing_compression_job_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi(monkeypatch)
    api.resources = [resource("first", NOW), resource("second", LATER), resource("third", LATER.replace("05", "06"))]
    api.failing = {"second"}
    assert reconcile_pass(CONFIG, api.view).failed == [("ml", "second")]
    assert api.created == ["first"]
    assert api.status("third")["reason"] == "Queued"
    assert api.status("third")["message"].startswith("waiting for a free runner slot")
    assert api.events == [("first", "JobCreated"), ("third", "Queued")], "one Event per transition"


def test_the_queue_moving_writes_no_status(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi(monkeypatch)
    api.resources = [resource(f"job-{index}", f"2026-11-22T12:00:0{index}Z") for index in range(5)]
    reconcile_pass(CONFIG, api.view)
    reconcile_pass(CONFIG, api.view)  # job-0 gets its status from its Job
    writes = len(api.patches)
    assert [name for name, _ in api.patches].count("job-4") == 1, "queued once"
    api.resources = [item for item in api.resources if item["metadata"]["name"] != "job-1"]  # one leaves the queue
    reconcile_pass(CONFIG, api.view)
    assert len(api.patches) == writes, "the others' place changed, their status did not"
    samples = {
        tuple(sorted(sample.labels.items())): sample.value
        for family in METRICS.jobs.collect()
        if family.name == "edgecompress_compressionjob_queue_position"
        for sample in family.samples
    }
    assert samples == {}, "only observed CompressionJobs get a series"
    for item in api.resources:
        METRICS.jobs.observe("ml", item["metadata"]["name"], CompressionJobStatus())
    samples = {
        sample.labels["name"]: sample.value
        for family in METRICS.jobs.collect()
        if family.name == "edgecompress_compressionjob_queue_position"
        for sample in family.samples
    }
    for item in api.resources:
        METRICS.jobs.forget("ml", item["metadata"]["name"])
    assert samples == {"job-2": 1.0, "job-3": 2.0, "job-4": 3.0}


def test_patch_keeps_transition_and_read_times_when_nothing_changed() -> None:
    job = runner_job("digits")
    pod = runner_pod("digits", "Running")
    from edgecompress_contract.progress import ProgressEvent

    event = ProgressEvent(event="epoch", phase="steps[0] prune", epoch=1, epochs=3, percent=30.0)
    stored = status_from_job(job, pod, 1, NOW, progress=event)
    assert status_patch(stored, status_from_job(job, pod, 1, LATER, progress=event)) == {}
    moved = status_patch(stored, status_from_job(job, pod, 1, LATER, progress=event.model_copy(update={"epoch": 2})))
    assert moved == {"progress": {"epoch": 2, "updateTime": LATER}}
    converted = ProgressEvent(event="phase", phase="convert", percent=70.0)
    assert status_patch(stored, status_from_job(job, pod, 1, LATER, progress=converted))["progress"] == {
        "phase": "convert",
        "epoch": None,
        "epochs": None,
        "percent": 70.0,
        "updateTime": LATER,
    }


def test_condition_times_change_only_with_their_status() -> None:
    queued = waiting_status("Queued", "position 1 of 1", 1, NOW)
    running = status_from_job(runner_job("digits"), runner_pod("digits", "Running"), 1, LATER)
    changes = status_patch(queued, running)
    conditions = {condition["type"]: condition for condition in changes["conditions"]}
    assert conditions["Reconciling"]["lastTransitionTime"] == NOW  # still True
    assert conditions["Reconciling"]["reason"] == "Running"
    assert changes["phase"] == "Running" and changes["job"] == running.job
    done = status_from_job(
        runner_job("digits", "Complete"), runner_pod("digits", "Succeeded", SUMMARY), 1, "2026-11-22T12:09:00Z"
    )
    finished = {
        condition.type: condition
        for condition in CompressionJobStatus.model_validate(
            {**running.to_wire(), **status_patch(running, done)}
        ).conditions
    }
    assert finished["Ready"].last_transition_time == "2026-11-22T12:09:00Z"
    assert isinstance(done.progress, StatusProgress) and done.progress.percent == 100.0


def test_a_job_that_vanished_before_its_result_was_recorded_is_never_created_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = FakeApi(monkeypatch)
    api.resources = [resource("digits", NOW)]
    reconcile_pass(CONFIG, api.view)
    assert api.created == ["digits"]
    assert api.status("digits")["job"] == job_name("digits", "uid-digits"), "recorded with the create"
    assert len(api.jobs) == 1
    api.jobs = []  # finished and deleted (ttlSecondsAfterFinished: 0) before the next pass saw it
    reconcile_pass(CONFIG, api.view)
    reconcile_pass(CONFIG, api.view)
    assert api.created == ["digits"], "the runner must not run twice"
    status = api.status("digits")
    assert (status["phase"], status["reason"]) == ("Failed", "JobLost")
    assert "s3://bucket/out/" in status["message"]


@pytest.mark.parametrize(("ttl", "deleted"), [(0, True), (None, False)], ids=["ttl-0", "default-7-days"])
def test_a_finished_job_is_deleted_only_after_its_outcome_was_recorded(
    monkeypatch: pytest.MonkeyPatch, ttl: int | None, deleted: bool
) -> None:
    api = finished_job_fixture(monkeypatch)
    if ttl is not None:
        api.resources[0]["spec"]["execution"] = {"ttlSecondsAfterFinished": ttl}
    reconcile_pass(CONFIG, api.view)
    assert api.status("digits")["phase"] == "Succeeded" and api.deleted == [], "recorded first, deleted after"
    assert api.status("digits")["result"]["artifacts"]["tflite"]["uri"] == "s3://bucket/out/model.tflite"
    reconcile_pass(CONFIG, api.view)
    job = job_name("digits", "uid-digits")
    assert api.deleted == ([job] if deleted else [])
    assert (api.jobs == []) is deleted
    reconcile_pass(CONFIG, api.view)
    assert api.deleted == ([job] if deleted else []), "deleted once"
    assert api.status("digits")["phase"] == "Succeeded"


def finished_job_fixture(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    api = FakeApi(monkeypatch)
    api.resources = [resource("digits", NOW)]
    api.jobs = [runner_job("digits", "Complete")]
    api.pods = [runner_pod("digits", "Succeeded", SUMMARY)]
    return api


def test_a_stale_view_never_records_or_counts_a_transition_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    api = finished_job_fixture(monkeypatch)
    before_view = api.view.compression_jobs()
    before = completions()
    reconcile_pass(CONFIG, api.view)
    assert api.status("digits")["phase"] == "Succeeded" and completions() == before + 1
    api.stale = before_view  # the cache has not seen the write yet
    result = reconcile_pass(CONFIG, api.view)
    assert result.patched == [] and len(api.patches) == 1, "the conditional write is refused (409)"
    assert completions() == before + 1 and api.events == [("digits", "Succeeded")]


def test_a_write_whose_answer_was_lost_is_counted_once_if_it_landed(monkeypatch: pytest.MonkeyPatch) -> None:
    api = finished_job_fixture(monkeypatch)
    api.lose_answer = True
    before = completions()
    assert reconcile_pass(CONFIG, api.view).patched == [("ml", "digits")]
    api.lose_answer = False
    reconcile_pass(CONFIG, api.view)
    assert completions() == before + 1 and api.events == [("digits", "Succeeded")]


def test_a_lagging_cache_is_checked_before_a_job_is_declared_lost_or_a_result_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = FakeApi(monkeypatch)
    api.resources = [resource("digits", NOW)]
    api.cached_jobs, api.cached_pods = [], []  # the watches have delivered nothing yet
    reconcile_pass(CONFIG, api.view)
    assert api.created == ["digits"] and api.status("digits")["job"]
    api.jobs = [runner_job("digits", "Complete")]
    api.pods = [runner_pod("digits", "Succeeded", SUMMARY)]
    reconcile_pass(CONFIG, api.view)
    assert api.status("digits")["phase"] == "Succeeded", "the Job was read, not taken for lost"
    assert api.status("digits")["result"]["comparison"]["compressionRatio"] == 4.0, "the pod was read"
    assert api.created == ["digits"]


def test_a_pass_recomputes_only_what_changed_since_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecompress_operator.handlers import handle_reconcile

    api = FakeApi(monkeypatch)
    api.resources = [resource("digits", NOW), resource("other", LATER)]
    api.jobs = [runner_job("digits"), runner_job("other")]
    api.pods = [runner_pod("digits", "Pending"), runner_pod("other", "Pending")]
    memory = handle_reconcile.PassMemory()
    reconcile_pass(CONFIG, api.view, memory)
    reconcile_pass(CONFIG, api.view, memory)  # finds both up to date
    computed: list[str] = []
    original = handle_reconcile.status_from_job

    def counting(job: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        computed.append(job["metadata"]["name"])
        return original(job, *args, **kwargs)

    monkeypatch.setattr(handle_reconcile, "status_from_job", counting)
    reconcile_pass(CONFIG, api.view, memory)
    assert computed == [], "nothing changed"
    api.jobs[0] = {**runner_job("digits", "Complete"), "metadata": {**api.jobs[0]["metadata"], "resourceVersion": "7"}}
    api.pods[0] = runner_pod("digits", "Succeeded", SUMMARY)
    reconcile_pass(CONFIG, api.view, memory)
    assert computed == [job_name("digits", "uid-digits")]
    assert api.status("digits")["phase"] == "Succeeded"


def test_a_failed_create_event_in_the_cache_becomes_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi(monkeypatch)
    api.resources = [resource("digits", NOW)]
    api.jobs = [runner_job("digits")]
    api.jobs[0]["metadata"].update(uid="job-uid", creationTimestamp=now_timestamp())  # within the start timeout
    memory = PassMemory()
    reconcile_pass(CONFIG, api.view, memory)
    assert api.status("digits")["reason"] == "Pending"
    api.failed_creates = [
        {
            "metadata": {"name": "digits.1", "namespace": "ml", "resourceVersion": "40"},
            "involvedObject": {"uid": "job-uid", "kind": "Job"},
            "message": "old",
            "lastTimestamp": "2026-11-22T11:00:00Z",
        },
        {
            "metadata": {"name": "digits.2", "namespace": "ml", "resourceVersion": "41"},
            "involvedObject": {"uid": "job-uid", "kind": "Job"},
            "message": 'pods "x" is forbidden: no PriorityClass with name gold was found',
            "lastTimestamp": "2026-11-22T12:00:00Z",
        },
    ]
    reconcile_pass(CONFIG, api.view, memory)  # the same memory: the new Event is a changed input
    status = api.status("digits")
    assert (status["phase"], status["reason"]) == ("Pending", "FailedCreate")
    assert "no PriorityClass with name gold" in status["message"]


TRIALS_SPEC = {
    "model": {"uri": "s3://bucket/m.keras", "format": "keras"},
    "dataset": {"uri": "s3://bucket/d.npz"},
    "steps": [{"type": "auto", "parallelism": 2, "trials": [{"preset": "qat"}, {"preset": "prune50Qat"}]}],
    "gates": {"minFidelity": 0.99},
    "output": {"uri": "s3://bucket/out/"},
}


def trials_fixture(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    api = FakeApi(monkeypatch)
    api.resources = [resource("auto", NOW)]
    api.resources[0]["spec"] = copy.deepcopy(TRIALS_SPEC)
    return api


def trial_pod(index: int, phase: str, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    pod = runner_pod("auto", phase, summary)
    job = trials_job_name("auto", "uid-auto")
    pod["metadata"].update(name=f"{job}-{index}-x", creationTimestamp=f"2026-11-22T11:59:0{index}Z")
    pod["metadata"]["labels"]["job-name"] = job
    pod["metadata"]["ownerReferences"] = [{"kind": "Job", "name": job}]
    return pod


def test_trials_run_as_one_indexed_job_then_the_search_job_starts_in_the_same_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = trials_fixture(monkeypatch)
    api.resources.append(resource("later", LATER))
    two_slots = Config(runner_image="runner:1", max_concurrent_jobs=2)
    reconcile_pass(two_slots, api.view)
    assert api.created == ["auto"], "the trials Job holds both slots: the later job waits"
    assert api.status("later")["reason"] == "Queued"
    [trials] = api.jobs
    assert trials["metadata"]["name"] == trials_job_name("auto", "uid-auto")
    assert trials["spec"]["completionMode"] == "Indexed" and trials["spec"]["parallelism"] == 2
    status = api.status("auto")
    assert status["trialsJob"] == trials["metadata"]["name"] and "job" not in status, "recorded with the create"
    assert status["progress"]["trial"] == 0 and status["progress"]["trials"] == 2

    trials["status"] = {"active": 1, "succeeded": 1}
    api.pods = [trial_pod(0, "Succeeded"), trial_pod(1, "Running")]
    reconcile_pass(two_slots, api.view)
    status = api.status("auto")
    assert (status["phase"], status["reason"]) == ("Running", "TrialsRunning")
    assert status["message"].startswith("training trials: 1 of 2 done")
    assert (status["progress"]["trial"], status["progress"]["trials"]) == (1, 2)
    assert api.created == ["auto"]

    trials["status"] = {"succeeded": 2, "conditions": [{"type": "Complete", "status": "True"}]}
    reconcile_pass(two_slots, api.view)
    assert api.created == ["auto", "auto", "later"], "the runner Job follows in one slot: the later job starts"
    status = api.status("auto")
    assert status["job"] == job_name("auto", "uid-auto") and status["trialsJob"] == trials["metadata"]["name"]
    reconcile_pass(two_slots, api.view)
    assert api.created == ["auto", "auto", "later"]

    api.jobs[1] = runner_job("auto", "Complete")
    api.pods = [runner_pod("auto", "Succeeded", SUMMARY)]
    reconcile_pass(two_slots, api.view)
    assert api.status("auto")["phase"] == "Succeeded"
    assert [reason for name, reason in api.events if name == "auto"] == [
        "JobCreated",
        "TrialsRunning",
        "JobCreated",
        "Succeeded",
    ]


def test_a_failed_trial_pod_fails_the_compression_job_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    api = trials_fixture(monkeypatch)
    reconcile_pass(CONFIG, api.view)
    failure = {"result": "Failed", "exitCode": 20, "reason": "InvalidSpec", "message": "spec.steps[0].trials: index 7"}
    api.jobs[0]["status"] = {
        "failed": 1,
        "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}],
    }
    api.pods = [trial_pod(0, "Succeeded"), trial_pod(1, "Failed", failure)]
    reconcile_pass(CONFIG, api.view)
    status = api.status("auto")
    assert (status["phase"], status["reason"]) == ("Failed", "InvalidSpec")
    assert status["message"].endswith("failed: spec.steps[0].trials: index 7")
    assert api.created == ["auto"], "no search without its trials"


def test_a_trials_job_that_vanished_is_never_created_again(monkeypatch: pytest.MonkeyPatch) -> None:
    api = trials_fixture(monkeypatch)
    reconcile_pass(CONFIG, api.view)
    api.jobs = []
    reconcile_pass(CONFIG, api.view)
    assert api.created == ["auto"]
    status = api.status("auto")
    assert (status["phase"], status["reason"]) == ("Failed", "JobLost")
    assert trials_job_name("auto", "uid-auto") in status["message"]
