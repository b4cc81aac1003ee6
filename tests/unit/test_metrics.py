"""Operator metrics: exposition as Prometheus parses it, and series removed with their CompressionJob."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgecompress_contract.status import CompressionJobStatus
from edgecompress_operator.metrics import OperatorMetrics

RESULT = {
    "phase": "Succeeded",
    "reason": "Succeeded",
    "startTime": "2026-11-22T10:00:00Z",
    "completionTime": "2026-11-22T10:01:30Z",
    "result": {
        "result": "Succeeded",
        "exitCode": 0,
        "gatesPassed": True,
        "baseline": {"sizeBytes": 290104, "gzipBytes": 260000, "latencyP50Ms": 0.03, "latencyP95Ms": 0.06},
        "output": {"sizeBytes": 78088, "gzipBytes": 60000, "latencyP50Ms": 0.02, "latencyP95Ms": 0.05},
        "comparison": {
            "sizeReduction": 0.7308,
            "compressionRatio": 3.715,
            "gzipSizeReduction": 0.7692,
            "latencySpeedup": 1.5,
            "accuracyDrop": -0.003,
        },
    },
}


def status(document: dict[str, object]) -> CompressionJobStatus:
    return CompressionJobStatus.model_validate(document)


def samples(metrics: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_jobs_by_phase_and_last_result() -> None:
    metrics = OperatorMetrics()
    metrics.jobs.observe("ml", "digits", status(RESULT), "2026-11-22T09:59:00Z")
    metrics.jobs.observe("ml", "queued", status({"phase": "Pending", "reason": "Queued"}), "2026-11-22T10:00:00Z")
    metrics.jobs.observe("ml", "new", status({}))
    found = samples(metrics)
    assert (
        found[
            (
                "edgecompress_compressionjob_status_phase",
                (("name", "queued"), ("namespace", "ml"), ("phase", "Pending")),
            )
        ]
        == 1
    )
    assert (
        found[("edgecompress_compressionjob_created_timestamp_seconds", (("name", "queued"), ("namespace", "ml")))]
        == 1795341600
    )
    assert (
        found[("edgecompress_compressionjob_start_timestamp_seconds", (("name", "digits"), ("namespace", "ml")))]
        == 1795341600
    )
    assert found[("edgecompress_compressionjobs", (("phase", "Pending"),))] == 2
    assert found[("edgecompress_compressionjobs", (("phase", "Succeeded"),))] == 1
    assert found[("edgecompress_compressionjobs", (("phase", "Running"),))] == 0
    job = (("name", "digits"), ("namespace", "ml"))
    assert found[("edgecompress_compressionjob_output_size_bytes", job)] == 78088
    assert found[("edgecompress_compressionjob_compression_ratio", job)] == 3.715
    assert found[("edgecompress_compressionjob_accuracy_drop_ratio", job)] == -0.003
    assert found[("edgecompress_compressionjob_latency_seconds", (*job, ("percentile", "95")))] == 0.05 / 1000
    assert found[("edgecompress_compressionjob_gates_passed", job)] == 1


def test_deleted_job_loses_its_series() -> None:
    metrics = OperatorMetrics()
    metrics.jobs.observe("ml", "digits", status(RESULT))
    metrics.jobs.forget("ml", "digits")
    assert not [key for key in samples(metrics) if ("name", "digits") in key[1]]


def test_expected_outcomes_exist_at_zero_before_any_completion() -> None:
    found = samples(OperatorMetrics())
    assert (
        found[("edgecompress_compressionjob_completions_total", (("reason", "GatesFailed"), ("result", "Failed")))] == 0
    )
    assert found[("edgecompress_compressionjob_duration_seconds_count", (("result", "Succeeded"),))] == 0


def test_completion_counts_and_duration() -> None:
    metrics = OperatorMetrics()
    metrics.record_completion(status(RESULT))
    metrics.record_completion(status({"phase": "Failed", "reason": "GatesFailed"}))
    found = samples(metrics)
    assert (
        found[("edgecompress_compressionjob_completions_total", (("reason", "Succeeded"), ("result", "Succeeded")))]
        == 1
    )
    assert (
        found[("edgecompress_compressionjob_completions_total", (("reason", "GatesFailed"), ("result", "Failed")))] == 1
    )
    assert found[("edgecompress_compressionjob_duration_seconds_sum", (("result", "Succeeded"),))] == 90
    assert (
        found[("edgecompress_compressionjob_duration_seconds_bucket", (("le", "60.0"), ("result", "Succeeded")))] == 0
    )
    assert (
        found[("edgecompress_compressionjob_duration_seconds_bucket", (("le", "120.0"), ("result", "Succeeded")))] == 1
    )
