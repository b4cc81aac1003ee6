"""The operator on a real control plane: the issue's scenarios 1, 3, 4, 5 and 6, suspend, and an unschedulable pod."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.k8s.controlplane import ControlPlane
from tests.k8s.node_agent import NodeAgent
from tests.waiting import wait_until

pytestmark = [pytest.mark.k8s, pytest.mark.s3, pytest.mark.tf]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "compressionjob.yaml"


def get(plane: ControlPlane, *args: str) -> dict[str, Any]:
    return json.loads(plane.kubectl("get", *args, "-o", "json").stdout)  # type: ignore[no-any-return]


def wait_for_phase(plane: ControlPlane, name: str, phases: set[str], timeout: float = 420) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        job = get(plane, "compressionjob", name)
        return job if (job.get("status") or {}).get("phase") in phases else None

    return wait_until(reached, f"{name} to reach {phases}", timeout)


def event_reasons(plane: ControlPlane, name: str) -> set[str]:
    """The reasons of a CompressionJob's Events (posted right after the status write that they report)."""
    events = get(plane, "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return {event["reason"] for event in events}


def metric_samples(operator: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(operator.metrics())
        for sample in family.samples
    }


def example(name: str, **spec_changes: Any) -> str:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["metadata"]["name"] = name
    document["spec"]["output"]["uri"] = f"s3://edgecompress-demo/compressed/{name}/"
    document["spec"].update(spec_changes)
    return yaml.safe_dump(document)


def test_example_job_succeeds_end_to_end(
    control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any, demo_bucket: Any
) -> None:
    s3 = demo_bucket
    control_plane.kubectl("apply", "-f", str(EXAMPLE))
    job = wait_for_phase(control_plane, "digits", {"Succeeded", "Failed"})
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert status["observedGeneration"] == job["metadata"]["generation"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    result = status["result"]
    assert result["gatesPassed"] and result["comparison"]["compressionRatio"] >= 3.5
    keys = sorted(
        item["Key"] for item in s3.list_objects_v2(Bucket="edgecompress-demo", Prefix="compressed/digits/")["Contents"]
    )
    assert keys == ["compressed/digits/model.tflite", "compressed/digits/report.html", "compressed/digits/report.json"]
    report = json.loads(s3.get_object(Bucket="edgecompress-demo", Key="compressed/digits/report.json")["Body"].read())
    assert report["outputs"]["tflite"]["sha256"] == result["artifacts"]["tflite"]["sha256"]
    assert report["outputs"]["html"]["sha256"] == result["artifacts"]["html"]["sha256"]
    jobs = get(control_plane, "jobs", "-l", "edgecompress.io/compressionjob=digits")["items"]
    assert len(jobs) == 1
    [runner] = jobs[0]["spec"]["template"]["spec"]["containers"]
    assert runner["resources"]["limits"]["nvidia.com/gpu"] == "1", "the example trains: the default GPU"
    wait_until(lambda: {"JobCreated", "Succeeded"} <= event_reasons(control_plane, "digits"), "the Events", 30)
    assert status["progress"]["percent"] == 100.0
    metrics = metric_samples(operator_process)
    assert (
        metrics[("edgecompress_compressionjob_completions_total", (("reason", "Succeeded"), ("result", "Succeeded")))]
        >= 1
    )
    assert metrics[("edgecompress_compressionjob_duration_seconds_count", (("result", "Succeeded"),))] >= 1
    digits = (("name", "digits"), ("namespace", "default"))
    assert (
        metrics[("edgecompress_compressionjob_compression_ratio", digits)] == result["comparison"]["compressionRatio"]
    )
    assert metrics[("edgecompress_compressionjob_output_size_bytes", digits)] == result["output"]["sizeBytes"]
    assert metrics[("edgecompress_compressionjob_gates_passed", digits)] == 1
    assert metrics[("edgecompress_compressionjobs", (("phase", "Succeeded"),))] >= 1
    assert operator_process.probe("/healthz") == 200 and operator_process.probe("/readyz") == 200


def test_missing_model_fails_with_the_runners_reason(
    control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any, demo_bucket: Any
) -> None:
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        stdin=example("missing-model", model={"uri": "s3://edgecompress-demo/models/absent.keras", "format": "keras"}),
    )
    status = wait_for_phase(control_plane, "missing-model", {"Succeeded", "Failed"})["status"]
    assert status["phase"] == "Failed" and status["reason"] == "InvalidInput"
    assert status["message"] == "s3://edgecompress-demo/models/absent.keras: object not found"
    assert "result" not in status
    pods = get(control_plane, "pods", "-l", "edgecompress.io/compressionjob=missing-model")["items"]
    assert len(pods) == 1, "a bad input must not be retried"


def test_failed_gates_keep_the_results(
    control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any, demo_bucket: Any
) -> None:
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        stdin=example("strict-gates", steps=[{"type": "ptq", "mode": "float16"}], gates={"minSizeReduction": 0.9}),
    )
    status = wait_for_phase(control_plane, "strict-gates", {"Succeeded", "Failed"})["status"]
    assert status["phase"] == "Failed" and status["reason"] == "GatesFailed"
    assert "short of the required 90.0%" in status["message"]
    result = status["result"]
    assert result["gatesPassed"] is False and result["gates"][0]["name"] == "minSizeReduction"
    assert result["output"]["sizeBytes"] < result["baseline"]["sizeBytes"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "GatesFailed"


def test_deleting_a_job_removes_its_runner_but_never_artifacts(
    control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any, demo_bucket: Any
) -> None:
    s3 = demo_bucket
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        stdin=example(
            "long-running", steps=[{"type": "prune", "fineTune": {"epochs": 200}}, {"type": "ptq", "mode": "int8"}]
        ),
    )
    wait_for_phase(control_plane, "long-running", {"Running"}, timeout=120)
    progress = wait_until(
        lambda: (get(control_plane, "compressionjob", "long-running")["status"].get("progress") or {}).get("epoch"),
        "status.progress to report a fine-tuning epoch",
    )
    assert progress >= 1
    status = get(control_plane, "compressionjob", "long-running")["status"]
    assert status["progress"]["phase"] == "steps[0] prune" and 0 < status["progress"]["percent"] < 100
    before = {item["Key"] for item in s3.list_objects_v2(Bucket="edgecompress-demo")["Contents"]}
    control_plane.kubectl("delete", "compressionjob", "long-running", "--wait=true")
    if "compressed/digits/report.json" in before:
        control_plane.kubectl("delete", "compressionjob", "digits", "--ignore-not-found")

    def runner_gone() -> bool:
        selector = "edgecompress.io/compressionjob in (long-running, digits)"
        jobs = get(control_plane, "jobs", "-l", selector)["items"]
        pods = get(control_plane, "pods", "-l", selector)["items"]
        return not jobs and not pods

    wait_until(runner_gone, "the runner Job and pod to go with their CompressionJob", timeout=90)
    after = {item["Key"] for item in s3.list_objects_v2(Bucket="edgecompress-demo")["Contents"]}
    assert before <= after
    assert node_agent.live_processes() == 0
    wait_until(
        lambda: not [key for key in metric_samples(operator_process) if ("name", "digits") in key[1]],
        "the deleted CompressionJob's metric series to disappear",
        timeout=30,
    )


