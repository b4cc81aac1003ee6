"""Scenario 1: kubectl apply a CompressionJob -> Succeeded, artifacts in MinIO, status and Events."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import MinioServer
from tests.k8s.controlplane import ControlPlane
from tests.k8s.node_agent import NodeAgent

pytestmark = [pytest.mark.k8s, pytest.mark.s3, pytest.mark.tf]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "compressionjob.yaml"


def get(plane: ControlPlane, *args: str) -> dict[str, Any]:
    return json.loads(plane.kubectl("get", *args, "-o", "json").stdout)  # type: ignore[no-any-return]


def wait_for_phase(plane: ControlPlane, name: str, phases: set[str], timeout: float = 420) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get(plane, "compressionjob", name)
        if (job.get("status") or {}).get("phase") in phases:
            return job
        time.sleep(1)
    raise AssertionError(f"{name} never reached {phases}: {job.get('status')}")


@pytest.fixture(scope="module")
def demo_bucket(control_plane: ControlPlane, minio: MinioServer, digits_model: Path, digits_npz: Path) -> Any:
    """The example's bucket with its model and data, and the Secret the example names."""
    s3 = minio.client()
    s3.create_bucket(Bucket="edgecompress-demo")
    s3.upload_file(str(digits_model), "edgecompress-demo", "models/digits.keras")
    s3.upload_file(str(digits_npz), "edgecompress-demo", "datasets/digits.npz")
    control_plane.kubectl(
        "create", "secret", "generic", "edgecompress-s3",
        f"--from-literal=AWS_ACCESS_KEY_ID={minio.access_key}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={minio.secret_key}",
        f"--from-literal=AWS_ENDPOINT_URL={minio.endpoint}", "--from-literal=AWS_DEFAULT_REGION=us-east-1",
    )
    return s3


def example(name: str, **spec_changes: Any) -> str:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["metadata"]["name"] = name
    document["spec"]["output"]["uri"] = f"s3://edgecompress-demo/compressed/{name}/"
    document["spec"].update(spec_changes)
    return yaml.safe_dump(document)


def test_example_job_succeeds_end_to_end(control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any,
                                         demo_bucket: Any) -> None:
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
    keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket="edgecompress-demo", Prefix="compressed/")["Contents"])
    assert keys == ["compressed/digits/model.tflite", "compressed/digits/report.json"]
    report = json.loads(s3.get_object(Bucket="edgecompress-demo", Key="compressed/digits/report.json")["Body"].read())
    assert report["outputs"]["tflite"]["sha256"] == result["artifacts"]["tflite"]["sha256"]
    jobs = get(control_plane, "jobs", "-l", "edgecompress.io/compressionjob=digits")["items"]
    assert len(jobs) == 1
    events = get(control_plane, "events", "--field-selector", "involvedObject.name=digits")["items"]
    assert {"Succeeded"} <= {event["reason"] for event in events}


def test_missing_model_fails_with_the_runners_reason(control_plane: ControlPlane, node_agent: NodeAgent,
                                                     operator_process: Any, demo_bucket: Any) -> None:
    control_plane.kubectl("apply", "-f", "-", stdin=example(
        "missing-model", model={"uri": "s3://edgecompress-demo/models/absent.keras", "format": "keras"}))
    status = wait_for_phase(control_plane, "missing-model", {"Succeeded", "Failed"})["status"]
    assert status["phase"] == "Failed" and status["reason"] == "InvalidInput"
    assert status["message"] == "s3://edgecompress-demo/models/absent.keras: object not found"
    assert "result" not in status
    pods = get(control_plane, "pods", "-l", "edgecompress.io/compressionjob=missing-model")["items"]
    assert len(pods) == 1, "a bad input must not be retried"


def test_failed_gates_keep_the_results(control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any,
                                       demo_bucket: Any) -> None:
    control_plane.kubectl("apply", "-f", "-", stdin=example(
        "strict-gates", steps=[{"type": "ptq", "mode": "float16"}], gates={"minSizeReduction": 0.9}))
    status = wait_for_phase(control_plane, "strict-gates", {"Succeeded", "Failed"})["status"]
    assert status["phase"] == "Failed" and status["reason"] == "GatesFailed"
    assert "short of the required 90.0%" in status["message"]
    result = status["result"]
    assert result["gatesPassed"] is False and result["gates"][0]["name"] == "minSizeReduction"
    assert result["output"]["sizeBytes"] < result["baseline"]["sizeBytes"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "GatesFailed"


def test_deleting_a_job_removes_its_runner_but_never_artifacts(control_plane: ControlPlane, node_agent: NodeAgent,
                                                               operator_process: Any, demo_bucket: Any) -> None:
    s3 = demo_bucket
    control_plane.kubectl("apply", "-f", "-", stdin=example(
        "long-running", steps=[{"type": "prune", "fineTune": {"epochs": 200}}, {"type": "ptq", "mode": "int8"}]))
    wait_for_phase(control_plane, "long-running", {"Running"}, timeout=120)
    before = {item["Key"] for item in s3.list_objects_v2(Bucket="edgecompress-demo")["Contents"]}
    control_plane.kubectl("delete", "compressionjob", "long-running", "--wait=true")
    if "compressed/digits/report.json" in before:
        control_plane.kubectl("delete", "compressionjob", "digits", "--ignore-not-found")

    def runner_gone() -> bool:
        selector = "edgecompress.io/compressionjob in (long-running, digits)"
        jobs = get(control_plane, "jobs", "-l", selector)["items"]
        pods = get(control_plane, "pods", "-l", selector)["items"]
        return not jobs and not pods

    deadline = time.monotonic() + 90
    while not runner_gone():
        assert time.monotonic() < deadline, "the runner Job or pod outlived its CompressionJob"
        time.sleep(1)
    after = {item["Key"] for item in s3.list_objects_v2(Bucket="edgecompress-demo")["Contents"]}
    assert before <= after
    assert node_agent.live_processes() == 0


def test_operator_restart_while_running_makes_no_second_job(control_plane: ControlPlane, node_agent: NodeAgent,
                                                           operator_process: Any, demo_bucket: Any) -> None:
    control_plane.kubectl("apply", "-f", "-", stdin=example(
        "restarted", steps=[{"type": "prune", "fineTune": {"epochs": 3}}, {"type": "ptq", "mode": "int8"}]))
    wait_for_phase(control_plane, "restarted", {"Running"}, timeout=120)
    operator_process.restart()
    status = wait_for_phase(control_plane, "restarted", {"Succeeded", "Failed"})["status"]
    assert status["phase"] == "Succeeded", status
    jobs = get(control_plane, "jobs", "-l", "edgecompress.io/compressionjob=restarted")["items"]
    assert len(jobs) == 1
    assert operator_process.starts >= 2
