"""The README's first command: the embedded example, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.tf


def test_example_command_runs_end_to_end(tmp_path: Path) -> None:
    finished = subprocess.run(
        ["edgecompress-runner", "example", "--output", str(tmp_path), "--summary-file", str(tmp_path / "summary.json")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = tmp_path / "result"
    assert sorted(p.name for p in result.iterdir()) == ["model.tflite", "report.html", "report.json"]
    report = json.loads((result / "report.json").read_text())
    assert [step["type"] for step in report["steps"]] == ["prune", "qat", "ptq"]
    assert report["steps"][0]["sparsity"]["overall"] == pytest.approx(0.8, abs=0.02)
    assert report["gatesPassed"] and report["comparison"]["compressionRatio"] >= 3.5
    assert "result: PASSED" in finished.stdout and "baseline (float)" in finished.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["result"] == "Succeeded" and summary["artifacts"]["tflite"]["uri"].endswith("model.tflite")


def test_validate_command_reports_the_field(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("model: {uri: /m.keras, format: keras}\nsteps: [{type: ptq, mode: int8}]\noutput: {uri: /o}\n")
    finished = subprocess.run(
        ["edgecompress-runner", "validate", str(job)], capture_output=True, text=True, timeout=120
    )
    assert finished.returncode == 20
    assert "spec.steps[0].mode: ptq int8 and int16x8 need spec.dataset" in finished.stderr


def test_run_reads_the_job_from_the_environment_like_a_pod(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "EDGECOMPRESS_JOB": '{"model": {"uri": "/m.keras", "format": "keras"}, "steps": []}'}
    summary = tmp_path / "termination-log"
    finished = subprocess.run(
        ["edgecompress-runner", "run", "--summary-file", str(summary)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert finished.returncode == 20
    result = json.loads(summary.read_text())
    assert result["reason"] == "InvalidSpec" and "spec.steps: List should have at least 1 item" in result["message"]
    assert "spec.output: Field required" in result["message"]