def test_operator_restart_while_running_makes_no_second_job(
    control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any, demo_bucket: Any
) -> None:
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        stdin=example(
            "restarted", steps=[{"type": "prune", "fineTune": {"epochs": 3}}, {"type": "ptq", "mode": "int8"}]
        ),
    )
    wait_for_phase(control_plane, "restarted", {"Running"}, timeout=120)
    operator_process.restart()
    status = wait_for_phase(control_plane, "restarted", {"Succeeded", "Failed"})["status"]
    assert status["phase"] == "Succeeded", status
    jobs = get(control_plane, "jobs", "-l", "edgecompress.io/compressionjob=restarted")["items"]
    assert len(jobs) == 1
    assert operator_process.starts >= 2


def test_a_status_write_lost_at_completion_is_made_by_the_next_pass(
    control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any, demo_bucket: Any
) -> None:
    """The operator may not write the final status (RBAC taken away, an apiserver outage) when the runner Job
    completes. No further event comes for a finished Job, yet the next pass after the outage writes Succeeded."""
    from tests.e2e.conftest import OPERATOR_NAMESPACE, OPERATOR_RULES

    name = "outage"
    account = f"system:serviceaccount:{OPERATOR_NAMESPACE}:edgecompress-operator"
    rules_by_scope = yaml.safe_load(OPERATOR_RULES.read_text())
    rules = rules_by_scope["namespaced"] + rules_by_scope["cluster"]
    without_status_patch = [rule for rule in rules if rule["resources"] != ["compressionjobs/status"]]
    assert len(without_status_patch) == len(rules) - 1

    def set_operator_rules(role_rules: list[dict[str, Any]]) -> None:
        role = get(control_plane, "clusterrole", "edgecompress-operator")
        role["rules"] = role_rules
        for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
            role["metadata"].pop(key, None)
        control_plane.kubectl("replace", "-f", "-", stdin=json.dumps(role))

    def may_patch_status() -> str:
        return control_plane.kubectl(
            "auth",
            "can-i",
            "patch",
            "compressionjobs.edgecompress.io",
            "--subresource=status",
            "--as",
            account,
            check=False,
        ).stdout.strip()

    def runner_complete() -> bool:
        jobs = get(control_plane, "jobs", "-l", f"edgecompress.io/compressionjob={name}")["items"]
        conditions = [c for job in jobs for c in (job.get("status") or {}).get("conditions") or []]
        return any(c["type"] == "Complete" and c["status"] == "True" for c in conditions)

    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        # Long enough for the outage to begin while the runner works (a few seconds), short enough to finish soon.
        stdin=example(name, steps=[{"type": "prune", "fineTune": {"epochs": 8}}, {"type": "ptq", "mode": "int8"}]),
    )
    wait_for_phase(control_plane, name, {"Running"}, timeout=120)
    try:
        set_operator_rules(without_status_patch)
        wait_until(lambda: may_patch_status() == "no", "the operator to lose patch on compressionjobs/status", 30)
        assert not runner_complete(), "the runner finished before the outage began; the test proves nothing"
        wait_until(runner_complete, "the runner Job to complete during the outage", timeout=420)
        errors = ("edgecompress_reconcile_errors_total", (("action", "status"),))
        failed_writes = metric_samples(operator_process)[errors]
        wait_until(lambda: metric_samples(operator_process)[errors] > failed_writes, "a failed status write", 30)
        assert operator_process.probe("/readyz") == 200, "one CompressionJob's failures must not make it unready"
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            status = get(control_plane, "compressionjob", name)["status"]
            assert status["phase"] == "Running", status
            time.sleep(1)
    finally:
        set_operator_rules(rules)
    wait_until(lambda: may_patch_status() == "yes", "the operator's rights to be restored", 30)
    # Within one admission interval (a pass runs at least that often), plus a margin for a loaded machine.
    one_pass = float(operator_process.env["EDGECOMPRESS_ADMISSION_INTERVAL_SECONDS"])
    status = wait_for_phase(control_plane, name, {"Succeeded", "Failed"}, timeout=one_pass + 5)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"]["gatesPassed"] and status["result"]["artifacts"]["tflite"]["sha256"]
    assert status["progress"]["percent"] == 100.0

    def reasons() -> list[str]:
        events = get(control_plane, "events", "--field-selector", f"involvedObject.name={name}")["items"]
        return [event["reason"] for event in events]

    wait_until(lambda: "Succeeded" in reasons(), "the Succeeded Event (posted after the status write)", 30)
    time.sleep(one_pass)
    assert reasons().count("Succeeded") == 1
    control_plane.kubectl("delete", "compressionjob", name, "--wait=true")


