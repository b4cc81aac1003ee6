"""One CompressionJob's bad settings fail that CompressionJob only: the others still get their runner."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.k8s.controlplane import ControlPlane
from tests.k8s.node_agent import NodeAgent
from tests.unit.test_job_checks import INVALID
from tests.waiting import wait_until

pytestmark = [pytest.mark.k8s, pytest.mark.s3, pytest.mark.tf]

FAKE_RUNNER = Path(__file__).resolve().parents[1] / "k8s" / "fake_runner.py"
"""A runner that does no work (one progress line, a succeeded summary): for tests of the operator alone."""


def get(plane: ControlPlane, *args: str) -> dict[str, Any]:
    return json.loads(plane.kubectl("get", *args, "-o", "json").stdout)  # type: ignore[no-any-return]


def document(name: str, **spec_changes: Any) -> str:
    spec = {
        "model": {"uri": "s3://edgecompress-demo/models/digits.keras", "format": "keras"},
        "steps": [{"type": "ptq", "mode": "dynamic"}],
        "output": {"uri": f"s3://edgecompress-demo/compressed/{name}/"},
        "credentials": {"secretName": "edgecompress-s3"},
        **spec_changes,
    }
    return yaml.safe_dump(
        {"apiVersion": "edgecompress.io/v1alpha1", "kind": "CompressionJob", "metadata": {"name": name}, "spec": spec}
    )


def fake_runner_operator(plane: ControlPlane, operator_process: Any, log_dir: Path, *, max_concurrent_jobs: int) -> Any:
    """Stops the session's operator and returns another, not started, whose runner is ``FAKE_RUNNER``.

    The caller starts the session's operator again when it is done.
    """
    from tests.e2e.conftest import OperatorProcess

    operator_process.stop()
    replacement = OperatorProcess(plane, log_dir, operator_process.proxy)
    replacement.env["EDGECOMPRESS_RUNNER_COMMAND"] = json.dumps([sys.executable, str(FAKE_RUNNER)])
    replacement.env["EDGECOMPRESS_MAX_CONCURRENT_JOBS"] = str(max_concurrent_jobs)
    return replacement


def phase_of(plane: ControlPlane, name: str, phases: set[str], timeout: float = 300) -> dict[str, Any]:
    return wait_until(  # type: ignore[no-any-return]
        lambda: (s := get(plane, "compressionjob", name).get("status") or {}).get("phase") in phases and s,
        f"{name} to reach {phases}",
        timeout,
    )


def test_invalid_job_settings_fail_their_compression_job_and_the_next_one_still_runs(
    control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any, demo_bucket: Any
) -> None:
    cases = [(f"bad-{case}", execution, message, "InvalidSpec") for case, execution, message in INVALID]
    cases.append(("bad-priority-class", {"priorityClassName": "Not_A_Name"}, "the apiserver refused the runner Job",
                  "InvalidJob"))  # fmt: skip
    for name, execution, _, _ in cases:
        control_plane.kubectl("apply", "-f", "-", stdin=document(name, execution=execution))
    time.sleep(1)
    long_name = "long-" + "n" * 59
    control_plane.kubectl("apply", "-f", "-", stdin=document("after-the-bad-ones"))
    control_plane.kubectl("apply", "-f", "-", stdin=document(long_name))
    for name, _, message, reason in cases:
        status = phase_of(control_plane, name, {"Failed", "Succeeded", "Running"}, timeout=120)
        assert (status["phase"], status["reason"]) == ("Failed", reason), (name, status)
        assert message in status["message"], (name, status["message"])
        assert get(control_plane, "jobs", "-l", f"edgecompress.io/compressionjob={name}")["items"] == []
    for name in ("after-the-bad-ones", long_name):
        assert phase_of(control_plane, name, {"Failed", "Succeeded"})["phase"] == "Succeeded", name
    [job] = get(control_plane, "jobs", "-l", "edgecompress.io/compressionjob=after-the-bad-ones")["items"]
    [runner] = job["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in runner["resources"]["limits"], "PTQ alone runs on a CPU pod"
    control_plane.kubectl("delete", "compressionjob", long_name, "after-the-bad-ones", *(case[0] for case in cases))


def test_jobs_deleted_at_once_after_finishing_run_exactly_once_and_keep_their_outcome_across_an_operator_kill(
    control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any, demo_bucket: Any, tmp_path: Path
) -> None:
    """ttlSecondsAfterFinished 0: each runner Job is deleted, but only once its outcome is in the status.

    The runner is the fake one (a summary after 0.2 s): what is tested is the operator, across a kill -9.
    """
    names = [f"once-{index}" for index in range(10)]
    # Two rounds of 5: some Jobs finish while no operator runs.
    killed = fake_runner_operator(control_plane, operator_process, tmp_path, max_concurrent_jobs=5)
    try:
        killed.start()
        for name in names:
            control_plane.kubectl("apply", "-f", "-", stdin=document(name, execution={"ttlSecondsAfterFinished": 0}))

        def some_finished() -> bool:
            items = get(control_plane, "compressionjobs")["items"]
            return any(
                (item.get("status") or {}).get("phase") in ("Succeeded", "Failed")
                for item in items
                if item["metadata"]["name"] in names
            )

        wait_until(some_finished, "a first CompressionJob to finish", timeout=300)
        assert killed.process is not None
        killed.process.kill()
        killed.process.wait(timeout=30)
        time.sleep(5)  # Jobs finish while no operator watches
        killed.start()
        statuses = {name: phase_of(control_plane, name, {"Succeeded", "Failed"}, timeout=600) for name in names}
        runs = [labels["edgecompress.io/compressionjob"] for labels in node_agent.launched
                if labels.get("edgecompress.io/compressionjob") in names]  # fmt: skip
        assert sorted(runs) == sorted(names), "every CompressionJob ran exactly once"
        for name, status in statuses.items():
            assert status["phase"] == "Succeeded", (name, status)
            assert status["result"]["artifacts"]["tflite"]["sha256"], "the runner's result was read before the delete"
        selector = f"edgecompress.io/compressionjob in ({','.join(names)})"
        wait_until(
            lambda: not get(control_plane, "jobs", "-l", selector)["items"],
            "the finished runner Jobs to be deleted",
            timeout=60,
        )
        control_plane.kubectl("delete", "compressionjob", *names)
    finally:
        killed.stop()
        operator_process.start()


def test_a_runner_that_cannot_start_shows_why_and_gives_up_its_slot(
    control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any, demo_bucket: Any
) -> None:
    from tests.e2e.conftest import START_TIMEOUT_SECONDS

    cases = {
        "no-priority-class": ({"execution": {"priorityClassName": "does-not-exist"}}, "FailedCreate",
                              "no PriorityClass with name does-not-exist was found"),
        "no-secret": ({"credentials": {"secretName": "absent"}}, "CreateContainerConfigError", "absent"),
    }  # fmt: skip
    for name, (changes, _, _) in cases.items():
        control_plane.kubectl("apply", "-f", "-", stdin=document(name, **changes))
    for name, (_, reason, text) in cases.items():
        status = wait_until(
            lambda name=name, reason=reason: (
                (s := get(control_plane, "compressionjob", name).get("status") or {}).get("reason") == reason and s
            ),
            f"{name} to show {reason}",
            timeout=60,
        )
        assert status["phase"] == "Pending" and text in status["message"], status
    for name, (_, reason, _) in cases.items():
        status = phase_of(control_plane, name, {"Failed"}, timeout=START_TIMEOUT_SECONDS + 60)
        assert status["reason"] == reason, status
        [job] = get(control_plane, "jobs", "-l", f"edgecompress.io/compressionjob={name}")["items"]
        assert job["spec"]["suspend"] is True, "a runner that never started holds no slot"
    control_plane.kubectl("delete", "compressionjob", *cases)


LOAD_JOBS = int(os.environ.get("EDGECOMPRESS_LOAD_TEST_JOBS", "100"))
"""CompressionJobs in the load test: 100 keeps CI within its time (about 2.5 min); 300 took 7.5 min here."""


def counter_value(metrics: str, name: str, **labels: str) -> float:
    """The sum of a counter's samples whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def allow_status_writes(control_plane: ControlPlane, allowed: bool) -> None:
    """Grants or withdraws the operator's one right to write CompressionJob status (its other rights stay)."""
    from tests.e2e.conftest import OPERATOR_RULES

    rules_by_scope = yaml.safe_load(OPERATOR_RULES.read_text())
    rules = [
        rule for rule in rules_by_scope["namespaced"] + rules_by_scope["cluster"]
        if allowed or rule["resources"] != ["compressionjobs/status"]
    ]  # fmt: skip
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "edgecompress-operator"},
        "rules": rules,
    }
    control_plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(role))


