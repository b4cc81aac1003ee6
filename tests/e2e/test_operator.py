"""Scenario 1: kubectl apply a CompressionJob -> Succeeded, artifacts in MinIO, status and Events."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

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


def test_example_job_succeeds_end_to_end(control_plane: ControlPlane, node_agent: NodeAgent, operator_process: Any,
                                         minio: MinioServer, digits_model: Path, small_digits_npz: Path) -> None:
    s3 = minio.client()
    s3.create_bucket(Bucket="edgecompress-demo")
    s3.upload_file(str(digits_model), "edgecompress-demo", "models/digits.keras")
    s3.upload_file(str(small_digits_npz), "edgecompress-demo", "datasets/digits.npz")
    control_plane.kubectl(
        "create", "secret", "generic", "edgecompress-s3",
        f"--from-literal=AWS_ACCESS_KEY_ID={minio.access_key}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={minio.secret_key}",
        f"--from-literal=AWS_ENDPOINT_URL={minio.endpoint}", "--from-literal=AWS_DEFAULT_REGION=us-east-1",
    )
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