def test_jobs_over_the_concurrency_limit_wait_queued_and_start_in_creation_order(
    control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any, demo_bucket: Any
) -> None:
    from tests.e2e.conftest import MAX_CONCURRENT_JOBS

    names = ["queue-d", "queue-c", "queue-b", "queue-a"]
    assert len(names) == MAX_CONCURRENT_JOBS + 2
    for name in names:
        control_plane.kubectl("apply", "-f", "-", stdin=example(name, steps=[{"type": "ptq", "mode": "dynamic"}]))
        time.sleep(1.1)
    selector = f"edgecompress.io/compressionjob in ({', '.join(names)})"

    def queued_statuses() -> dict[str, Any] | None:
        found = {
            name: get(control_plane, "compressionjob", name).get("status") or {} for name in names[MAX_CONCURRENT_JOBS:]
        }
        return found if {status.get("reason") for status in found.values()} == {"Queued"} else None

    queued = wait_until(queued_statuses, "the jobs over the limit to be Queued", timeout=30)
    assert (
        queued["queue-b"]["message"].startswith("waiting for a free runner slot")
        and queued["queue-b"]["phase"] == "Pending"
    )
    places = metric_samples(operator_process)
    position = "edgecompress_compressionjob_queue_position"
    assert places[(position, (("name", "queue-b"), ("namespace", "default")))] == 1
    assert places[(position, (("name", "queue-a"), ("namespace", "default")))] == 2
    most_running = 0
    deadline = time.monotonic() + 420
    while True:
        statuses = {name: get(control_plane, "compressionjob", name).get("status") or {} for name in names}
        pods = get(control_plane, "pods", "-l", selector)["items"]
        most_running = max(most_running, sum(pod["status"].get("phase") in ("Pending", "Running") for pod in pods))
        if all(status.get("phase") in ("Succeeded", "Failed") for status in statuses.values()):
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.5)
    assert {status["phase"] for status in statuses.values()} == {"Succeeded"}, statuses
    assert most_running <= MAX_CONCURRENT_JOBS
    jobs = {
        job["metadata"]["labels"]["edgecompress.io/compressionjob"]: job
        for job in get(control_plane, "jobs", "-l", selector)["items"]
    }
    first_done = min(jobs[name]["status"]["completionTime"] for name in names[:MAX_CONCURRENT_JOBS])
    assert jobs["queue-b"]["metadata"]["creationTimestamp"] >= first_done
    assert jobs["queue-b"]["metadata"]["creationTimestamp"] <= jobs["queue-a"]["metadata"]["creationTimestamp"]
    wait_until(
        lambda: {"Queued", "JobCreated", "Succeeded"} <= event_reasons(control_plane, "queue-a"), "the Events", 30
    )
    control_plane.kubectl("delete", "compressionjob", *names)