def test_many_jobs_at_a_limit_of_4_cost_few_status_writes_each_and_are_counted_once_across_a_restart(
    control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any, demo_bucket: Any, tmp_path: Path
) -> None:
    """Every status write bumps the object's resourceVersion: a watch counts them, per CompressionJob.

    Midway, the first operator process loses the right to write status (so its completion counter
    is final: every write it makes from then on is refused, none is in doubt), is scraped and
    stopped; runners finish while no operator runs; a second process takes over. Each completion
    is counted by exactly one of the two, and has exactly one Event.
    """
    from kubernetes import client, config, watch

    from tests.e2e.conftest import API_TIMEOUT_SECONDS

    names = [f"load-{index:03d}" for index in range(LOAD_JOBS)]
    loaded = fake_runner_operator(control_plane, operator_process, tmp_path, max_concurrent_jobs=4)
    writes: dict[str, int] = dict.fromkeys(names, 0)
    api_client = config.new_client_from_config(str(control_plane.kubeconfig))
    stream = watch.Watch()

    def count() -> None:
        api = client.CustomObjectsApi(api_client)
        try:
            for event in stream.stream(api.list_namespaced_custom_object, "edgecompress.io", "v1alpha1", "default",
                                       "compressionjobs", timeout_seconds=900):  # fmt: skip
                name = event["object"]["metadata"]["name"]
                if event["type"] == "MODIFIED" and name in writes:
                    writes[name] += 1
        except Exception:  # the stream is closed under it when the test ends
            return

    def succeeded() -> int:
        items = get(control_plane, "compressionjobs")["items"]
        return sum(
            (item.get("status") or {}).get("phase") == "Succeeded"
            for item in items
            if item["metadata"]["name"] in writes
        )

    def completions() -> float:
        return counter_value(
            loaded.metrics(), "edgecompress_compressionjob_completions_total", result="Succeeded", reason="Succeeded"
        )

    counter = threading.Thread(target=count, daemon=True)
    try:
        loaded.start()
        counter.start()
        control_plane.kubectl("apply", "-f", "-", stdin="---\n".join(document(name) for name in names), timeout=300)
        wait_until(lambda: succeeded() >= len(names) // 3, "a third of the CompressionJobs to succeed", timeout=900)

        errors_before = counter_value(loaded.metrics(), "edgecompress_reconcile_errors_total")
        allow_status_writes(control_plane, False)
        wait_until(
            lambda: counter_value(loaded.metrics(), "edgecompress_reconcile_errors_total") > errors_before,
            "the first operator's status writes to be refused",
            timeout=60,
        )
        time.sleep(2 * API_TIMEOUT_SECONDS)  # a write let through before the change has been answered
        counted_before = completions()
        recorded_before = succeeded()
        assert counted_before == recorded_before, "the first operator counted what it recorded, and only that"
        loaded.stop()
        allow_status_writes(control_plane, True)
        time.sleep(3)  # runners finish while no operator runs
        loaded.start()

        wait_until(lambda: succeeded() == len(names), f"all {len(names)} CompressionJobs to succeed", timeout=900)
        time.sleep(2)
        average = sum(writes.values()) / len(names)
        print(f"status writes per CompressionJob: average {average:.2f}, most {max(writes.values())}")
        assert average <= 5, writes
        counted_after = completions()
        print(f"completions counted: {counted_before:.0f} by the first operator, {counted_after:.0f} by the second")
        assert counted_before + counted_after == len(names)
        assert counted_after > 0
        events = get(control_plane, "events", "--field-selector", "reason=Succeeded")["items"]
        per_job = Counter(
            event["involvedObject"]["name"] for event in events if event["involvedObject"]["name"] in writes
        )
        assert per_job == dict.fromkeys(names, 1), "one Succeeded Event per CompressionJob"
    finally:
        stream.stop()
        allow_status_writes(control_plane, True)
        loaded.stop()
        control_plane.kubectl("delete", "compressionjob", *names, "--wait=false", timeout=300, check=False)
        operator_process.start()
