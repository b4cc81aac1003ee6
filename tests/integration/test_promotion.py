"""Promotion to a stable location: only after every gate passed, idempotent, never silently replacing a model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edgecompress_runner.errors import ExitCode
from tests.conftest import MinioServer, job, run_job

pytestmark = pytest.mark.tf


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def promoting_job(
    model: Path, data: Path, output: Path, stable: Path, mode: str = "dynamic", **promotion: object
) -> dict[str, object]:
    return job(
        model,
        data,
        output,
        [{"type": "ptq", "mode": mode}],
        promotion={"uri": str(stable), **promotion},
        gates={"maxAccuracyDrop": 0.05},
    )


def test_passing_run_is_promoted_with_a_record(digits_model: Path, small_digits_npz: Path, tmp_path: Path) -> None:
    stable = tmp_path / "stable"
    run = run_job(promoting_job(digits_model, small_digits_npz, tmp_path / "run1", stable), tmp_path / "w1")
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    assert sha256(stable / "model.tflite") == sha256(tmp_path / "run1" / "model.tflite")
    record = json.loads((stable / "promotion.json").read_text())
    assert record["model"]["sha256"] == sha256(stable / "model.tflite")
    assert record["source"]["output"] == str(tmp_path / "run1" / "model.tflite")
    assert record["source"]["report"].endswith("run1/report.json")
    report = json.loads((tmp_path / "run1" / "report.json").read_text())
    assert report["promotion"]["promoted"] is True and report["promotion"]["unchanged"] is False
    assert run.summary["promotion"] == {
        "uri": str(stable / "model.tflite"),
        "promoted": True,
        "sha256": record["model"]["sha256"],
    }

    again = run_job(promoting_job(digits_model, small_digits_npz, tmp_path / "run2", stable), tmp_path / "w2")
    assert again.exit_code == ExitCode.SUCCEEDED, again.summary
    assert json.loads((tmp_path / "run2" / "report.json").read_text())["promotion"]["unchanged"] is True
    assert json.loads((stable / "promotion.json").read_text()) == record, "an identical model is not re-promoted"


def test_a_different_model_is_not_promoted_over_the_stable_one(
    digits_model: Path, small_digits_npz: Path, tmp_path: Path
) -> None:
    stable = tmp_path / "stable"
    first = run_job(promoting_job(digits_model, small_digits_npz, tmp_path / "int8", stable), tmp_path / "w1")
    assert first.exit_code == ExitCode.SUCCEEDED
    promoted = sha256(stable / "model.tflite")
    refused = run_job(
        promoting_job(digits_model, small_digits_npz, tmp_path / "fp16", stable, mode="float16"), tmp_path / "w2"
    )
    assert refused.exit_code == ExitCode.INVALID_INPUT
    assert refused.summary["reason"] == "PromotionConflict"
    assert "promotion.overwrite: true" in refused.summary["message"]
    assert sha256(stable / "model.tflite") == promoted
    assert (tmp_path / "fp16" / "report.json").exists(), "the run's own output is complete"
    assert refused.summary["gatesPassed"] is True and refused.summary["promotion"]["promoted"] is False

    replaced = run_job(
        promoting_job(digits_model, small_digits_npz, tmp_path / "fp16b", stable, mode="float16", overwrite=True),
        tmp_path / "w3",
    )
    assert replaced.exit_code == ExitCode.SUCCEEDED, replaced.summary
    assert sha256(stable / "model.tflite") == sha256(tmp_path / "fp16b" / "model.tflite") != promoted
    report = json.loads((tmp_path / "fp16b" / "report.json").read_text())
    assert report["promotion"]["replaced"] == promoted


def test_failed_gates_never_promote(digits_model: Path, small_digits_npz: Path, tmp_path: Path) -> None:
    document = promoting_job(digits_model, small_digits_npz, tmp_path / "out", tmp_path / "stable")
    document["gates"] = {"minSizeReduction": 0.95}
    run = run_job(document, tmp_path / "w")
    assert run.exit_code == ExitCode.GATES_FAILED
    assert not (tmp_path / "stable").exists()
    assert "promotion" not in run.summary


@pytest.mark.s3
def test_promoted_s3_object_carries_its_source_and_sha256(
    s3_env: MinioServer, digits_model: Path, small_digits_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = s3_env.client()
    s3.create_bucket(Bucket="promotion")
    monkeypatch.setenv("EDGECOMPRESS_SOURCE_JOB", json.dumps({"namespace": "ml", "name": "digits", "uid": "u-1"}))
    document = promoting_job(digits_model, small_digits_npz, tmp_path / "out", Path("x"))
    document["promotion"] = {"uri": "s3://promotion/digits/stable/"}
    run = run_job(document, tmp_path / "w")
    assert run.exit_code == ExitCode.SUCCEEDED, run.summary
    head = s3.head_object(Bucket="promotion", Key="digits/stable/model.tflite")
    assert head["Metadata"]["edgecompress-sha256"] == sha256(tmp_path / "out" / "model.tflite")
    assert head["Metadata"]["edgecompress-source-job"] == "ml/digits"
    record = json.loads(s3.get_object(Bucket="promotion", Key="digits/stable/promotion.json")["Body"].read())
    assert record["source"]["job"] == {"namespace": "ml", "name": "digits", "uid": "u-1"}