def test_suspend_holds_the_job_and_resume_runs_it(
    control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any, demo_bucket: Any
) -> None:
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        stdin=example(
            "suspended",
            suspend=True,
            steps=[{"type": "prune", "fineTune": {"epochs": 200}}, {"type": "ptq", "mode": "int8"}],
        ),
    )
    status = wait_until(lambda: get(control_plane, "compressionjob", "suspended").get("status") or {}, "a status")
    assert (status["phase"], status["reason"]) == ("Pending", "Suspended")
    assert get(control_plane, "jobs", "-l", "edgecompress.io/compressionjob=suspended")["items"] == []
    control_plane.kubectl("patch", "compressionjob", "suspended", "--type=merge", "-p", '{"spec": {"suspend": false}}')
    wait_for_phase(control_plane, "suspended", {"Running"}, timeout=120)
    control_plane.kubectl("patch", "compressionjob", "suspended", "--type=merge", "-p", '{"spec": {"suspend": true}}')
    status = wait_until(
        lambda: (s := get(control_plane, "compressionjob", "suspended")["status"])["reason"] == "Suspended" and s,
        "the running job to be suspended",
    )
    assert status["phase"] == "Pending" and status["observedGeneration"] == 3
    job = get(control_plane, "jobs", "-l", "edgecompress.io/compressionjob=suspended")["items"][0]
    assert job["spec"]["suspend"] is True
    wait_until(
        lambda: not get(control_plane, "pods", "-l", "edgecompress.io/compressionjob=suspended")["items"],
        "the suspended job's pod to go away",
    )
    control_plane.kubectl("patch", "compressionjob", "suspended", "--type=merge", "-p", '{"spec": {"suspend": false}}')
    wait_for_phase(control_plane, "suspended", {"Running"}, timeout=120)
    assert len(get(control_plane, "jobs", "-l", "edgecompress.io/compressionjob=suspended")["items"]) == 1
    control_plane.kubectl("delete", "compressionjob", "suspended", "--wait=true")


def test_a_pod_without_a_free_gpu_shows_the_schedulers_reason(
    control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any, demo_bucket: Any
) -> None:
    control_plane.kubectl("apply", "-f", "-", stdin=example("too-many-gpus", execution={"gpus": 4}))
    status = wait_until(
        lambda: (
            (s := get(control_plane, "compressionjob", "too-many-gpus").get("status") or {}).get("reason")
            == "Unschedulable"
            and s
        ),
        "the Unschedulable reason in status",
    )
    assert status["phase"] == "Pending"
    assert status["message"] == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    control_plane.kubectl("delete", "compressionjob", "too-many-gpus", "--wait=true")


def test_after_a_network_partition_new_jobs_get_their_runner(
    control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any, demo_bucket: Any
) -> None:
    """Connections between operator and apiserver go silent for 60 s (no FIN, no RST), then new ones work again."""
    names = ["after-partition-a", "after-partition-b", "after-partition-c"]
    partitioned = time.monotonic()
    operator_process.proxy.partition()
    try:
        for name in names:
            control_plane.kubectl("apply", "-f", "-", stdin=example(name, steps=[{"type": "ptq", "mode": "dynamic"}]))
        wait_until(lambda: operator_process.probe("/readyz") == 503, "the operator to report no recent pass", 60)
        assert operator_process.probe("/healthz") == 200, "a 60 s outage must not get the operator restarted"
        time.sleep(max(0.0, 60 - (time.monotonic() - partitioned)))
        for name in names:
            assert get(control_plane, "jobs", "-l", f"edgecompress.io/compressionjob={name}")["items"] == []
    finally:
        operator_process.proxy.heal()
    healed = time.monotonic()

    def all_have_jobs() -> bool:
        selector = f"edgecompress.io/compressionjob in ({', '.join(names)})"
        return len(get(control_plane, "jobs", "-l", selector)["items"]) == len(names)

    wait_until(all_have_jobs, "a runner Job for each CompressionJob created during the partition", timeout=60)
    assert time.monotonic() - healed < 60
    for name in names:
        assert wait_for_phase(control_plane, name, {"Succeeded", "Failed"})["status"]["phase"] == "Succeeded"
    wait_until(lambda: operator_process.probe("/readyz") == 200, "the operator to be ready again", 30)
    control_plane.kubectl("delete", "compressionjob", *names)
