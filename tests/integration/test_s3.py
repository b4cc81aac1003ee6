"""Against a real MinIO server: artifacts land in S3, inputs and outputs are hashed, errors are clear."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgecompress_runner.errors import ExitCode
from tests.conftest import MinioServer, job, run_job

pytestmark = [pytest.mark.s3, pytest.mark.tf]


@pytest.fixture
def bucket(s3_env: MinioServer, request: pytest.FixtureRequest) -> str:
    name = "ec-" + hashlib.sha1(request.node.name.encode()).hexdigest()[:12]
    s3_env.client().create_bucket(Bucket=name)
    return name


def upload(server: MinioServer, path: Path, bucket: str, key: str) -> str:
    server.client().upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


def keys(server: MinioServer, bucket: str, prefix: str = "") -> list[str]:
    listed = server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def s3_job(model_uri: str, dataset_uri: str, output_uri: str, steps: list) -> dict:
    document = job(Path("x"), None, Path("x"), steps)
    document["model"] = {"uri": model_uri, "format": "keras"}
    document["dataset"] = {"uri": dataset_uri}
    document["output"] = {"uri": output_uri}
    return document


def test_cli_run_writes_artifacts_to_s3(
    s3_env: MinioServer, bucket: str, digits_model: Path, digits_npz: Path, tmp_path: Path
) -> None:
    model_uri = upload(s3_env, digits_model, bucket, "models/digits.keras")
    data_uri = upload(s3_env, digits_npz, bucket, "data/digits.npz")
    steps = [
        {"type": "prune", "targetSparsity": 0.6, "fineTune": {"epochs": 1}},
        {"type": "qat", "fineTune": {"epochs": 1}},
        {"type": "ptq", "mode": "int8"},
    ]
    document = {
        "apiVersion": "edgecompress.io/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": "digits"},
        "spec": {
            **s3_job(model_uri, data_uri, f"s3://{bucket}/out/digits/", steps),
            "gates": {"maxAccuracyDrop": 0.05, "minSizeReduction": 0.6},
        },
    }
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(document))
    summary_file = tmp_path / "termination-log"
    finished = subprocess.run(
        [sys.executable, "-m", "edgecompress_runner.cli", "run", str(job_file), "--summary-file", str(summary_file)],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert keys(s3_env, bucket, "out/") == [
        "out/digits/model.tflite",
        "out/digits/report.html",
        "out/digits/report.json",
    ]
    client = s3_env.client()
    tflite = client.get_object(Bucket=bucket, Key="out/digits/model.tflite")
    page = client.get_object(Bucket=bucket, Key="out/digits/report.html")
    report_object = client.get_object(Bucket=bucket, Key="out/digits/report.json")
    tflite_bytes, report_bytes = tflite["Body"].read(), report_object["Body"].read()
    report = json.loads(report_bytes)
    summary = json.loads(summary_file.read_text())
    assert hashlib.sha256(tflite_bytes).hexdigest() == report["outputs"]["tflite"]["sha256"]
    assert hashlib.sha256(page["Body"].read()).hexdigest() == report["outputs"]["html"]["sha256"]
    assert page["ContentType"] == "text/html; charset=utf-8" and report_object["ContentType"] == "application/json"
    assert summary["artifacts"]["html"]["uri"] == f"s3://{bucket}/out/digits/report.html"
    assert tflite["LastModified"] <= page["LastModified"] <= report_object["LastModified"]
    assert summary["artifacts"]["tflite"]["sha256"] == report["outputs"]["tflite"]["sha256"]
    assert summary["artifacts"]["report"]["sha256"] == hashlib.sha256(report_bytes).hexdigest()
    assert report["inputs"]["model"]["sha256"] == hashlib.sha256(digits_model.read_bytes()).hexdigest()
    assert report["inputs"]["dataset"]["sha256"] == hashlib.sha256(digits_npz.read_bytes()).hexdigest()
    assert report_object["LastModified"] >= tflite["LastModified"]
    assert report["gatesPassed"] and summary["result"] == "Succeeded"
    assert report["steps"][1]["sparsity"]["overall"] == pytest.approx(0.6, abs=0.02)
    epochs = [json.loads(line) for line in finished.stderr.splitlines() if line.startswith("{") and '"epoch"' in line]
    assert [(event["phase"], event["epoch"]) for event in epochs if event.get("event") == "epoch"] == [
        ("steps[0] prune", 1),
        ("steps[1] qat", 1),
    ]


def test_missing_object(s3_env: MinioServer, bucket: str, small_digits_npz: Path, tmp_path: Path) -> None:
    data_uri = upload(s3_env, small_digits_npz, bucket, "data/digits.npz")
    document = s3_job(
        f"s3://{bucket}/models/absent.keras", data_uri, f"s3://{bucket}/out/", [{"type": "ptq", "mode": "int8"}]
    )
    run = run_job(document, tmp_path)
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert run.summary["message"] == f"s3://{bucket}/models/absent.keras: object not found"
    assert keys(s3_env, bucket, "out/") == []


def test_missing_bucket(s3_env: MinioServer, tmp_path: Path) -> None:
    document = s3_job(
        "s3://no-such-bucket/m.keras",
        "s3://no-such-bucket/d.npz",
        "s3://no-such-bucket/out/",
        [{"type": "ptq", "mode": "dynamic"}],
    )
    run = run_job(document, tmp_path)
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert run.summary["message"] == "s3://no-such-bucket/out/report.json: bucket 'no-such-bucket' does not exist"


def test_wrong_credentials(
    s3_env: MinioServer,
    bucket: str,
    digits_model: Path,
    small_digits_npz: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model_uri = upload(s3_env, digits_model, bucket, "models/digits.keras")
    data_uri = upload(s3_env, small_digits_npz, bucket, "data/digits.npz")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    run = run_job(s3_job(model_uri, data_uri, f"s3://{bucket}/out/", [{"type": "ptq", "mode": "int8"}]), tmp_path)
    assert run.exit_code == ExitCode.INVALID_INPUT
    assert re.search(
        r"out/report.json: access denied \((403|SignatureDoesNotMatch)\): check the S3 credentials",
        run.summary["message"],
    )
    assert keys(s3_env, bucket, "out/") == []


def test_unreachable_endpoint_is_an_infrastructure_error(
    s3_env: MinioServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import _free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    run = run_job(
        s3_job("s3://bucket/m.keras", "s3://bucket/d.npz", "s3://bucket/out/", [{"type": "ptq", "mode": "dynamic"}]),
        tmp_path,
    )
    assert run.exit_code == ExitCode.INFRASTRUCTURE
    assert run.summary["reason"] == "InfrastructureError" and "S3 request failed" in run.summary["message"]


def test_overwrite_replaces_an_earlier_result(
    s3_env: MinioServer, bucket: str, digits_model: Path, small_digits_npz: Path, tmp_path: Path
) -> None:
    model_uri = upload(s3_env, digits_model, bucket, "models/digits.keras")
    data_uri = upload(s3_env, small_digits_npz, bucket, "data/digits.npz")
    document = s3_job(model_uri, data_uri, f"s3://{bucket}/out/", [{"type": "ptq", "mode": "float16"}])
    assert run_job(document, tmp_path / "first").exit_code == ExitCode.SUCCEEDED
    second = run_job(document, tmp_path / "second")
    assert second.exit_code == ExitCode.INVALID_INPUT and "already holds a finished run" in second.summary["message"]
    document["steps"] = [{"type": "ptq", "mode": "int8"}]
    document["output"]["overwrite"] = True
    third = run_job(document, tmp_path / "third")
    assert third.exit_code == ExitCode.SUCCEEDED
    report = json.loads(s3_env.client().get_object(Bucket=bucket, Key="out/report.json")["Body"].read())
    assert report["conversion"]["mode"] == "int8"


def test_a_conditional_create_never_replaces_an_object(s3_env: MinioServer, bucket: str, tmp_path: Path) -> None:
    from edgecompress_runner.storage import S3Storage

    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"first model")
    second.write_bytes(b"second model")
    storage = S3Storage()
    uri = f"s3://{bucket}/stable/model.tflite"
    assert storage.create(first, uri, metadata={"edgecompress-sha256": "1"}) is True
    assert storage.create(second, uri) is False
    stored = s3_env.client().get_object(Bucket=bucket, Key="stable/model.tflite")
    assert stored["Body"].read() == b"first model" and stored["Metadata"] == {"edgecompress-sha256": "1"}


def test_downloads_beyond_the_scratch_limit_are_refused_before_any_download(
    s3_env: MinioServer, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The object sizes come from S3 (HEAD); the limit is what the operator passes for the pod's emptyDir."""
    (tmp_path / "model.keras").write_bytes(b"m" * 300_000)
    (tmp_path / "data.npz").write_bytes(b"d" * 900_000)
    model_uri = upload(s3_env, tmp_path / "model.keras", bucket, "models/model.keras")
    data_uri = upload(s3_env, tmp_path / "data.npz", bucket, "data/data.npz")
    monkeypatch.setenv("EDGECOMPRESS_SCRATCH_LIMIT_BYTES", str(1_000_000))
    run = run_job(s3_job(model_uri, data_uri, f"s3://{bucket}/out/", [{"type": "ptq", "mode": "dynamic"}]), tmp_path)
    assert run.exit_code == ExitCode.INVALID_INPUT, run.summary
    assert run.summary["message"] == (
        "spec.execution.scratchSizeLimit: the downloads (spec.model.uri 293.0 KiB, spec.dataset.uri 878.9 KiB) "
        "need 1.1 MiB but the scratch volume (976.6 KiB) has 976.6 KiB left; raise spec.execution.scratchSizeLimit "
        "(the operator's default is its defaultScratchSizeLimit setting)"
    )
    assert list((tmp_path / "work").iterdir()) == [], "nothing was downloaded"
    assert keys(s3_env, bucket, "out/") == []
