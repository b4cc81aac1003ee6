"""The auto step's training trials on a real control plane: one Indexed Job, its parallelism, then the search."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import MAX_CONCURRENT_JOBS
from tests.e2e.test_operator import event_reasons, get
from tests.k8s.controlplane import ControlPlane
from tests.k8s.node_agent import NodeAgent
from tests.waiting import wait_until

pytestmark = [pytest.mark.k8s, pytest.mark.s3, pytest.mark.tf]

BUCKET = "edgecompress-demo"
PRESETS = ["qat", "prune30Qat", "prune50Qat", "cluster16Qat"]


def auto_with_trials(name: str, *, presets: list[str], epochs: int, parallelism: int) -> str:
    document = {
        "apiVersion": "edgecompress.io/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": f"s3://{BUCKET}/models/digits.keras", "format": "keras"},
            "dataset": {"uri": f"s3://{BUCKET}/datasets/digits.npz"},
            "steps": [
                {
                    "type": "auto",
                    "maxTrials": 6,
                    "sensitivitySamples": 8,
                    "representativeSamples": 50,
                    "parallelism": parallelism,
                    "trials": [{"preset": preset, "fineTune": {"epochs": epochs}} for preset in presets],
                }
            ],
            "evaluation": {"samples": 120, "latency": {"runs": 10, "warmup": 1}},
            "gates": {"minFidelity": 0.9},
            "output": {"uri": f"s3://{BUCKET}/compressed/{name}/"},
            "credentials": {"secretName": "edgecompress-s3"},
        },
    }
    return yaml.safe_dump(document)


def trial_pods(plane: ControlPlane, name: str) -> list[dict[str, Any]]:
    selector = f"edgecompress.io/compressionjob={name},app.kubernetes.io/component=trials"
    return get(plane, "pods", "-l", selector)["items"]  # type: ignore[no-any-return]


def running(pods: list[dict[str, Any]]) -> int:
    return sum(1 for pod in pods if (pod.get("status") or {}).get("phase") == "Running")


def test_four_trials_two_at_a_time_then_the_search_picks_from_them(
    control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any, demo_bucket: Any
) -> None:
    s3 = demo_bucket
    name = "auto-trials"
    assert MAX_CONCURRENT_JOBS >= 2
    control_plane.kubectl("apply", "-f", "-", stdin=auto_with_trials(name, presets=PRESETS, epochs=1, parallelism=2))
    most_at_once = 0

    def finished() -> dict[str, Any] | None:
        nonlocal most_at_once
        most_at_once = max(most_at_once, running(trial_pods(control_plane, name)))
        job = get(control_plane, "compressionjob", name)
        return job if (job.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

    try:
        status = wait_until(finished, f"{name} to finish", timeout=600, interval=0.3)["status"]
    except AssertionError as error:
        raise AssertionError(f"{error}; status: {get(control_plane, 'compressionjob', name).get('status')}") from None
    assert status["phase"] == "Succeeded", status
    assert most_at_once == 2, f"parallelism 2: at most (and at some point) 2 trial pods ran at once, saw {most_at_once}"
    jobs = get(control_plane, "jobs", "-l", f"edgecompress.io/compressionjob={name}")["items"]
    indexed = [job for job in jobs if job["spec"].get("completionMode") == "Indexed"]
    assert len(indexed) == 1 and len(jobs) == 2, "one Indexed Job for the trials, then one runner Job"
    assert indexed[0]["spec"]["completions"] == 4 and indexed[0]["status"]["succeeded"] == 4
    assert status["trialsJob"] == indexed[0]["metadata"]["name"] and status["job"] != status["trialsJob"]
    assert len({pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for pod in
                trial_pods(control_plane, name)}) == 4  # fmt: skip

    prefix = f"compressed/{name}/"
    trained = {}
    for index in range(len(PRESETS)):
        head = s3.head_object(Bucket=BUCKET, Key=f"{prefix}trials/{index}/model.tflite")
        trained[index] = head["ContentLength"]
    report = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{prefix}report.json")["Body"].read())
    [auto] = report["steps"]
    candidates = [candidate for candidate in auto["candidates"] if candidate["kind"] == "trained"]
    assert sorted(candidate["sizeBytes"] for candidate in candidates) == sorted(trained.values())
    winner = s3.get_object(Bucket=BUCKET, Key=f"{prefix}model.tflite")["Body"].read()
    assert status["result"]["output"]["sizeBytes"] == len(winner)
    assert {"JobCreated", "TrialsRunning", "Succeeded"} <= event_reasons(control_plane, name)


def test_deleting_a_job_during_its_trials_removes_the_trial_pods(
    control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any, demo_bucket: Any
) -> None:
    name = "auto-trials-deleted"
    spec = auto_with_trials(name, presets=["qat", "prune50Qat"], epochs=500, parallelism=2)
    control_plane.kubectl("apply", "-f", "-", stdin=spec)
    wait_until(lambda: running(trial_pods(control_plane, name)) == 2, "both trial pods to run", timeout=120)
    status = get(control_plane, "compressionjob", name)["status"]
    assert status["phase"] == "Running" and status["progress"]["trials"] == 2
    control_plane.kubectl("delete", "compressionjob", name, "--wait=true")

    def gone() -> bool:
        selector = f"edgecompress.io/compressionjob={name}"
        return not get(control_plane, "jobs", "-l", selector)["items"] and not trial_pods(control_plane, name)

    wait_until(gone, "the trials Job and its pods to go with their CompressionJob", timeout=90)
    wait_until(lambda: node_agent.live_processes() == 0, "the trial processes to stop", timeout=30)
