from __future__ import annotations

import pytest

from edgecompress_contract.report import Comparison, OutputMetrics
from edgecompress_contract.spec import Gates
from edgecompress_runner.evaluate import Metrics
from edgecompress_runner.gates import evaluate_gates


def metrics(
    size: int, accuracy: float | None = None, agreement: float | None = None, p50: float = 1.0, gzip: int | None = None
) -> Metrics:
    return Metrics(
        size_bytes=size,
        gzip_bytes=gzip or size,
        latency_p50_ms=p50,
        latency_p95_ms=p50 * 2,
        peak_memory_bytes=None,
        accuracy=accuracy,
        top1_agreement=agreement,
    )


BASE = metrics(1000, accuracy=0.95, p50=2.0, gzip=900)


@pytest.mark.parametrize(
    ("gates", "result", "expected"),
    [
        (Gates(max_accuracy_drop=0.02), metrics(250, accuracy=0.94), {"maxAccuracyDrop": True}),
        (Gates(max_accuracy_drop=0.02), metrics(250, accuracy=0.92), {"maxAccuracyDrop": False}),
        (Gates(max_accuracy_drop=0.01), metrics(250, accuracy=0.94), {"maxAccuracyDrop": True}),
        (Gates(min_size_reduction=0.75), metrics(250, accuracy=0.95), {"minSizeReduction": True}),
        (Gates(min_size_reduction=0.75), metrics(251, accuracy=0.95), {"minSizeReduction": False}),
        (Gates(min_size_reduction=0.5, size_basis="gzip"), metrics(1000, gzip=400), {"minSizeReduction": True}),
        (Gates(min_size_reduction=0.5, size_basis="gzip"), metrics(400, gzip=600), {"minSizeReduction": False}),
        (Gates(max_latency_ms=1.5), metrics(250, p50=1.5), {"maxLatencyMs": True}),
        (Gates(max_latency_ms=1.5), metrics(250, p50=1.6), {"maxLatencyMs": False}),
        (Gates(), metrics(2000), {}),
        (
            Gates(max_accuracy_drop=0.05, min_size_reduction=0.5, max_latency_ms=10),
            metrics(100, accuracy=0.5),
            {"maxAccuracyDrop": False, "minSizeReduction": True, "maxLatencyMs": True},
        ),
    ],
)
def test_gate_outcomes(gates: Gates, result: Metrics, expected: dict[str, bool]) -> None:
    outcome = {gate.name: gate.passed for gate in evaluate_gates(gates, BASE, result)}
    assert outcome == expected


def test_fidelity_is_used_without_labels() -> None:
    base = metrics(1000)
    [gate] = evaluate_gates(Gates(max_accuracy_drop=0.05), base, metrics(300, agreement=0.9))
    assert not gate.passed and gate.actual == pytest.approx(0.1)
    assert "top-1 disagreement" in gate.reason


def test_accuracy_gate_fails_when_nothing_can_be_measured() -> None:
    [gate] = evaluate_gates(Gates(max_accuracy_drop=0.05), metrics(1000), metrics(300))
    assert not gate.passed and gate.actual is None and "not a classifier" in gate.reason


def test_reasons_name_the_numbers() -> None:
    [gate] = evaluate_gates(Gates(min_size_reduction=0.8), BASE, metrics(300, accuracy=0.95))
    assert gate.reason == "bytes size reduced by 70.0%, short of the required 80.0%"


def with_outputs(size: int, *outputs: OutputMetrics) -> Metrics:
    return metrics(size).model_copy(update={"outputs": list(outputs), **Metrics.aggregates(list(outputs))})


BASE_OUTPUTS = with_outputs(
    1000,
    OutputMetrics(name="frames", task="regression", dtype="float32"),
    OutputMetrics(name="pitch", task="multiclass", dtype="float32", accuracy=0.9),
    OutputMetrics(name="onset", task="binary", dtype="float32", accuracy=0.8),
)


def result_outputs(pitch: float, onset: float, frames_snr: float) -> Metrics:
    return with_outputs(
        300,
        OutputMetrics(name="frames", task="regression", dtype="float32", snr_db=frames_snr, mean_abs_error=0.1),
        OutputMetrics(name="pitch", task="multiclass", dtype="float32", accuracy=pitch, agreement=0.97, snr_db=30.0),
        OutputMetrics(name="onset", task="binary", dtype="float32", accuracy=onset, agreement=0.91, snr_db=25.0),
    )


def test_several_outputs_are_judged_by_the_worst() -> None:
    result = result_outputs(pitch=0.89, onset=0.75, frames_snr=18.0)
    gates = Gates(max_accuracy_drop=0.03, min_fidelity=0.9, min_snr_db=20)
    verdicts = {gate.name: gate for gate in evaluate_gates(gates, BASE_OUTPUTS, result)}
    drop = verdicts["maxAccuracyDrop"]
    assert not drop.passed and drop.actual == pytest.approx(0.05)
    assert (
        drop.reason == "accuracy of output 'onset' (pitch 1.00%, onset 5.00%) dropped by 5.00%, over the allowed 3.00%"
    )
    fidelity = verdicts["minFidelity"]
    assert fidelity.passed and fidelity.actual == 0.91 and "of output 'onset'" in fidelity.reason
    snr = verdicts["minSnrDb"]
    assert not snr.passed and snr.actual == 18.0
    assert snr.reason == (
        "signal-to-noise ratio (dB) of output 'frames' 18.00 (frames 18.00, pitch 30.00, onset 25.00), "
        "short of the required 20.00"
    )


def test_aggregates_are_the_worst_output() -> None:
    result = result_outputs(pitch=0.89, onset=0.75, frames_snr=18.0)
    assert (result.accuracy, result.top1_agreement, result.snr_db) == (0.75, 0.91, 18.0)
    comparison = Comparison.between(BASE_OUTPUTS, result)
    assert comparison.accuracy_drop == pytest.approx(0.05) and comparison.snr_db == 18.0
    assert [output.name for output in comparison.outputs] == ["frames", "pitch", "onset"]


def test_fidelity_gate_fails_without_a_classifier_output() -> None:
    regression = OutputMetrics(name="value", task="regression", dtype="float32", snr_db=40.0)
    [gate] = evaluate_gates(Gates(min_fidelity=0.5), with_outputs(1000, regression), with_outputs(300, regression))
    assert not gate.passed and gate.actual is None and "no output is a classifier" in gate.reason


def test_a_summary_too_large_drops_the_per_output_comparison_first() -> None:
    from edgecompress_contract.summary import SUMMARY_LIMIT_BYTES, RunSummary

    names = [f"head_{index:03d}_with_a_long_descriptive_name" for index in range(80)]
    outputs = [OutputMetrics(name=name, task="regression", dtype="float32", snr_db=30.0) for name in names]
    comparison = Comparison.between(with_outputs(1000, *outputs), with_outputs(300, *outputs))
    assert len(comparison.outputs) == 80 and len(comparison.model_dump_json()) > SUMMARY_LIMIT_BYTES
    summary = RunSummary(result="Succeeded", exit_code=0, comparison=comparison).fitted()
    assert len(summary.encoded()) <= SUMMARY_LIMIT_BYTES
    assert summary.comparison is not None and summary.comparison.outputs == []
    assert summary.comparison.snr_db == 30.0 and summary.comparison.size_reduction == 0.7
